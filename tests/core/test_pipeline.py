"""generate(): image → mesh through the real preprocess, model and extraction, with progress and cancellation."""

import numpy as np
import pytest
from PIL import Image

from core.errors import Cancelled, InputError
from core.pipeline import GenerateSettings, generate
from core.weights import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def signed_volume(mesh) -> float:
    v = mesh.vertices.astype(np.float64)[mesh.faces]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6)


def test_generate_reproduces_the_reference_mesh(model, tiny_model_dir):
    events = []
    mesh = generate(
        model, tiny_model_dir / "input.png", GenerateSettings(resolution=32), progress=lambda *e: events.append(e)
    )
    assert (len(mesh.vertices), len(mesh.faces)) == (11627, 21992)
    assert signed_volume(mesh) == pytest.approx(0.193490, abs=1e-4)
    assert np.allclose(mesh.vertices.min(0), -0.87, atol=1e-5) and np.allclose(mesh.vertices.max(0), 0.87, atol=1e-5)
    mean_rgb = np.clip(np.round(mesh.colors * 255), 0, 255).mean(0)
    np.testing.assert_allclose(mean_rgb, [131.27, 110.07, 130.18], atol=0.05)

    stages = [stage for stage, _ in events]
    assert stages[0] == "Preparing image" and stages[-1] == "Extracting mesh"
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "Preparing image", "Encoding image", "Extracting mesh"
    ]
    for stage in set(stages):
        fractions = [f for s, f in events if s == stage]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_generate_accepts_arrays_and_pil_images(model, tiny_model_dir):
    rgba = Image.open(tiny_model_dir / "input.png")
    from_pil = generate(model, rgba, GenerateSettings(resolution=32))
    from_array = generate(model, np.asarray(rgba), GenerateSettings(resolution=32))
    np.testing.assert_array_equal(from_pil.vertices, from_array.vertices)


@pytest.mark.parametrize("stage", ["Preparing image", "Encoding image", "Extracting mesh"])
def test_cancel_at_each_stage_propagates(model, tiny_model_dir, stage):
    seen = []

    def progress(current, fraction):
        seen.append(current)
        if current == stage and fraction > 0:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled, match="stopped by the test"):
        generate(model, tiny_model_dir / "input.png", GenerateSettings(resolution=32), progress=progress)
    assert seen[-1] == stage


@pytest.mark.parametrize(
    "settings, message",
    [
        (GenerateSettings(resolution=4), "Resolution"),
        (GenerateSettings(resolution=64.5), "Resolution"),
        (GenerateSettings(threshold=float("nan")), "Threshold"),
        (GenerateSettings(threshold=-1), "Threshold"),
        (GenerateSettings(foreground_ratio=0), "Foreground ratio"),
    ],
)
def test_bad_settings_are_input_errors(model, tiny_model_dir, settings, message):
    with pytest.raises(InputError, match=message):
        generate(model, tiny_model_dir / "input.png", settings)


def test_bad_image_is_an_input_error(model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        generate(model, broken, GenerateSettings(resolution=32))
