"""core.heap: freed heap memory goes back to the system."""

from tests.procfs import linux_only


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
