"""The benchmark's synthetic field, shared by bench.py and the reference harness (torch only)."""

import torch


def smooth_scene_code(like: torch.Tensor) -> torch.Tensor:
    """Triplanes that vary slowly (a 4×4 random pattern upsampled), so the field has a large smooth surface."""
    generator = torch.Generator().manual_seed(7)
    coarse = torch.randn(3, like.shape[1], 4, 4, generator=generator) * like.std()
    return torch.nn.functional.interpolate(coarse, like.shape[-2:], mode="bicubic", align_corners=True)
