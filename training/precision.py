"""Which autocast dtype training uses. bf16 helps on CPUs with native bf16 arithmetic (AVX512_BF16 or AMX) and is
several times slower than float32 on the others, so it is detected, never assumed."""

import torch

from core.model import cpu_has_native_bfloat16

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(choice: str, device: torch.device, native_bf16: bool | None = None) -> torch.dtype | None:
    """choice: auto | float32 | bfloat16 | float16 → the autocast dtype, or None for plain float32.
    auto: bf16 on CUDA GPUs that support it, else fp16; bf16 on CPUs with native bf16 (native_bf16; None: read
    from this CPU's flags); float32 otherwise."""
    if choice == "float32":
        return None
    if choice in DTYPES:
        return DTYPES[choice]
    if choice != "auto":
        raise SystemExit(f"--precision must be auto, float32, bfloat16 or float16, not {choice!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (cpu_has_native_bfloat16() if native_bf16 is None else native_bf16):
        return torch.bfloat16
    return None
