"""GPU check, for a machine with CUDA: parity of float32 CUDA with the CPU, the float16 bound, and image → mesh at
256³ and 512³ with peak GPU memory. A few minutes on one GPU.

    make gpu-check [MODEL=folder] [GPU_PYTHON=python-with-a-CUDA-build-of-torch]
    python benchmarks/gpu_check.py [--model FOLDER] [--image examples/robot.png]

Without --model it builds a full-size TripoSR with random weights (as bench.py does) and times extraction on the
calibrated smooth field, since random weights give noise; with a trained model it uses the image's own field and
also checks the float16 mesh against the float32 one (benchmarks/precision.py). Without CUDA it says so and exits
with status 3, having measured nothing.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import calibrated, calibration_for, raw_log_density, save_random_model  # noqa: E402
from core.preprocess import prepare_image  # noqa: E402
from core.weights import load_model  # noqa: E402
from precision import agreement, encode, format_agreement  # noqa: E402
from shared import smooth_scene_code  # noqa: E402

NO_CUDA_EXIT = 3
CODE_TOLERANCE = 1e-3  # float32 scene codes, CUDA vs CPU, absolute (codes of order 1–10; sums run in another order)
LOG_DENSITY_TOLERANCE = 1e-3  # float32 raw density (log units) at the same points, CUDA vs CPU
FLOAT16_CODE_BOUND = 2e-2  # float16 vs float32 scene codes on one device, relative to the largest code
PARITY_POINTS = 1 << 16


def no_cuda_message() -> str:
    return (f"No CUDA device: this PyTorch ({torch.__version__}) sees none, so the GPU check measured nothing. Run it "
            "on a machine with an NVIDIA GPU and a CUDA build of PyTorch: make gpu-check GPU_PYTHON=/path/to/python.")


def parity(model_a, model_b, pixels: np.ndarray) -> dict:
    """The same model on two devices, float32: scene codes and the raw log-density at random points."""
    codes = [encode(model, pixels, "float32") for model in (model_a, model_b)]
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(PARITY_POINTS, 3, generator=generator) * 2 - 1) * model_a.config.renderer.radius
    log_density = [raw_log_density(model, code, points) for model, code in zip((model_a, model_b), codes)]
    result = {"devices": f"{model_a.device} vs {model_b.device}",
              "code_max_diff": float((codes[0].cpu() - codes[1].cpu()).abs().max()),
              "log_density_max_diff": float((log_density[0] - log_density[1]).abs().max())}
    result["passed"] = (result["code_max_diff"] <= CODE_TOLERANCE
                        and result["log_density_max_diff"] <= LOG_DENSITY_TOLERANCE)
    return result


def precision_bound(model, pixels: np.ndarray, precision: str = "float16") -> dict:
    """A reduced-precision encode against float32 on the model's own device: scene codes, relative."""
    full, reduced = (encode(model, pixels, name) for name in ("float32", precision))
    relative = float((reduced - full).abs().max() / full.abs().max())
    return {"precision": precision, "device": str(model.device), "code_relative_diff": relative,
            "passed": relative <= FLOAT16_CODE_BOUND}


def image_to_mesh(model, pixels: np.ndarray, resolution: int, calibration=None) -> dict:
    """Encode + extract on the model's device, timed, with the peak GPU memory it took (None on a CPU)."""
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    code = model.encode(torch.from_numpy(pixels)[None])[0]
    if cuda:
        torch.cuda.synchronize()
    encoded = time.perf_counter()
    if calibration is None:
        mesh = model.extract_mesh(code, resolution)
    else:
        with calibrated(model, calibration):
            mesh = model.extract_mesh(smooth_scene_code(code.cpu()).to(model.device), resolution)
    if cuda:
        torch.cuda.synchronize()
    return {"resolution": resolution, "encode_s": encoded - started, "extract_s": time.perf_counter() - encoded,
            "faces": len(mesh.faces), "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def format_report(parity_result: dict, bound: dict, timings: list, mesh_check: dict | None, setup: str) -> str:
    lines = [f"GPU check: {setup}",
             f"parity, float32 {parity_result['devices']}: scene codes {parity_result['code_max_diff']:.2e} "
             f"(≤ {CODE_TOLERANCE:g}), log-density {parity_result['log_density_max_diff']:.2e} "
             f"(≤ {LOG_DENSITY_TOLERANCE:g}): {'pass' if parity_result['passed'] else 'FAIL'}",
             f"{bound['precision']} encode on {bound['device']}: scene codes differ by "
             f"{bound['code_relative_diff']:.2e} "
             f"of the largest (≤ {FLOAT16_CODE_BOUND:g}): {'pass' if bound['passed'] else 'FAIL'}"]
    if mesh_check:
        lines.append(format_agreement(mesh_check))
    header = f"{'image → mesh':14} {'encode':>9} {'extract':>9} {'total':>9} {'faces':>11} {'peak GPU memory':>16}"
    lines.append(header)
    for row in timings:
        peak = f"{row['peak_mb']:,.0f} MB" if row["peak_mb"] is not None else "—"
        lines.append(f"{str(row['resolution']) + '³':14} {row['encode_s']:>7.2f} s {row['extract_s']:>7.2f} s "
                     f"{row['encode_s'] + row['extract_s']:>7.2f} s {row['faces']:>11,} {peak:>16}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="folder with config.yaml + model.ckpt (default: a full-size random model)")
    parser.add_argument("--image", default=str(REPO / "examples" / "robot.png"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(no_cuda_message())
        sys.exit(NO_CUDA_EXIT)
    torch.backends.cudnn.allow_tf32 = False  # float32 means float32 for the parity check (convolutions included)
    with tempfile.TemporaryDirectory(prefix="image_to_mesh_gpu_") as tmp:
        folder = args.model
        if folder is None:
            folder = Path(tmp)
            save_random_model(folder)
        cpu, gpu = (load_model(folder, device=device, allow_download=False) for device in ("cpu", "cuda"))
        pixels = prepare_image(args.image)
        parity_result = parity(cpu, gpu, pixels)
        calibration = None if args.model else calibration_for(cpu, smooth_scene_code(encode(cpu, pixels, "float32")))
        del cpu
        bound = precision_bound(gpu, pixels)
        mesh_check = agreement(gpu, pixels, "float16") if args.model else None
        image_to_mesh(gpu, pixels, 128, calibration)  # warm-up: CUDA kernels and caches
        timings = [image_to_mesh(gpu, pixels, resolution, calibration) for resolution in (256, 512)]
    setup = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
             + (f"model {args.model}" if args.model else "full-size random weights, smooth calibrated field"))
    print(format_report(parity_result, bound, timings, mesh_check, setup))
    sys.exit(0 if parity_result["passed"] and bound["passed"] and (mesh_check or {"passed": True})["passed"] else 1)


if __name__ == "__main__":
    main()
