"""What /proc says about a process, for the tests of the worker's lifetime and memory (Linux), and the marks
that skip such tests elsewhere with the reason."""

import os
import sys
from pathlib import Path

import pytest

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, which only Linux has")
posix_only = pytest.mark.skipif(os.name != "posix", reason="stops or kills the worker with POSIX signals")


def process_gone(pid: int) -> bool:
    """True once the pid is reaped (or a zombie of a parent that is not us, i.e. not our leak)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status and f"PPid:\t{os.getpid()}\n" not in status


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def resident_pages(tensor) -> int:
    """How many pages of a CPU tensor's storage this process has resident (/proc/self/pagemap's present bit)."""
    page = os.sysconf("SC_PAGE_SIZE")
    storage = tensor.untyped_storage()
    first, last = storage.data_ptr() // page, (storage.data_ptr() + storage.nbytes() - 1) // page
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = pagemap.read((last - first + 1) * 8)
    return sum(entries[index * 8 + 7] >> 7 for index in range(last - first + 1))
