"""The daemon's memory helpers on the real C library, in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


RSS = """
import re
def rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\\s+(\\d+)", f.read()).group(1)) / 1024
"""


def test_give_back_returns_memory_freed_under_a_live_allocation() -> None:
    # 60 MB in 2 KB blocks (malloc's, not Python's small-object allocator), all freed but the
    # last: it pins the top of the heap, so free() alone gives nothing back to the kernel.
    out = run(RSS + textwrap.dedent("""
        from openscan_pi.daemon.memory import give_back
        blocks = [bytes(2048) for _ in range(30_000)]
        last = blocks[-1]
        del blocks
        before = rss_mb()
        returned = give_back()
        print(returned, before, rss_mb(), len(last))
    """))
    returned, before, after, _ = out.split()
    assert returned == "True"
    assert float(before) - float(after) > 40, out


def test_threads_share_the_limited_arenas() -> None:
    # Eight threads allocating at once: glibc gives each an arena (a heap mapping of its own)
    # unless limited; with the limit they share the main one.
    code = """
        import sys, threading
        from openscan_pi.daemon.memory import limit_arenas
        if sys.argv[-1] == "limit":
            assert limit_arenas(1)
        barrier = threading.Barrier(8)
        keep = []
        def work():
            barrier.wait()
            keep.append([bytes(4096) for _ in range(200)])
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        with open("/proc/self/maps") as f:
            # each extra arena is a 64 MB-aligned anonymous mapping of glibc's (rw-p + ---p pair)
            print(sum(1 for line in f if line.split()[1] == "---p" and len(line.split()) == 5))
    """
    def arenas(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), mode],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    assert arenas("limit") < arenas("free")
