"""core.heap: freed heap memory, and memory-mapped weights an encode has finished with, go back to the system."""

import os

import torch

from core.heap import release_file_pages
from tests.procfs import linux_only, resident_pages

PAGE = os.sysconf("SC_PAGE_SIZE")
PAGE_FLOATS = PAGE // 4  # float32 values per page


@linux_only
def test_memory_the_heap_kept_after_freeing_goes_back_to_the_system():
    # glibc keeps freed blocks below its (raised) mmap threshold, as it does the encode's activations, which encode
    # hands back. A fresh process, so the figures are this pattern's alone.
    import subprocess
    import sys
    from pathlib import Path

    code = """
import torch
from core.heap import return_freed_memory
def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) // 1024
large = torch.ones(4 << 20)  # freeing 16 MB raises the mmap threshold: later 1 MB blocks come from the heap
del large
before = anon()
blocks = [torch.ones(1 << 18) for _ in range(200)]  # 200 MB in 1 MB blocks
top = torch.ones(1 << 18)  # the heap's top stays in use, so freeing trims nothing by itself
del blocks
kept = anon()
return_freed_memory()
print(before, kept, anon())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2], check=True)
    before, kept, after = map(int, result.stdout.split())
    assert kept - before >= 180  # the freed 200 MB were still the process's …
    assert after - before <= 20  # … and are the system's again


def mapped_weights(tmp_path, **tensors):
    torch.save(tensors, tmp_path / "weights.pt")
    return torch.load(tmp_path / "weights.pt", weights_only=True, mmap=True)


@linux_only
def test_mapped_weights_leave_resident_memory_and_read_back_unchanged(tmp_path):
    values = torch.arange(64 * PAGE_FLOATS, dtype=torch.float32)
    weight = mapped_weights(tmp_path, weight=values)["weight"]
    assert torch.equal(weight, values)  # reading maps every page
    pages = resident_pages(weight)
    assert pages >= 64

    dropped = release_file_pages([weight])

    # Only whole pages inside the tensor: 64 pages' worth of bytes, minus the two partial ones at the ends unless
    # the storage starts on a page boundary.
    assert dropped in (64 * PAGE, 63 * PAGE)
    assert resident_pages(weight) == pages - dropped // PAGE
    assert torch.equal(weight, values)  # mapped again from the file, the same values


@linux_only
def test_weights_written_to_since_mapping_are_kept(tmp_path):
    loaded = mapped_weights(tmp_path, written=torch.zeros(16 * PAGE_FLOATS), other=torch.ones(16 * PAGE_FLOATS))
    written = loaded["written"]
    assert written.sum() == 0  # every page mapped
    written[5 * PAGE_FLOATS] = 7.0  # a private copy of one page: dropping it would bring back the file's 0

    assert release_file_pages([written]) == 0
    assert written[5 * PAGE_FLOATS] == 7.0
    assert resident_pages(written) >= 16  # nothing of it dropped, not even the pages the file still holds
    assert release_file_pages([loaded["other"]]) >= 15 * PAGE  # its neighbour in the file is unaffected


@linux_only
def test_tensors_not_read_from_a_file_are_kept():
    values = torch.arange(32 * PAGE_FLOATS, dtype=torch.float32)  # the process's own memory: dropping would zero it
    tensor = values.clone()

    assert release_file_pages([tensor]) == 0
    assert torch.equal(tensor, values)
    assert resident_pages(tensor) >= 32
