"""Does reduced-precision encoding change the mesh? The same image is encoded in float32 and in a reduced precision
(bfloat16 on a CPU, float16 on CUDA), both fields are extracted, and the meshes compared: volume IoU (the inside
of the surface on a 128³ grid) and Chamfer distance (mean nearest-vertex distance both ways, in grid cells).
A precision may become `auto`'s choice only where, on a trained model, IoU ≥ 0.99 and Chamfer ≤ half a cell.

    python benchmarks/precision.py --model models/demo [--image examples/robot.png] [--precision bfloat16]
                                   [--device cpu] [--resolution 256]

Exits 0 when the bound holds, 1 when it does not.
"""

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.extract import grid_axis  # noqa: E402
from core.preprocess import prepare_image  # noqa: E402
from core.weights import load_model  # noqa: E402

IOU_BOUND = 0.99
CHAMFER_BOUND_CELLS = 0.5
IOU_RESOLUTION = 128


@contextlib.contextmanager
def encode_precision(model, precision: str):
    """model.encode_precision set to `precision` while inside, restored after."""
    previous, model.encode_precision = model.encode_precision, precision
    try:
        yield
    finally:
        model.encode_precision = previous


def encode(model, pixels: np.ndarray, precision: str) -> torch.Tensor:
    """Prepared pixels (H, W, 3) → one scene code, encoded in `precision`."""
    with encode_precision(model, precision):
        return model.encode(torch.from_numpy(pixels)[None])[0]


def inside(model, code: torch.Tensor, resolution: int, threshold: float) -> np.ndarray:
    """Whether each point of a resolution³ grid lies inside the surface: bool (resolution³,)."""
    axis = grid_axis(resolution, model.config.renderer.radius)
    density_at = model.grid_density(code, axis)
    index = torch.cartesian_prod(*[torch.arange(resolution)] * 3)
    return torch.cat([density_at(chunk) for chunk in index.split(1 << 18)]).cpu().numpy() > threshold


def volume_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def chamfer(vertices_a: np.ndarray, vertices_b: np.ndarray) -> float:
    """Mean distance from each vertex to the other mesh's nearest vertex, averaged over both directions."""
    there = cKDTree(vertices_b).query(vertices_a)[0].mean()
    back = cKDTree(vertices_a).query(vertices_b)[0].mean()
    return float((there + back) / 2)


def agreement(model, pixels: np.ndarray, precision: str, resolution: int = 256, threshold: float = 25.0) -> dict:
    """float32 against `precision` on one image, on the model's device."""
    codes = {name: encode(model, pixels, name) for name in ("float32", precision)}
    meshes = {name: model.extract_mesh(code, resolution, threshold) for name, code in codes.items()}
    cell = 2 * model.config.renderer.radius / (resolution - 1)
    insides = [inside(model, code, IOU_RESOLUTION, threshold) for code in codes.values()]
    result = {
        "precision": precision,
        "device": str(model.device),
        "code_max_diff": float((codes[precision] - codes["float32"]).abs().max()),
        "code_max": float(codes["float32"].abs().max()),
        "faces": [len(mesh.faces) for mesh in meshes.values()],
        "iou": volume_iou(*insides),
        "chamfer_cells": chamfer(*(mesh.vertices for mesh in meshes.values())) / cell,
    }
    result["passed"] = result["iou"] >= IOU_BOUND and result["chamfer_cells"] <= CHAMFER_BOUND_CELLS
    return result


def format_agreement(result: dict) -> str:
    verdict = "within" if result["passed"] else "OUTSIDE"
    return (f"{result['precision']} vs float32 on {result['device']}: scene codes differ by up to "
            f"{result['code_max_diff']:.2e} (largest code {result['code_max']:.3g}); faces {result['faces'][0]:,} vs "
            f"{result['faces'][1]:,}; volume IoU {result['iou']:.4f} (bound ≥ {IOU_BOUND}); Chamfer "
            f"{result['chamfer_cells']:.3f} cells (bound ≤ {CHAMFER_BOUND_CELLS}): {verdict} the bound")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder with config.yaml + model.ckpt (a trained model)")
    parser.add_argument("--image", default=str(REPO / "examples" / "robot.png"))
    parser.add_argument("--precision", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, allow_download=False)
    result = agreement(model, prepare_image(args.image), args.precision, args.resolution)
    print(format_agreement(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
