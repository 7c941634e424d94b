"""Tests for the Dropbox-style content hash."""

from __future__ import annotations

import array
import hashlib
import random

import pytest

from openscan_pi.cloud.contenthash import BLOCK_SIZE, ContentHasher, content_hash


def reference(data: bytes) -> str:
    """The definition, computed by hand."""
    digests = b"".join(
        hashlib.sha256(data[i : i + BLOCK_SIZE]).digest() for i in range(0, len(data), BLOCK_SIZE)
    )
    return hashlib.sha256(digests).hexdigest()


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(7).randbytes(2 * BLOCK_SIZE + 12345)


def test_block_size_is_4_mib() -> None:
    assert BLOCK_SIZE == 4194304


def test_matches_definition(data: bytes) -> None:
    assert content_hash(data) == reference(data)
    # Not a plain sha256 of the data: the block structure matters.
    assert content_hash(data) != hashlib.sha256(data).hexdigest()


def test_small_input_is_sha256_of_one_block_digest() -> None:
    expected = hashlib.sha256(hashlib.sha256(b"abc").digest()).hexdigest()
    assert content_hash(b"abc") == expected


def test_empty_input_has_no_block() -> None:
    assert content_hash(b"") == hashlib.sha256(b"").hexdigest()
    assert ContentHasher().hexdigest() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("blocks", [1, 2])
def test_exact_multiple_of_block_size_has_no_trailing_empty_block(blocks: int) -> None:
    data = bytes(range(256)) * (BLOCK_SIZE // 256) * blocks
    assert len(data) == blocks * BLOCK_SIZE
    digests = b"".join(hashlib.sha256(data[:BLOCK_SIZE]).digest() for _ in range(blocks))
    assert content_hash(data) == hashlib.sha256(digests).hexdigest()
    # The same data plus one byte has one more block.
    extra = digests + hashlib.sha256(b"\0").digest()
    assert content_hash(data + b"\0") == hashlib.sha256(extra).hexdigest()


@pytest.mark.parametrize("chunk", [1_000_003, 65536, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1])
def test_chunking_does_not_matter(data: bytes, chunk: int) -> None:
    hasher = ContentHasher()
    for i in range(0, len(data), chunk):
        hasher.update(data[i : i + chunk])
    assert hasher.hexdigest() == reference(data)
    assert hasher.length == len(data)


def test_random_chunks_and_input_types(data: bytes) -> None:
    rng = random.Random(3)
    hasher = ContentHasher()
    pos = 0
    kinds = [bytes, bytearray, memoryview]
    while pos < len(data):
        n = rng.choice([0, 1, 17, 4096, 777_777, 3_000_000])
        piece = data[pos : pos + n]
        hasher.update(rng.choice(kinds)(piece))
        pos += len(piece)
    assert hasher.hexdigest() == reference(data)


def test_hexdigest_does_not_end_hashing(data: bytes) -> None:
    hasher = ContentHasher()
    hasher.update(data[:100])
    assert hasher.hexdigest() == reference(data[:100])
    assert hasher.hexdigest() == reference(data[:100])
    hasher.update(data[100:])
    assert hasher.hexdigest() == reference(data)


def test_memoryview_of_wider_items_counts_bytes() -> None:
    arr = array.array("I", range(1000))
    hasher = ContentHasher()
    hasher.update(memoryview(arr))
    assert hasher.hexdigest() == reference(arr.tobytes())
    assert hasher.length == len(arr.tobytes())
