"""Handing memory back to the system: the C heap's freed blocks, and the pages of memory-mapped weights that an
encode has finished with."""

import ctypes
import os
import sys
from typing import Iterable

import numpy as np
import torch

MADV_DONTNEED = 4  # Linux's value on every architecture PyTorch ships for
_PRESENT, _SWAPPED, _FILE_PAGE = (np.uint64(1 << bit) for bit in (63, 62, 61))  # /proc/self/pagemap entry bits


def return_freed_memory() -> None:
    """glibc's malloc_trim (Linux; elsewhere nothing). The allocator keeps what large transient tensors freed (the
    encode's activations: 100–200 MB at TripoSR's size, varying between identical runs), so what runs next would
    build on top of it and an idle worker would keep it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drops from this process's resident memory the pages of CPU tensors that are read straight from a
    memory-mapped file (core.weights loads checkpoints so); returns the bytes dropped. The next read maps them
    again from the page cache (about 50 ms for all of TripoSR's 1.6 GB), with the same values. A tensor is left
    alone unless every page of it is either not resident or an unmodified page of the file: a page written to
    since (a private copy), anonymous memory, a swapped-out page or an unreadable page map keeps it all, because
    dropping those would lose data. Linux only; elsewhere nothing is dropped."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)
    except OSError:
        return 0
    page, madvise = os.sysconf("SC_PAGE_SIZE"), _madvise()
    dropped = 0
    with pagemap:
        for tensor in tensors:
            if tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            start = -(-storage.data_ptr() // page) * page  # whole pages inside the storage only
            end = (storage.data_ptr() + storage.nbytes()) // page * page
            if end > start and _file_pages_only(pagemap, start // page, (end - start) // page):
                if madvise(start, end - start, MADV_DONTNEED) == 0:
                    dropped += end - start
    return dropped


def _file_pages_only(pagemap, first_page: int, count: int) -> bool:
    try:
        pagemap.seek(first_page * 8)
        entries = np.frombuffer(pagemap.read(count * 8), np.uint64)
    except OSError:
        return False
    if len(entries) != count:
        return False
    private = (entries & _PRESENT != 0) & (entries & _FILE_PAGE == 0)
    return not (private.any() or (entries & _SWAPPED != 0).any())


def _madvise():
    madvise = ctypes.CDLL(None).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise
