"""Synthetic training data: exact ray casting, the inference picture pipeline, seeding, ground truth."""

import math

import numpy as np
import torch

from training import camera, data, shapes
from training.meshes import MeshScene

CONFIG = data.DataConfig(image_size=64, cond_image_size=64, occupancy_points=256, rays_per_view=32,
                         render_samples=8)


def one_primitive(kind, size, position=(0.0, 0.0, 0.0), color=(0.8, 0.1, 0.1)):
    primitive = shapes.Primitive(kind, torch.tensor(size), torch.eye(3), torch.tensor(position),
                                 torch.tensor([color, color]), torch.zeros(3))
    return shapes.Shape([primitive], kind)


def test_ray_caster_gives_the_exact_silhouette_of_a_sphere():
    sphere = one_primitive("sphere", [0.5], position=(0.0, 0.1, -0.05))
    size = 96
    mask = data.render(sphere, size)[..., 3] > 0
    u, v = camera.pixel_grid(size)
    origins, directions = camera.image_rays(u, v)
    centre = torch.tensor([0.0, 0.1, -0.05])
    # Distance from the sphere's centre to each pixel's ray, in closed form.
    offset = centre - origins
    distance = (offset - (offset * directions).sum(-1, keepdim=True) * directions).norm(dim=-1)
    expected = (distance < 0.5).numpy()
    undecidable = (distance - 0.5).abs().numpy() < 1e-3  # rays grazing the sphere within the tracer's tolerance
    assert expected.sum() > 1000 and undecidable.sum() < 60  # of about 230 rim pixels
    assert np.array_equal(mask[~undecidable], expected[~undecidable])


def test_a_primitive_seen_from_the_input_camera_lands_where_the_convention_says():
    # A small ball on +Y appears on the right of the picture, one on +Z at the top (camera on +X, Z up).
    right = data.render(one_primitive("sphere", [0.1], position=(0.0, 0.4, 0.0)), 32)[..., 3] > 0
    top = data.render(one_primitive("sphere", [0.1], position=(0.0, 0.0, 0.4)), 32)[..., 3] > 0
    rows, cols = np.nonzero(right)
    assert cols.min() > 16 and rows.min() < 16 < rows.max()
    rows, cols = np.nonzero(top)
    assert rows.max() < 16 and cols.min() < 16 < cols.max()


def test_signed_distances_are_exact_at_known_points():
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    box = shapes.sdf_local("box", torch.tensor([0.5, 0.5, 0.5]), points)
    torch.testing.assert_close(box, torch.tensor([-0.5, 0.5, 0.5, math.sqrt(0.5)]))
    torus = shapes.sdf_local("torus", torch.tensor([0.5, 0.1]), points)
    torch.testing.assert_close(torus, torch.tensor([0.4, 0.4, math.sqrt(1.25) - 0.1, math.sqrt(2) - 0.6]))
    cone = shapes.sdf_local("cone", torch.tensor([0.5, 0.5]), points[:3])  # base radius 0.5 at z = -0.5, tip z = 0.5
    # the centre is nearest the slanted side; (1, 0, 0) is nearest the side at (0.4, 0, -0.3); 0.5 above the tip
    torch.testing.assert_close(cone, torch.tensor([-0.5 / math.sqrt(5), math.sqrt(0.45), 0.5]))
    capsule = shapes.sdf_local("capsule", torch.tensor([0.2, 0.3]), points)
    torch.testing.assert_close(capsule, torch.tensor([-0.2, 0.8, 0.5, math.sqrt(2) - 0.2]))


def test_torus_volume_from_its_occupancy_matches_the_formula():
    torus = one_primitive("torus", [0.5, 0.2])
    generator = torch.Generator().manual_seed(0)
    points = shapes.cube_points(200_000, 0.75, generator)
    volume = torus.occupancy(points).float().mean() * 1.5**3
    assert abs(float(volume) - 2 * math.pi**2 * 0.5 * 0.2**2) < 0.01  # 0.395; Monte-Carlo error about 0.003


def test_samples_are_seeded_by_index_alone():
    dataset = data.SyntheticObjects(CONFIG, seed=3, batch_size=4)
    first, again, other = dataset[7], data.SyntheticObjects(CONFIG, seed=3, batch_size=4)[7], dataset[8]
    for key in first:
        assert torch.equal(torch.as_tensor(first[key]), torch.as_tensor(again[key])), key
    assert not torch.equal(first["image"], other["image"])
    assert not torch.equal(first["image"], data.SyntheticObjects(CONFIG, seed=4, batch_size=4)[7]["image"])


def test_the_input_picture_is_the_inference_pipeline_applied_to_the_render():
    dataset = data.SyntheticObjects(CONFIG, seed=0, batch_size=1)
    sample = dataset[2]
    rgba = data.render(dataset.shape(2), CONFIG.image_size)
    assert torch.equal(sample["image"], data.model_input(rgba, CONFIG))
    image = sample["image"].numpy()
    assert image.shape == (64, 64, 3)
    # prepare_image composites on 0.5 gray quantised by truncation (127/255) and frames the object at 0.85.
    assert np.allclose(image[0, 0], 127 / 255, atol=1e-6) and np.allclose(image[-1, -1], 127 / 255, atol=1e-6)
    foreground = np.abs(image - 127 / 255).max(-1) > 0.02
    rows, cols = np.flatnonzero(foreground.any(1)), np.flatnonzero(foreground.any(0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    assert abs(side / 64 - 0.85) <= 2 / 64


def test_framing_puts_the_object_at_the_foreground_ratio_before_prepare_image():
    shape = data.frame(one_primitive("box", [0.1, 0.3, 0.2], position=(0.1, 0.2, 0.3)), 0.85, size=64)
    mask = data.render(shape, 64)[..., 3] > 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert abs(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 - 0.85 * 64) <= 2
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1.5 and abs((cols[0] + cols[-1]) / 2 - 31.5) <= 1.5
    assert data.fits(shape)


def test_ground_truth_of_a_sample_agrees_with_its_shape():
    dataset = data.SyntheticObjects(CONFIG, seed=0, batch_size=1)
    sample, shape = dataset[5], dataset.shape(5)
    assert torch.equal(sample["occupancy"], (shape.sdf(sample["points"]) < 0).float())
    assert 0 < sample["occupancy"].mean() < 1
    # Input-view rays: opacity 1 exactly where the ray hits; misses are white.
    opacity, colors = sample["ray_opacity"][0], sample["ray_colors"][0]
    hit, _ = shape.raycast(sample["ray_origins"][0], sample["ray_directions"][0])
    assert torch.equal(opacity, hit.float())
    assert torch.equal(colors[~hit], torch.ones_like(colors[~hit]))


def test_curriculum_brings_in_compositions():
    config = data.DataConfig(composition_probability=0.5, curriculum_steps=100)
    dataset = data.SyntheticObjects(config, batch_size=2)
    assert dataset.composition_probability(0) == 0.0
    assert dataset.composition_probability(100) == 0.25  # step 50 of 100
    assert dataset.composition_probability(10_000) == 0.5


def cube_mesh(half=0.25, shift=(0.0, 0.0, 0.0)):
    corners = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return MeshScene(corners + torch.tensor(shift), faces, np.full((8, 3), 0.5, np.float32))


def test_mesh_scene_inside_outside_and_ray_hits_are_exact():
    cube = cube_mesh()
    inside = cube.winding_number(torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.2, 0.1], [0.3, 0.0, 0.0], [0.0, 0.0, 0.9]]))
    torch.testing.assert_close(inside.abs(), torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    origins, directions = camera.image_rays(torch.tensor([0.0, 0.9]), torch.tensor([0.0, 0.0]))
    hit, t = cube.raycast(origins, directions)
    assert hit.tolist() == [True, False]
    assert abs(float(t[0]) - (1.9 - 0.25)) < 1e-6


def test_mesh_folders_give_samples_like_the_synthetic_ones(tmp_path):
    from PIL import Image

    from core.mesh import Mesh
    from training.folders import ImageMeshPairs, MeshViews

    cube = cube_mesh(0.3)
    Mesh(cube.vertices.numpy(), cube.faces.numpy(), cube.colors.numpy()).save(tmp_path / "cube.ply")
    views = MeshViews(tmp_path, CONFIG)
    sample, scene = views[1], views.scene(1)
    assert sample["image"].shape == (64, 64, 3)
    assert torch.equal(sample["occupancy"], scene.occupancy(sample["points"]).float())
    assert 0 < sample["occupancy"].mean() < 1 and 0 < sample["ray_opacity"][0].mean() < 1
    assert data.fits(scene)

    rgba = data.render(cube, 64)
    Image.fromarray((rgba * 255).astype(np.uint8)).save(tmp_path / "cube.png")
    pairs = ImageMeshPairs(tmp_path, CONFIG)
    assert len(pairs) == 1
    sample = pairs[0]
    expected = data.model_input(np.asarray(Image.open(tmp_path / "cube.png"), np.float32) / 255, CONFIG)
    assert torch.equal(sample["image"], expected)
    torch.testing.assert_close(sample["occupancy"], (sample["points"].abs().amax(-1) < 0.3).float())
