"""Parity of our TripoSR with the reference outputs stored in the tiny fixture, stage by stage."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.weights import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def model_input(tiny_model_dir):
    return torch.from_numpy(np.load(tiny_model_dir / "model_input.npy"))


def reference(tiny_model_dir, name):
    return torch.from_numpy(np.load(tiny_model_dir / f"{name}.npy"))


def test_resize_of_preprocessed_image_matches_model_input(model, model_input, tiny_model_dir):
    image = np.asarray(Image.open(tiny_model_dir / "preprocessed.png"), dtype=np.float32) / 255
    assert image.shape == (260, 260, 3)
    resized = model.resize_images(torch.from_numpy(image)[None]).permute(0, 2, 3, 1)
    torch.testing.assert_close(resized, model_input, atol=1e-6, rtol=0)


def test_stages_match_reference(model, model_input, tiny_model_dir):
    with torch.inference_mode():
        image_tokens = model.image_tokens(model.resize_images(model_input))
        torch.testing.assert_close(image_tokens, reference(tiny_model_dir, "image_tokens"), atol=1e-4, rtol=0)
        backbone_tokens = model.backbone_tokens(image_tokens)
        torch.testing.assert_close(backbone_tokens, reference(tiny_model_dir, "backbone_tokens"), atol=1e-4, rtol=0)
        scene_codes = model.scene_codes(backbone_tokens)
        torch.testing.assert_close(scene_codes, reference(tiny_model_dir, "scene_codes"), atol=1e-4, rtol=0)


def test_encode_matches_reference_scene_codes(model, model_input, tiny_model_dir):
    steps = []
    scene_codes = model.encode(model_input, progress=steps.append)
    assert scene_codes.shape == (1, 3, 8, 16, 16) and scene_codes.dtype == torch.float32
    torch.testing.assert_close(scene_codes, reference(tiny_model_dir, "scene_codes"), atol=1e-4, rtol=0)
    assert steps == [0.5, 1.0]  # one report per backbone layer


def test_position_embedding_interpolation_uses_the_transformers_435_scale_factor(model, model_input):
    # The newer transformers behaviour (interpolate to the target size) must give different embeddings,
    # otherwise the parity test above would not guard the trap.
    vit = model.image_tokenizer
    ours = vit.interpolated_position_embeddings(8, 8)[:, 1:]
    grid = vit.position_embeddings[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    newer = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    assert ours.shape == (1, 64, 64)
    assert (ours - newer.flatten(2).transpose(1, 2)).abs().max() > 1e-2


def test_query_matches_reference_density_and_colour(model, tiny_model_dir):
    scene_code = reference(tiny_model_dir, "scene_codes")[0]
    points = reference(tiny_model_dir, "query_points")
    model.query_chunk_size = 1000  # several chunks, one of them partial
    try:
        density, color = model.query(scene_code, points)
    finally:
        model.query_chunk_size = 65536
    assert density.shape == (4096,) and color.shape == (4096, 3)
    torch.testing.assert_close(density, reference(tiny_model_dir, "query_density_act")[:, 0], rtol=1e-4, atol=0)
    torch.testing.assert_close(color, reference(tiny_model_dir, "query_color"), rtol=1e-4, atol=0)


def test_density_grid_matches_reference(model, tiny_model_dir):
    scene_code = reference(tiny_model_dir, "scene_codes")[0]
    axis = torch.linspace(-0.87, 0.87, 32)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    density, _ = model.query(scene_code, points)
    expected = reference(tiny_model_dir, "density_grid_32")
    torch.testing.assert_close(density.view(32, 32, 32), expected, rtol=1e-4, atol=0)


def test_query_of_no_points_and_points_outside_the_box(model, tiny_model_dir):
    scene_code = reference(tiny_model_dir, "scene_codes")[0]
    density, color = model.query(scene_code, torch.zeros(0, 3))
    assert density.shape == (0,) and color.shape == (0, 3)
    # Far outside every plane grid_sample's zero padding gives the same features everywhere.
    density, color = model.query(scene_code, torch.tensor([[5.0, 5.0, 5.0], [-9.0, 7.0, 6.0]]))
    torch.testing.assert_close(density[0], density[1])
    assert ((color >= 0) & (color <= 1)).all()


def test_batched_encode_equals_single(model, model_input):
    pair = torch.cat([model_input, model_input.flip(1)])
    codes = model.encode(pair)
    torch.testing.assert_close(codes[:1], model.encode(model_input), atol=1e-5, rtol=0)
    torch.testing.assert_close(codes[1:], model.encode(pair[1:]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("precision, scene_code_bound", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_reduced_precision_encode_stays_close(model, model_input, tiny_model_dir, precision, scene_code_bound):
    # The autocast path CUDA takes by default (float16), exercised here on the CPU. Measured on this fixture:
    # float16 1.4e-3, bfloat16 1.0e-2 max abs difference in scene codes.
    model.encode_precision = precision
    try:
        codes = model.encode(model_input)
    finally:
        model.encode_precision = "auto"
    assert codes.dtype == torch.float32
    difference = (codes - reference(tiny_model_dir, "scene_codes")).abs().max()
    assert 1e-6 < difference < scene_code_bound  # really ran in reduced precision, and stayed close


def test_unknown_precision_is_a_model_error(model, model_input):
    from core.errors import ModelError

    model.encode_precision = "int4"
    try:
        with pytest.raises(ModelError, match="int4"):
            model.encode(model_input)
    finally:
        model.encode_precision = "auto"


CPUINFO = "processor\t: {n}\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\n"


@pytest.mark.parametrize("extra, native", [("avx512f", False), ("avx512f avx512_bf16", True),
                                           ("amx_bf16 amx_tile", True), ("", False)])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    from core.model import cpu_has_native_bfloat16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(n=0, extra=extra) + CPUINFO.format(n=1, extra=extra))
    assert cpu_has_native_bfloat16(cpuinfo) is native
    assert cpu_has_native_bfloat16(tmp_path / "missing") is False  # no /proc (macOS, Windows): never assumed


@pytest.mark.parametrize("extra, native", [("avx512f avx512_bf16", torch.bfloat16), ("avx512f", torch.float32)])
def test_auto_never_picks_bfloat16_on_a_cpu_and_native_follows_the_flags(model, tmp_path, monkeypatch, extra, native):
    import core.model

    monkeypatch.setattr(core.model, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(n=0, extra=extra))
    try:
        for precision, dtype in [("auto", torch.float32), ("native", native), ("bfloat16", torch.bfloat16),
                                 ("float32", torch.float32)]:
            model.encode_precision = precision
            assert model.encode_dtype() == dtype, precision
    finally:
        model.encode_precision = "auto"


def official_decoder_model(feature_reduction="concat"):
    """A small random TripoSR with the official decoder's widths, whose output varies as a trained one's does."""
    from core.config import (BackboneConfig, DecoderConfig, ModelConfig, RendererConfig, TriplaneConfig,
                             UpsamplerConfig, ViTConfig)
    from core.model import TripoSR

    torch.manual_seed(0)
    config = ModelConfig(
        cond_image_size=32,
        vit=ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32),
        triplane=TriplaneConfig(plane_size=4, num_channels=32),
        backbone=BackboneConfig(in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                                cross_attention_dim=32),
        upsampler=UpsamplerConfig(in_channels=32, out_channels=40),
        decoder=DecoderConfig(in_channels=120 if feature_reduction == "concat" else 40),
        renderer=RendererConfig(feature_reduction=feature_reduction),
    )
    model = TripoSR(config).eval()
    for layer in model.decoder.layers:
        torch.nn.init.normal_(layer.weight, std=1.5 * (2.0 / layer.in_features) ** 0.5)
    return model


def test_a_points_value_does_not_depend_on_its_batch():
    # Coarse-to-fine extraction queries batches of any size and must reproduce the dense grid bit for bit; BLAS
    # rounds a few-row product differently unless the model pads short batches.
    model = official_decoder_model()
    scene_code = torch.randn(3, 40, 8, 8)
    points = torch.rand(3000, 3) * 1.74 - 0.87
    density, color = model.query(scene_code, points)
    for start, count in [(0, 1), (5, 7), (100, 100), (1000, 255), (2000, 1000)]:
        part_density, part_color = model.query(scene_code, points[start:start + count])
        assert torch.equal(part_density, density[start:start + count])
        assert torch.equal(part_color, color[start:start + count])


@pytest.mark.parametrize("feature_reduction", ["concat", "mean"])
@pytest.mark.parametrize("table_samples", [1 << 14, 2 * 37 + 1])  # the tables sampled at once, or 2 rows at a time
def test_grid_density_is_bitwise_the_query_at_grid_points(feature_reduction, table_samples, monkeypatch):
    from core.extract import grid_axis

    monkeypatch.setattr("core.model.TABLE_SAMPLES", table_samples)
    model = official_decoder_model(feature_reduction)
    scene_code = torch.randn(3, 40, 8, 8)
    axis = grid_axis(37, model.config.renderer.radius)
    indices = torch.cat([torch.randint(0, 37, (5000, 3)), torch.tensor([[0, 0, 0], [36, 36, 36], [0, 36, 17]])])
    expected = model.query(scene_code, axis[indices])[0]
    density_at = model.grid_density(scene_code, axis)
    model.query_chunk_size = 1000  # several chunks, one of them partial
    try:
        assert torch.equal(density_at(indices), expected)
    finally:
        model.query_chunk_size = 16384
    for start, count in [(0, 1), (5, 7), (4000, 1003)]:
        assert torch.equal(density_at(indices[start:start + count]), expected[start:start + count])
    assert density_at(indices[:0]).shape == (0,)


def test_engine_mesh_equals_the_reference_path_on_the_fixture(model, tiny_model_dir):
    # Our extraction (coarse-to-fine, grid tables) against the reference's way: every grid point queried.
    from core.extract import extract_mesh

    scene_code = reference(tiny_model_dir, "scene_codes")[0]
    fast = model.extract_mesh(scene_code, resolution=64)
    dense = extract_mesh(lambda p: model.query(scene_code, p)[0], lambda p: model.query(scene_code, p)[1],
                         resolution=64, coarse_to_fine=False)
    assert len(dense.faces) > 10_000
    np.testing.assert_array_equal(fast.vertices, dense.vertices)
    np.testing.assert_array_equal(fast.faces, dense.faces)
    np.testing.assert_array_equal(fast.colors, dense.colors)


def test_inference_feed_forward_in_row_chunks_and_residuals_in_place_equal_the_training_path(monkeypatch):
    # Inference runs the GEGLU feed-forward FEED_FORWARD_ROWS tokens at a time (bounding the encode's peak
    # memory); each token is independent, so it must give the training path's numbers.
    import core.model
    from core.config import BackboneConfig
    from core.model import TransformerBlock

    torch.manual_seed(0)
    config = BackboneConfig(num_attention_heads=2, attention_head_dim=8, in_channels=8, num_layers=1,
                            cross_attention_dim=12, norm_num_groups=4)
    block = TransformerBlock(config).eval()
    tokens = torch.randn(2, 23, config.inner_dim)
    whole = block.feed_forward(tokens)  # grad enabled: the training path, no chunks
    monkeypatch.setattr(core.model, "FEED_FORWARD_ROWS", 5)  # 23 tokens: 4 chunks of 5 and one of 3
    with torch.inference_mode():
        chunked = block.feed_forward(tokens)
    torch.testing.assert_close(chunked, whole.detach(), rtol=0, atol=1e-6)
    assert chunked.shape == (2, 23, config.inner_dim)

    context = torch.randn(2, 9, config.cross_attention_dim)  # the whole block: its residual sums in place
    trained = block(tokens, context)
    kept = tokens.clone()
    with torch.inference_mode():
        inferred = block(tokens, context)
    torch.testing.assert_close(inferred, trained.detach(), rtol=0, atol=1e-6)
    assert torch.equal(tokens, kept)  # the caller's tokens are not summed into
