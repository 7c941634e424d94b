"""The Dropbox-style content hash the OpenScan Cloud checks an upload against.

The hash is the SHA-256 of the concatenation of the SHA-256 digests of each 4 MiB block of the
data (the last block may be shorter; data of an exact multiple of 4 MiB has no trailing empty
block, and empty data has no block at all). It can be computed while streaming, in any chunking,
without holding a block in memory.
"""

from __future__ import annotations

import hashlib

BLOCK_SIZE = 4 * 1024 * 1024


class ContentHasher:
    """Dropbox content hash: SHA-256 of the concatenated SHA-256 digests of each 4 MiB block.

    Feed the data with :meth:`update` in chunks of any size; :meth:`hexdigest` may be called at any
    time (it does not end the hashing) and gives the hash of everything fed so far.
    """

    def __init__(self) -> None:
        self._overall = hashlib.sha256()
        self._block = hashlib.sha256()
        self._block_len = 0
        self._length = 0

    @property
    def length(self) -> int:
        """Number of bytes fed so far."""
        return self._length

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed more data; the result does not depend on how the data is cut into calls."""
        view = memoryview(data).cast("B")
        pos = 0
        total = len(view)
        while pos < total:
            take = min(BLOCK_SIZE - self._block_len, total - pos)
            self._block.update(view[pos : pos + take])
            self._block_len += take
            pos += take
            if self._block_len == BLOCK_SIZE:
                self._overall.update(self._block.digest())
                self._block = hashlib.sha256()
                self._block_len = 0
        self._length += total

    def hexdigest(self) -> str:
        """The content hash of the data fed so far, as 64 lowercase hex digits."""
        overall = self._overall.copy()
        if self._block_len:
            overall.update(self._block.digest())
        return overall.hexdigest()


def content_hash(data: bytes | bytearray | memoryview) -> str:
    """The content hash of ``data`` in one call."""
    hasher = ContentHasher()
    hasher.update(data)
    return hasher.hexdigest()
