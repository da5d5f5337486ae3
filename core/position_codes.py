"""Camera-aligned sin-cos position codes (an option of models trained with this project; the released TripoSR has
none). A triplane token and the image patches on its camera ray get similar codes, so cross-attention can find
the patches a token sits behind without learning the projection.

The input camera is TripoSR's: on +X at INPUT_CAMERA_DISTANCE looking at the origin, Z up, image-right +Y,
vertical field of view INPUT_FOV_DEGREES. Image-plane coordinates (u, v) are in [-1, 1] across the picture
(u right, v up). A plane-(x, y) token knows u but not v, a plane-(x, z) token knows v but not u; the unknown
coordinate's code is zero so it neither attracts nor repels."""

import math

import torch

INPUT_CAMERA_DISTANCE = 1.9
INPUT_FOV_DEGREES = 40.0
FREQUENCIES = 4  # per image axis: 2**f · π/2, f = 0..3 (wavelengths 4 to 0.5 image half-widths)
CODE_SCALE = 2.0  # amplitude of the codes added to queries and keys (a fixed attention bias of about 8/√head_dim)


def sincos(values: torch.Tensor, frequencies: int = FREQUENCIES) -> torch.Tensor:
    """(...,) → (..., 2·frequencies): sin and cos of values·2^f·π/2."""
    scales = (math.pi / 2) * 2.0 ** torch.arange(frequencies, dtype=values.dtype, device=values.device)
    angles = values[..., None] * scales
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def plane_points(plane_size: int, radius: float) -> torch.Tensor:
    """World coordinates of the triplane token centres, (3, P, P, 3); the coordinate a plane lacks is NaN.
    Token [plane, row, column]: plane 0 ↔ (x = column, y = row) as grid_sample reads it, 1 ↔ (x, z),
    2 ↔ (y, z)."""
    centres = ((torch.arange(plane_size, dtype=torch.float32) + 0.5) / plane_size * 2 - 1) * radius
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    nan = torch.full_like(rows, float("nan"))
    return torch.stack([
        torch.stack([cols, rows, nan], dim=-1),
        torch.stack([cols, nan, rows], dim=-1),
        torch.stack([nan, cols, rows], dim=-1),
    ])


def image_plane(points: torch.Tensor) -> torch.Tensor:
    """World points (..., 3) → their image-plane (u, v) in the input camera; a missing depth (x NaN) counts as 0."""
    depth = INPUT_CAMERA_DISTANCE - torch.nan_to_num(points[..., 0], nan=0.0)
    scale = depth * math.tan(math.radians(INPUT_FOV_DEGREES) / 2)
    return torch.stack([points[..., 1] / scale, points[..., 2] / scale], dim=-1)


def token_codes(plane_size: int, radius: float, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of the 3·P² triplane tokens, ordered plane, row, column:
    (added to the tokens (3·P², width): sin-cos of the world coordinates they have,
     cross-attention query codes (3·P², 4·FREQUENCIES): sin-cos of their image-plane u and v, 0 where unknown)."""
    points = plane_points(plane_size, radius).reshape(-1, 3)
    world = torch.nan_to_num(sincos(points / radius).flatten(1), nan=0.0)
    query = torch.nan_to_num(sincos(image_plane(points)).flatten(1), nan=0.0)
    return _pad(world, width), query


def patch_codes(rows: int, cols: int) -> torch.Tensor:
    """Cross-attention key codes of the image tokens (1 + rows·cols, 4·FREQUENCIES): the CLS token gets zeros,
    patches (row-major, row 0 at the top) the sin-cos of their centre's (u, v)."""
    v = 1 - (torch.arange(rows, dtype=torch.float32) + 0.5) / rows * 2
    u = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols * 2 - 1
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    codes = sincos(torch.stack([grid_u, grid_v], dim=-1)).flatten(2).reshape(rows * cols, -1)
    return torch.cat([codes.new_zeros(1, codes.shape[1]), codes])


def _pad(codes: torch.Tensor, width: int) -> torch.Tensor:
    if codes.shape[1] > width:
        raise ValueError(f"position codes need {codes.shape[1]} channels, the tokens have {width}")
    return torch.cat([codes, codes.new_zeros(len(codes), width - codes.shape[1])], dim=1)
