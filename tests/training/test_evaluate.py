"""Evaluation metrics on cases with known answers."""

import math

import numpy as np
import torch

from core.extract import grid_axis
from training import data, evaluate
from training.meshes import MeshScene
from tests.training.test_data import cube_mesh, one_primitive


def test_volume_iou_of_two_boxes_on_the_evaluation_grid():
    a = one_primitive("box", [0.4, 0.3, 0.2])
    b = one_primitive("box", [0.4, 0.3, 0.2], position=(0.2, 0.0, 0.0))
    points = evaluate.grid_points()
    measured = evaluate.iou(a.occupancy(points).numpy(), b.occupancy(points).numpy())
    # Independently: the grid is a product of 1-D axes, so every count is a product of 1-D counts.
    axis = grid_axis(evaluate.IOU_GRID, data.RADIUS).numpy()
    x_a, x_b = np.abs(axis) < 0.4, np.abs(axis - 0.2) < 0.4
    yz = (np.abs(axis) < 0.3).sum() * (np.abs(axis) < 0.2).sum()
    expected = (x_a & x_b).sum() * yz / ((x_a | x_b).sum() * yz)
    assert measured == expected
    assert abs(expected - 0.6) < 0.03  # the continuous value: overlap 0.6 of 0.8, union 1.0


def test_identical_meshes_score_perfectly_and_a_shifted_copy_does_not():
    cube = cube_mesh(0.3)
    generator = torch.Generator().manual_seed(0)
    same = evaluate.surface_metrics(cube, cube, generator)
    assert same["chamfer"] == 0.0 and same["normal_consistency"] == 1.0 and same["color_error"] == 0.0
    assert all(same[f"f@{t}"] == 1.0 for t in evaluate.F_THRESHOLDS)
    # Normalisation (centre, longest side) makes a moved, scaled copy identical too; a different shape is not.
    moved = cube_mesh(0.15, shift=(0.2, -0.1, 0.0))
    assert evaluate.surface_metrics(moved, cube, generator)["f@0.02"] > 0.95
    flat = MeshScene(cube.vertices * torch.tensor([1.0, 1.0, 0.3]), cube.faces, cube.colors)
    assert evaluate.surface_metrics(flat, cube, generator)["f@0.05"] < 0.7


def test_chamfer_between_two_parallel_planes_is_their_distance():
    def square(z):
        corners = [[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z], [0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
        return MeshScene(corners, [[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]], np.zeros((8, 3), np.float32))

    # Two unit squares 0.5 apart, and two 1 apart: after normalisation (centred, longest side 1) their planes sit at
    # z = ±0.25 and ±0.5, so every sample is 0.25 from the other mesh (plus a sliver within the plane).
    metrics = evaluate.surface_metrics(square(0.5), square(1.0), torch.Generator().manual_seed(0))
    assert abs(metrics["chamfer"] - 0.25) < 0.01


def test_silhouette_iou_and_its_mirrored_control():
    # A cube on the right of the picture (+Y): its own mask matches, the mirrored mask does not overlap at all.
    cube = cube_mesh(0.15, shift=(0.0, 0.3, 0.0))
    rays_mask = data.render(cube, evaluate.SILHOUETTE_SIZE)[..., 3] > 0.5
    right = evaluate.silhouette_ious(cube, rays_mask)
    assert right["silhouette_iou"] > 0.97 and right["mirrored_iou"] == 0.0
    # A centred symmetric object scores the same on both: the control's point.
    centred = cube_mesh(0.2)
    mask = data.render(centred, evaluate.SILHOUETTE_SIZE)[..., 3] > 0.5
    both = evaluate.silhouette_ious(centred, mask)
    assert both["silhouette_iou"] == both["mirrored_iou"] > 0.97


def test_the_evaluation_runs_end_to_end_and_tables_per_class(tiny_model_dir):
    from core.weights import load_model

    model = load_model(tiny_model_dir, device="cpu")
    config = data.DataConfig(image_size=64, cond_image_size=model.config.cond_image_size)
    items = list(evaluate.synthetic_items(2, config))
    assert [label for label, *_ in items] == ["sphere", "box"]
    density = model.query(model.encode(items[0][1][None])[0], torch.zeros(1, 3))[0]
    results = evaluate.evaluate(model, items, resolution=32, threshold=float(density[0]) * 0.999)
    assert [r["label"] for r in results["objects"]] == ["sphere", "box"]
    assert set(results["classes"]) == {"sphere", "box"} and results["all"]["count"] == 2
    table = evaluate.table(results)
    assert table.splitlines()[2].startswith("| sphere | 1 |") and "**all** | 2" in table
    assert all(0 <= results["all"][k] <= 1 for k in ("volume_iou", "silhouette_iou", "mirrored_iou", "f@0.05"))
    assert not math.isnan(results["all"]["chamfer"])


def test_hole_open_reads_the_field_along_a_torus_axis(tiny_model_dir):
    from core.weights import load_model

    model = load_model(tiny_model_dir, device="cpu")
    code = model.encode(torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0)))[0]
    torus, box = one_primitive("torus", [0.4, 0.1]), one_primitive("box", [0.2, 0.2, 0.2])
    axis = torch.linspace(-0.1, 0.1, 9)[:, None] * torch.tensor([0.0, 0.0, 1.0])
    density, _ = model.query(code, axis)
    assert evaluate.hole_open(model, code, torus, float(density.max()) * 1.01) == 1.0
    assert evaluate.hole_open(model, code, torus, float(density.max()) * 0.99) == 0.0
    assert math.isnan(evaluate.hole_open(model, code, box, 25.0))


def test_the_command_evaluates_a_folder_of_pairs(tiny_model_dir, tmp_path, capsys):
    import json

    from PIL import Image

    from core.mesh import Mesh
    from core.weights import load_model

    cube = cube_mesh(0.3)
    Mesh(cube.vertices.numpy(), cube.faces.numpy(), cube.colors.numpy()).save(tmp_path / "cube.ply")
    Image.fromarray((data.render(cube, 64) * 255).astype(np.uint8)).save(tmp_path / "cube.png")
    model = load_model(tiny_model_dir, device="cpu")
    picture = data.model_input(data.render(cube, 64), data.DataConfig(cond_image_size=64))
    density = model.query(model.encode(picture[None])[0], torch.zeros(1, 3))[0]
    evaluate.main([str(tiny_model_dir), "--pairs", str(tmp_path), "--resolution", "32", "--threshold",
                   str(float(density[0]) * 0.999), "--json", str(tmp_path / "eval.json")])
    results = json.loads((tmp_path / "eval.json").read_text())
    assert [r["label"] for r in results["objects"]] == ["cube"] and results["all"]["count"] == 1
    assert 0 <= results["all"]["volume_iou"] <= 1 and "| cube | 1 |" in capsys.readouterr().out
