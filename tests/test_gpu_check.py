"""The GPU check's parts that need no GPU: parity and bound functions run CPU against CPU, the report's format, and
the plain no-CUDA exit."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
from core.preprocess import prepare_image  # noqa: E402
from core.weights import load_model  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return [load_model(tiny_model_dir, device="cpu", allow_download=False) for _ in range(2)]


@pytest.fixture(scope="module")
def pixels():
    return prepare_image(REPO / "examples" / "robot.png")


def test_parity_of_a_device_with_itself_is_exact(models, pixels):
    result = gpu_check.parity(*models, pixels)
    assert result == {"devices": "cpu vs cpu", "code_max_diff": 0.0, "log_density_max_diff": 0.0, "passed": True}


def test_parity_fails_when_the_weights_differ(tiny_model_dir, pixels):
    a, b = (load_model(tiny_model_dir, device="cpu", allow_download=False) for _ in range(2))
    with torch.no_grad():
        b.upsampler.bias.add_(0.01)
    result = gpu_check.parity(a, b, pixels)
    assert result["code_max_diff"] == pytest.approx(0.01, rel=1e-3) and not result["passed"]


def test_parity_holds_where_the_density_overflows(tiny_model_dir, pixels):
    a, b = (load_model(tiny_model_dir, device="cpu", allow_download=False) for _ in range(2))
    for model in (a, b):
        with torch.no_grad():
            model.decoder.layers[-1].bias[0] = 200.0  # exp(200) is inf in float32, as random full-size weights give
    assert torch.isinf(a.query(a.encode(torch.from_numpy(pixels)[None])[0], torch.zeros(1, 3))[0]).all()
    result = gpu_check.parity(a, b, pixels)
    assert result["log_density_max_diff"] == 0.0 and result["passed"]


def test_reduced_precision_bound_is_measured_against_float32(models, pixels):
    result = gpu_check.precision_bound(models[0], pixels, "bfloat16")
    assert 1e-4 < result["code_relative_diff"] < gpu_check.FLOAT16_CODE_BOUND and result["passed"]
    assert models[0].encode_precision == "auto"  # restored


def test_image_to_mesh_on_a_cpu_reports_no_gpu_memory(models, pixels):
    row = gpu_check.image_to_mesh(models[0], pixels, 32)
    assert row["resolution"] == 32 and row["faces"] > 1000 and row["peak_mb"] is None
    assert row["encode_s"] > 0 and row["extract_s"] > 0


def test_report_format():
    report = gpu_check.format_report(
        {"devices": "cpu vs cuda:0", "code_max_diff": 2.5e-5, "log_density_max_diff": 1.25e-4, "passed": True},
        {"precision": "float16", "device": "cuda:0", "code_relative_diff": 3.0e-3, "passed": True},
        [{"resolution": 256, "encode_s": 0.5, "extract_s": 1.25, "faces": 645_540, "peak_mb": 3210.4},
         {"resolution": 512, "encode_s": 0.5, "extract_s": 6.0, "faces": 2_600_000, "peak_mb": None}],
        None, "a GPU")
    assert report.splitlines() == [
        "GPU check: a GPU",
        "parity, float32 cpu vs cuda:0: scene codes 2.50e-05 (≤ 0.001), log-density 1.25e-04 (≤ 0.001): pass",
        "float16 encode on cuda:0: scene codes differ by 3.00e-03 of the largest (≤ 0.02): pass",
        "image → mesh      encode   extract     total       faces  peak GPU memory",
        "256³              0.50 s    1.25 s    1.75 s     645,540         3,210 MB",
        "512³              0.50 s    6.00 s    6.50 s   2,600,000                —",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_and_exits_with_its_own_status():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == gpu_check.NO_CUDA_EXIT == 3
    assert result.stdout.strip() == gpu_check.no_cuda_message()
    assert "No CUDA device" in result.stdout and torch.__version__ in result.stdout


def test_precision_agreement_of_identical_meshes():
    from precision import chamfer, volume_iou

    vertices = np.stack(np.meshgrid(*[np.arange(8) * 0.1] * 3), axis=-1).reshape(-1, 3)  # 0.1 apart
    assert chamfer(vertices, vertices) == 0.0 and chamfer(vertices, vertices + [0.01, 0, 0]) == pytest.approx(0.01)
    a = np.random.default_rng(0).random(1000) > 0.5
    assert volume_iou(a, a) == 1.0 and volume_iou(a, ~a) == 0.0
