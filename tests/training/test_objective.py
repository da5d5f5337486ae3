"""The volume renderer's conventions, on fields with known answers."""

import math

import pytest
import torch

from core.model import TripoSR
from training.camera import image_rays
from training.objective import iso_raw_density, render_rays
from training.presets import tiny_model


def constant_field_model(raw_density: float, color_logit: float) -> TripoSR:
    model = TripoSR(tiny_model())
    last = model.decoder.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([raw_density, color_logit, color_logit, color_logit]))
    return model


def test_a_constant_density_gives_opacity_one_minus_exp_of_minus_density_for_any_chord():
    # Alpha comes from the normalised bin width (1/samples), so the optical depth through the box is the density
    # itself, whatever length of the box the ray crosses (the reference renderer's convention).
    model = constant_field_model(raw_density=1.0 + math.log(0.7), color_logit=0.0)  # density 0.7
    origins, directions = image_rays(torch.tensor([0.0, 0.3, -0.55]), torch.tensor([0.0, 0.2, 0.99]))
    # and a ray from the camera pointing away from the box
    origins = torch.cat([origins, torch.tensor([[1.9, 0.0, 0.0]])])
    directions = torch.cat([directions, torch.tensor([[1.0, 0.0, 0.0]])])
    codes = torch.zeros(1, 3, 8, 8, 8)
    opacity, color = render_rays(model, codes, origins[None], directions[None], samples=16)
    expected = 1 - math.exp(-0.7)
    torch.testing.assert_close(opacity[0, :3], torch.full((3,), expected), rtol=1e-5, atol=1e-6)
    assert opacity[0, 3] == 0.0  # the ray that misses: nothing, and the white background
    torch.testing.assert_close(color[0, :3], torch.full((3, 3), 0.5 * expected + (1 - expected)), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(color[0, 3], torch.ones(3))


def test_jitter_moves_samples_within_their_bins_only():
    model = constant_field_model(raw_density=2.0, color_logit=1.0)
    origins, directions = image_rays(torch.tensor([0.1]), torch.tensor([0.0]))
    codes = torch.zeros(1, 3, 8, 8, 8)
    centred = render_rays(model, codes, origins[None], directions[None], samples=8)
    jittered = render_rays(model, codes, origins[None], directions[None], samples=8, jitter=torch.rand(1, 1, 8))
    torch.testing.assert_close(centred, jittered)  # a constant field cannot tell where the samples sit


def test_the_occupancy_logit_is_zero_at_the_extraction_threshold():
    model = TripoSR(tiny_model())
    assert math.exp(iso_raw_density(model) + model.config.renderer.density_bias) == pytest.approx(25.0, rel=1e-12)
