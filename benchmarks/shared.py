"""What bench.py and the reference harness (reference_triposr.py) share; torch and the standard library only, so
it imports in the reference's environment too."""

import time
from pathlib import Path

import torch


def smooth_scene_code(like: torch.Tensor, pattern: int = 4) -> torch.Tensor:
    """Triplanes that vary slowly (a pattern × pattern random grid upsampled), so the field has a large smooth
    surface; a finer pattern gives more of it."""
    generator = torch.Generator().manual_seed(7)
    coarse = torch.randn(3, like.shape[1], pattern, pattern, generator=generator) * like.std()
    return torch.nn.functional.interpolate(coarse, like.shape[-2:], mode="bicubic", align_corners=True)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's peak from before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")
