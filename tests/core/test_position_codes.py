"""Camera-aligned position codes: off for the official format, saved and read as a config switch, and aligned so
that a triplane token's query matches the image patch it projects to."""

import dataclasses
import math

import pytest
import torch
import yaml

from core import position_codes
from core.config import load_config, save_config
from core.errors import ModelError
from core.model import TripoSR
from core.weights import load_model


def test_official_configs_have_no_codes_and_saving_one_adds_no_field(tiny_model_dir, tmp_path):
    config = load_config(tiny_model_dir / "config.yaml")
    assert config.backbone.position_codes is False
    save_config(config, tmp_path)
    assert "position_codes" not in yaml.safe_load((tmp_path / "config.yaml").read_text())["backbone"]


def test_the_switch_round_trips_through_config_yaml(tiny_model_dir, tmp_path):
    config = load_config(tiny_model_dir / "config.yaml")
    config.backbone.position_codes = True
    save_config(config, tmp_path)
    (tmp_path / "vit_config.json").write_text((tiny_model_dir / "vit_config.json").read_text())
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["backbone"]["position_codes"] is True
    assert load_config(tmp_path / "config.yaml").backbone.position_codes is True


def test_codes_need_room_in_the_heads(tiny_model_dir, tmp_path):
    config = load_config(tiny_model_dir / "config.yaml")
    config.backbone.position_codes = True
    config.backbone.attention_head_dim = 8
    save_config(config, tmp_path)
    (tmp_path / "vit_config.json").write_text((tiny_model_dir / "vit_config.json").read_text())
    with pytest.raises(ModelError, match="position_codes"):
        load_config(tmp_path / "config.yaml")


def test_switching_codes_on_changes_what_the_same_weights_compute(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu")
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    without = model.encode(images)
    coded = TripoSR(dataclasses.replace(model.config, backbone=dataclasses.replace(model.config.backbone,
                                                                                   position_codes=True)))
    coded.load_state_dict(model.state_dict())
    with_codes = coded.eval().encode(images)
    assert (with_codes - without).abs().max() > 1e-3


def test_a_tokens_query_matches_the_patch_on_its_camera_ray_best():
    plane_size, grid = 8, 16
    _, queries = position_codes.token_codes(plane_size, 0.87, 64)
    keys = position_codes.patch_codes(grid, grid)[1:]
    points = position_codes.plane_points(plane_size, 0.87).reshape(-1, 3)
    uv = position_codes.image_plane(points)
    inside = 0
    for token in range(2 * plane_size**2, 3 * plane_size**2):  # plane (y, z): both image coordinates known
        u, v = uv[token].tolist()
        if max(abs(u), abs(v)) > 1:  # the corners of the field's box lie outside the picture
            continue
        inside += 1
        best = int((keys @ queries[token]).argmax())
        row, col = divmod(best, grid)
        assert abs((col + 0.5) / grid * 2 - 1 - u) <= 1 / grid + 1e-6
        assert abs(1 - (row + 0.5) / grid * 2 - v) <= 1 / grid + 1e-6
    assert inside == 36  # 6 × 6 of the 8 × 8 tokens
    # A plane-(x, y) token knows only u: the v half of its query is zero.
    v_part = queries[: plane_size**2, 2 * position_codes.FREQUENCIES:]
    assert torch.equal(v_part, torch.zeros_like(v_part))


def test_image_plane_follows_the_input_camera():
    half = math.tan(math.radians(position_codes.INPUT_FOV_DEGREES) / 2)
    uv = position_codes.image_plane(torch.tensor([[0.0, 1.9 * half, 0.0], [0.0, 0.0, -0.95 * half]]))
    torch.testing.assert_close(uv, torch.tensor([[1.0, 0.0], [0.0, -0.5]]))
