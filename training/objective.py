"""The training losses of a TripoSR model, as one module (so DistributedDataParallel can wrap it):
occupancy around the iso level and colour at 3D points, and opacity and colour of volume renders along rays."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.model import TripoSR

ISO_LEVEL = 25.0  # the density TripoSR's meshes are extracted at
MAX_RAW_DENSITY = 15.0  # exp overflows beyond ~88; this is density 1.2e6, opaque in any sample


@dataclass
class LossWeights:
    occupancy: float = 1.0  # binary cross-entropy of inside/outside, the logit being raw density − iso level
    color: float = 1.0  # mean squared error of the colour at points near the surface
    opacity: float = 1.0  # mean squared error of rendered opacity (the silhouette)
    render_color: float = 1.0  # mean squared error of rendered colour, on white


def iso_raw_density(model: TripoSR) -> float:
    """The decoder's raw density output at which the activated density equals ISO_LEVEL."""
    return math.log(ISO_LEVEL) - model.config.renderer.density_bias


def encode(model: TripoSR, images: torch.Tensor) -> torch.Tensor:
    """Differentiable TripoSR.encode: images (B, H, W, 3) in [0, 1] → scene codes (B, 3, C, H', W')."""
    return model.scene_codes(model.backbone_tokens(model.image_tokens(model.resize_images(images))))


def field(model: TripoSR, scene_codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Raw field (B, N, 4): density before activation, colour logits."""
    return model.decoder(model.triplane_features(scene_codes, points))


def render_rays(model: TripoSR, scene_codes, origins, directions, samples: int, jitter=None):
    """Volume rendering with TripoSR's renderer conventions (REFERENCE: the box [−r, r]³ shrunk by 1e-3, samples
    in uniform bins between the box entry and exit, alpha from the normalised bin width 1/samples, white
    background). origins, directions (B, R, 3) → opacity (B, R), colour (B, R, 3). Samples sit at bin centres, or
    at jitter (B, R, samples) in [0, 1) within their bins."""
    radius = model.config.renderer.radius * (1 - 1e-3)
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (-radius - origins) / safe, (radius - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    far = torch.maximum(t0, t1).amin(-1)
    valid = far > near
    offsets = torch.arange(samples, dtype=origins.dtype, device=origins.device)
    offsets = offsets + (0.5 if jitter is None else jitter)
    t = near[..., None] + (far - near).clamp(min=0)[..., None] * (offsets / samples)
    points = origins[..., None, :] + t[..., None] * directions[..., None, :]  # (B, R, S, 3)
    raw = field(model, scene_codes, points.flatten(1, 2)).view(*points.shape[:3], 4)
    density = torch.exp(raw[..., 0].clamp(max=MAX_RAW_DENSITY) + model.config.renderer.density_bias)
    alpha = (1 - torch.exp(-density / samples)) * valid[..., None]
    transmittance = torch.cumprod(1 - alpha + 1e-10, dim=-1)
    transmittance = torch.cat([torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]], dim=-1)
    weights = alpha * transmittance
    opacity = weights.sum(-1)
    color = (weights[..., None] * torch.sigmoid(raw[..., 1:])).sum(-2) + (1 - opacity)[..., None]
    return opacity, color


class Objective(nn.Module):
    """batch (see training/data.py make_sample, stacked) → dict of the weighted total ("loss") and its parts."""

    def __init__(self, model: TripoSR, weights: LossWeights):
        super().__init__()
        self.model, self.weights = model, weights

    def forward(self, batch: dict) -> dict:
        model = self.model
        codes = encode(model, batch["image"])
        raw = field(model, codes, batch["points"])
        parts = {
            "occupancy": F.binary_cross_entropy_with_logits(raw[..., 0] - iso_raw_density(model), batch["occupancy"]),
        }
        half = batch["points"].shape[1] // 2  # the second half of the points lies near the surface
        parts["color"] = F.mse_loss(torch.sigmoid(raw[:, half:, 1:]), batch["colors"][:, half:])
        jitter = batch["ray_jitter"].flatten(1, 2)
        opacity, color = render_rays(model, codes, batch["ray_origins"].flatten(1, 2),
                                     batch["ray_directions"].flatten(1, 2), jitter.shape[-1], jitter)
        parts["opacity"] = F.mse_loss(opacity, batch["ray_opacity"].flatten(1, 2))
        parts["render_color"] = F.mse_loss(color, batch["ray_colors"].flatten(1, 2))
        parts["loss"] = sum(getattr(self.weights, name) * value for name, value in parts.items())
        return parts
