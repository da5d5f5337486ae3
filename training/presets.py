"""Named model + training settings. `demo` is the bundled models/demo model; `tiny` is for tests."""

import dataclasses

from core.config import (BackboneConfig, DecoderConfig, ModelConfig, TriplaneConfig, UpsamplerConfig, ViTConfig)

from .data import DataConfig


def demo_model() -> ModelConfig:
    """About 1.7 M parameters (7 MB in float32): 128² input, 8-pixel patches (16×16), 16×16 token planes
    upsampled to 32×32, two backbone blocks, camera-aligned position codes."""
    return ModelConfig(
        cond_image_size=128,
        vit=ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                      layer_norm_eps=1e-6, image_size=128, patch_size=8),
        triplane=TriplaneConfig(plane_size=16, num_channels=128),
        backbone=BackboneConfig(in_channels=128, num_attention_heads=4, attention_head_dim=32, num_layers=2,
                                cross_attention_dim=128, norm_num_groups=32, position_codes=True),
        upsampler=UpsamplerConfig(in_channels=128, out_channels=32),
        decoder=DecoderConfig(in_channels=96, n_neurons=64, n_hidden_layers=4),
    )


def tiny_model(position_codes: bool = True) -> ModelConfig:
    """A few tens of thousands of parameters: for tests."""
    return ModelConfig(
        cond_image_size=64,
        vit=ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      layer_norm_eps=1e-6, image_size=64, patch_size=16),
        triplane=TriplaneConfig(plane_size=4, num_channels=32),
        backbone=BackboneConfig(in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                                cross_attention_dim=32, norm_num_groups=8, position_codes=position_codes),
        upsampler=UpsamplerConfig(in_channels=32, out_channels=8),
        decoder=DecoderConfig(in_channels=24, n_neurons=16, n_hidden_layers=2),
    )


PRESETS = {
    "demo": {
        "model": demo_model,
        "data": DataConfig(image_size=128, cond_image_size=128, rays_per_view=192, render_samples=32),
        "train": dict(batch_size=8, steps=12000, learning_rate=6e-4, warmup_steps=100, save_every=25, workers=1),
    },
    "tiny": {
        "model": tiny_model,
        "data": DataConfig(image_size=64, cond_image_size=64, occupancy_points=256, rays_per_view=32,
                           render_samples=16, curriculum_steps=4),
        "train": dict(batch_size=4, steps=8, learning_rate=3e-3, warmup_steps=2, save_every=4),
    },
}


def preset(name: str):
    """(model config, data config, training overrides) of a preset; fresh copies."""
    entry = PRESETS[name]
    return entry["model"](), dataclasses.replace(entry["data"]), dict(entry["train"])
