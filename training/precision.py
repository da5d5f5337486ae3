"""Which autocast dtype training uses. bf16 helps on CPUs with native bf16 arithmetic (AVX512_BF16 or AMX) and is
several times slower than float32 on the others, so it is detected, never assumed."""

from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    if any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS):
        return True
    return cpuinfo is None and torch.backends.cpu.get_cpu_capability() == "AVX512_BF16"


def autocast_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """choice: auto | float32 | bfloat16 | float16 → the autocast dtype, or None for plain float32.
    auto: bf16 on CUDA GPUs that support it, else fp16; bf16 on CPUs with native bf16; float32 otherwise."""
    if choice == "float32":
        return None
    if choice in DTYPES:
        return DTYPES[choice]
    if choice != "auto":
        raise SystemExit(f"--precision must be auto, float32, bfloat16 or float16, not {choice!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
