"""Cameras and rays in TripoSR's conventions: looking at the origin from distance 1.9, vertical field of view
40°, Z up; the input view sits on +X (azimuth 0, elevation 0) with image-right = +Y. Pixel-centre rays."""

import math

import torch

from core.position_codes import INPUT_CAMERA_DISTANCE, INPUT_FOV_DEGREES


def camera_frame(azimuth: float, elevation: float, distance: float = INPUT_CAMERA_DISTANCE):
    """Degrees → (position (3,), right (3,), up (3,), forward (3,)) float32; forward points at the origin."""
    a, e = math.radians(azimuth), math.radians(elevation)
    position = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]) * distance
    forward = -position / position.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return position, right, up, forward


def image_rays(u: torch.Tensor, v: torch.Tensor, azimuth=0.0, elevation=0.0, fov=INPUT_FOV_DEGREES):
    """Image-plane coordinates u (right), v (up) in [-1, 1] across the picture, shape (...) → ray origins and unit
    directions (..., 3)."""
    position, right, up, forward = camera_frame(azimuth, elevation)
    half = math.tan(math.radians(fov) / 2)
    directions = forward + (u[..., None] * half) * right + (v[..., None] * half) * up
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return position.expand_as(directions), directions


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) of the pixel centres of a size × size picture, each (size, size); row 0 is the top."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-centres, centres, indexing="ij")
    return u, v


def project(points: torch.Tensor, azimuth=0.0, elevation=0.0, fov=INPUT_FOV_DEGREES) -> torch.Tensor:
    """World points (..., 3) → image-plane (u, v) (..., 2) of the camera, the inverse of image_rays."""
    position, right, up, forward = camera_frame(azimuth, elevation)
    relative = points - position
    depth = relative @ forward
    half = math.tan(math.radians(fov) / 2)
    return torch.stack([relative @ right, relative @ up], dim=-1) / (depth[..., None] * half)
