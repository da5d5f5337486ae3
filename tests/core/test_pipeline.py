"""generate(): image → mesh through the real preprocess, model and extraction, with progress and cancellation."""

import numpy as np
import pytest
from PIL import Image

from core.errors import Cancelled, InputError
from core.pipeline import GenerateSettings, generate
from core.weights import load_model
from tests.procfs import linux_only


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


def oom_above(model, monkeypatch, rows):
    """Make the decoder fail like a full GPU for batches of more than `rows` points (no GPU here; the rest of the
    model is real). Returns the batch sizes it saw."""
    import torch

    decode, sizes = model._decode, []

    def limited(features):
        sizes.append(len(features))
        if len(features) > rows:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(features) * 256} bytes")
        return decode(features)

    monkeypatch.setattr(model, "_decode", limited)
    return sizes


def test_out_of_gpu_memory_retries_only_the_extraction_with_smaller_chunks(model, tiny_model_dir, monkeypatch):
    expected = generate(model, tiny_model_dir / "input.png", GenerateSettings(resolution=48))
    chunk_size = model.query_chunk_size
    sizes = oom_above(model, monkeypatch, chunk_size // 4)
    events = []
    mesh = generate(model, tiny_model_dir / "input.png", GenerateSettings(resolution=48),
                    progress=lambda *event: events.append(event))
    np.testing.assert_array_equal(mesh.vertices, expected.vertices)
    np.testing.assert_array_equal(mesh.faces, expected.faces)
    assert max(sizes) > chunk_size // 4 and chunk_size // 4 in sizes  # failed, then ran with quarter chunks
    assert events.count(("Encoding image", 0.0)) == 1  # the scene code was kept
    assert model.query_chunk_size == chunk_size


@pytest.mark.parametrize("torch_release", ["current", "before 2.5"])
def test_out_of_gpu_memory_even_with_small_chunks_is_a_model_error(model, tiny_model_dir, monkeypatch, torch_release):
    from core.errors import ModelError

    if torch_release == "before 2.5":
        without_out_of_memory_alias(monkeypatch)
    chunk_size = model.query_chunk_size
    oom_above(model, monkeypatch, 100)
    with pytest.raises(ModelError, match="Out of memory on cpu while extracting mesh, even with smaller batches. "
                                         "Lower the resolution"):
        generate(model, tiny_model_dir / "input.png", GenerateSettings(resolution=48))
    assert model.query_chunk_size == chunk_size


@linux_only
def test_running_out_of_ram_is_a_clear_model_error(tiny_model_dir):
    # A real allocation failure: the process may use only 2 GB more address space, a 1024³ grid needs 4.3 GB.
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import resource
from core.errors import ModelError
from core.pipeline import GenerateSettings, generate
from core.weights import load_model
from tests.procfs import linux_only
model = load_model({str(tiny_model_dir)!r}, device="cpu")
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.RLIM_INFINITY))
try:
    generate(model, {str(tiny_model_dir / "input.png")!r}, GenerateSettings(resolution=1024))
except ModelError as error:
    print("ModelError:", error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.startswith("ModelError: The computer ran out of memory while extracting mesh. Lower the "
                                    "mesh resolution"), result.stdout + result.stderr


def without_out_of_memory_alias(monkeypatch):
    """torch as releases 2.1 to 2.4 have it: torch.OutOfMemoryError came in 2.5 (torch.cuda's was there)."""
    import torch

    monkeypatch.delattr(torch, "OutOfMemoryError")


@pytest.mark.parametrize("torch_release", ["current", "before 2.5"])
def test_an_unforeseen_model_failure_is_a_model_error_that_keeps_its_cause(model, tiny_model_dir, monkeypatch,
                                                                           torch_release):
    """A torch error nobody foresaw (here a real shape mismatch in the decoder) reads clearly and keeps its
    traceback for the log, also with a torch older than 2.5."""
    import torch

    from core.errors import ModelError

    if torch_release == "before 2.5":
        without_out_of_memory_alias(monkeypatch)
    monkeypatch.setattr(model, "_decode", lambda features: features @ torch.ones(3, 3))
    with pytest.raises(ModelError, match="^The model failed while extracting mesh on cpu: mat1 and mat2 shapes "
                                         "cannot be multiplied") as caught:
        generate(model, tiny_model_dir / "input.png", GenerateSettings(resolution=32))
    assert type(caught.value.__cause__) is RuntimeError

