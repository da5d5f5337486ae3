"""Handing the C heap's freed memory back to the system."""

import ctypes
import sys


def return_freed_memory() -> None:
    """glibc's malloc_trim (Linux; elsewhere nothing). The allocator keeps what large transient tensors freed (the
    encode's activations: 100–200 MB at TripoSR's size, varying between identical runs), so what runs next would
    build on top of it and an idle worker would keep it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass
