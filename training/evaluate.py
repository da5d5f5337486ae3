"""Evaluate a model (any official-layout folder) on held-out synthetic objects or on a folder of (image, mesh)
pairs; prints a per-class table and writes the numbers as JSON.

    python -m training.evaluate models/demo --synthetic 100 --json eval.json
    python -m training.evaluate /path/to/model --pairs folder/ --json eval.json

Metrics per object (TripoSR's frame; meshes compared after centring each on its bounding box and scaling its
longest side to 1, never rotated, so orientation is judged):
- chamfer: mean of the two mean nearest-neighbour distances between 10k surface samples of each mesh;
- f@τ: F-score at τ = 0.02, 0.05, 0.1 (precision: predicted samples within τ of the truth; recall: the reverse);
- normal consistency: mean |cos| between each sample's normal and its nearest neighbour's, both ways;
- colour error: mean absolute RGB difference between each true sample and its nearest predicted one;
- volume IoU: the field itself (density > threshold) against the true inside/outside on a 64³ grid in ±0.87;
- silhouette IoU: the predicted mesh seen from the input camera against the input's object mask, and the mirrored
  control against the mask flipped left-right (a model that ignores orientation scores the same on both);
- hole open (tori only): 1 when the field is below the threshold all along the torus's axis through its hole.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree

from core.extract import extract_mesh, grid_axis
from core.errors import InputError
from core.weights import load_model

from . import camera, data, shapes
from .meshes import MeshScene

F_THRESHOLDS = (0.02, 0.05, 0.1)
SURFACE_SAMPLES = 10_000
IOU_GRID = 64
SILHOUETTE_SIZE = 128
EVAL_SEED = 1  # the held-out split: its own generator stream ("eval"), never drawn by training ("train")


def normalise(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Points moved and scaled as the bounding box of `reference` (their mesh's vertices) to centre 0, longest
    side 1."""
    low, high = reference.amin(0), reference.amax(0)
    return (points - (low + high) / 2) / (high - low).max().clamp(min=1e-9)


def surface_metrics(pred: MeshScene, truth: MeshScene, generator: torch.Generator) -> dict:
    # Both meshes sampled with the same random numbers: identical meshes give identical samples (chamfer 0).
    seed = int(torch.randint(1 << 62, (1,), generator=generator))
    pred_points, pred_normals, pred_colors = pred.surface_samples(SURFACE_SAMPLES, torch.Generator().manual_seed(seed))
    true_points, true_normals, true_colors = truth.surface_samples(SURFACE_SAMPLES,
                                                                   torch.Generator().manual_seed(seed))
    pred_points = normalise(pred_points, pred.vertices).numpy()
    true_points = normalise(true_points, truth.vertices).numpy()
    to_truth, nearest_truth = cKDTree(true_points).query(pred_points)
    to_pred, nearest_pred = cKDTree(pred_points).query(true_points)
    metrics = {"chamfer": float((to_truth.mean() + to_pred.mean()) / 2)}
    for tau in F_THRESHOLDS:
        precision, recall = (to_truth < tau).mean(), (to_pred < tau).mean()
        metrics[f"f@{tau}"] = float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0
    cos_pred = (pred_normals * true_normals[nearest_truth]).sum(-1).abs().mean()
    cos_true = (true_normals * pred_normals[nearest_pred]).sum(-1).abs().mean()
    metrics["normal_consistency"] = float((cos_pred + cos_true) / 2)
    metrics["color_error"] = float((true_colors - pred_colors[nearest_pred]).abs().mean())
    return metrics


def silhouette(scene: MeshScene, size: int = SILHOUETTE_SIZE, supersampling: int = 4) -> np.ndarray:
    """Object mask (size, size) bool of a mesh seen from the input camera: its projected triangles filled at
    `supersampling`× the size (Pillow also fills a polygon's outline pixels, a bias that shrinks with the pixel),
    then pixels at least half covered."""
    fine = size * supersampling
    uv = camera.project(scene.vertices)
    pixels = torch.stack([(uv[:, 0] + 1) / 2 * fine, (1 - uv[:, 1]) / 2 * fine], dim=-1).numpy() - 0.5
    picture = Image.new("1", (fine, fine))
    draw = ImageDraw.Draw(picture)
    for face in scene.faces.numpy():
        draw.polygon([tuple(pixels[i]) for i in face], fill=1)
    coverage = np.asarray(picture, dtype=np.float32).reshape(size, supersampling, size, supersampling).mean((1, 3))
    return coverage >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def silhouette_ious(pred: MeshScene, mask: np.ndarray) -> dict:
    predicted = silhouette(pred, mask.shape[0])
    return {"silhouette_iou": iou(predicted, mask), "mirrored_iou": iou(predicted, mask[:, ::-1])}


def grid_points(resolution: int = IOU_GRID, radius: float = data.RADIUS) -> torch.Tensor:
    axis = grid_axis(resolution, radius)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def truth_mesh(scene, resolution: int = 128) -> MeshScene:
    """The surface of an analytic shape as a mesh (core's marching cubes on a density made from its SDF)."""
    if isinstance(scene, MeshScene):
        return scene
    mesh = extract_mesh(lambda p: 25.0 * torch.exp(-60.0 * scene.sdf(p)), scene.albedo, resolution=resolution,
                        threshold=25.0, coarse_to_fine=False)
    return MeshScene(mesh.vertices, mesh.faces, mesh.colors, scene.label)


def evaluate_one(model, image: torch.Tensor, truth, mask: np.ndarray, resolution: int, threshold: float,
                 generator: torch.Generator) -> dict:
    code = model.encode(image[None])[0]
    occupied = model.grid_density(code, grid_axis(IOU_GRID, model.config.renderer.radius))
    index = torch.stack(torch.meshgrid(*[torch.arange(IOU_GRID)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    predicted_inside = (occupied(index) > threshold).numpy()
    metrics = {"volume_iou": iou(predicted_inside, truth.occupancy(grid_points()).numpy()),
               "hole_open": hole_open(model, code, truth, threshold)}
    try:
        mesh = model.extract_mesh(code, resolution=resolution, threshold=threshold)
    except InputError:  # no surface at the threshold
        mesh = None
    if mesh is None or len(mesh.faces) == 0:
        return {**metrics, "chamfer": math.nan, **{f"f@{t}": 0.0 for t in F_THRESHOLDS}, "normal_consistency": 0.0,
                "color_error": math.nan, "silhouette_iou": 0.0, "mirrored_iou": 0.0}
    pred = MeshScene(mesh.vertices, mesh.faces, mesh.colors)
    return {**metrics, **surface_metrics(pred, truth_mesh(truth), generator), **silhouette_ious(pred, mask)}


def hole_open(model, code, truth, threshold: float) -> float:
    """For a single torus: 1.0 if the predicted density stays below the threshold at 9 points along its axis
    through the hole (centre ± the tube radius), else 0.0; NaN for anything else."""
    if not isinstance(truth, shapes.Shape) or truth.label != "torus":
        return math.nan
    torus = truth.primitives[0]
    steps = torch.linspace(-1, 1, 9)[:, None] * float(torus.size[1])
    density, _ = model.query(code, torus.position + steps * torus.rotation[:, 2])
    return float((density < threshold).all())


def synthetic_items(count: int, config: data.DataConfig, seed: int = EVAL_SEED):
    """(label, model input, truth scene, input mask) of held-out object i: classes in turn."""
    dataset = data.SyntheticObjects(config, seed=seed, split="eval", classes=shapes.CLASSES)
    for index in range(count):
        with data.one_thread():
            shape = dataset.shape(index)
            rgba = data.render(shape, SILHOUETTE_SIZE)
            image = data.model_input(rgba, config)
        yield shape.label, image, shape, rgba[..., 3] > 0.5


def pair_items(folder, config: data.DataConfig):
    from .folders import ImageMeshPairs

    dataset = ImageMeshPairs(folder, config)
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        yield scene.label, dataset.image(index), scene, silhouette(scene)


def evaluate(model, items, resolution: int = 128, threshold: float = 25.0, log=None) -> dict:
    """→ {"objects": [{label, metrics...}], "classes": {label: mean metrics}, "all": mean metrics}."""
    rows = []
    for number, (label, image, truth, mask) in enumerate(items):
        generator = torch.Generator().manual_seed(number)
        rows.append({"label": label, **evaluate_one(model, image, truth, mask, resolution, threshold, generator)})
        if log:
            log(f"{number + 1}: {label} " + " ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k != "label"))
    classes = {label: _mean([r for r in rows if r["label"] == label]) for label in dict.fromkeys(r["label"]
                                                                                                 for r in rows)}
    return {"objects": rows, "classes": classes, "all": _mean(rows)}


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "label"]
    means = {k: float(np.nanmean([r[k] for r in rows])) if any(not math.isnan(r[k]) for r in rows) else math.nan
             for k in keys}
    return {"count": len(rows), **means}


COLUMNS = ("volume_iou", "f@0.05", "f@0.1", "chamfer", "normal_consistency", "color_error", "silhouette_iou",
           "mirrored_iou", "hole_open")


def table(results: dict) -> str:
    """Markdown table: one row per class, then all."""
    lines = ["| class | n | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for label, means in list(results["classes"].items()) + [("**all**", results["all"])]:
        cells = ("–" if math.isnan(means[c]) else f"{means[c]:.3f}" for c in COLUMNS)
        lines.append(f"| {label} | {means['count']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a TripoSR-architecture model.")
    parser.add_argument("model", help="model folder (config.yaml + model.ckpt) or hub id")
    parser.add_argument("--synthetic", type=int, default=100, help="held-out synthetic objects (default 100)")
    parser.add_argument("--pairs", type=Path, help="a folder of (image, mesh) pairs instead")
    parser.add_argument("--resolution", type=int, default=128, help="marching-cubes grid of the predicted mesh")
    parser.add_argument("--threshold", type=float, default=25.0)
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    model = load_model(args.model, device=args.device)
    config = data.DataConfig(cond_image_size=model.config.cond_image_size)
    items = pair_items(args.pairs, config) if args.pairs else synthetic_items(args.synthetic, config)
    started = time.perf_counter()
    results = evaluate(model, items, args.resolution, args.threshold, log=lambda line: print(line, flush=True))
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["set"] = str(args.pairs) if args.pairs else f"synthetic held-out, {args.synthetic} objects"
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
