import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.measure import marching_cubes

from core.errors import Cancelled, InputError, ModelError
from core.extract import BATCH_POINTS, CoarseToFine, ExtractionStats, density_grid, extract_mesh
from tests.meshdiff import compare, surface_points

THRESHOLD = 25.0
RADIUS = 0.87


def signed_volume(vertices, faces) -> float:
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def gray(points):
    return torch.full((len(points), 3), 0.5)


def density_from_depth(depth, slope):
    """TripoSR-like density: 25 at the surface, log-density linear in the depth (world units, > 0 inside)."""
    return lambda points: THRESHOLD * torch.exp((slope * depth(points)).clamp(max=20.0))


def sphere(centre, radius):
    centre = torch.tensor(centre)
    return lambda points: radius - (points - centre).norm(dim=1)


def box(centre, half_size):
    centre, half_size = torch.tensor(centre), torch.tensor(half_size)

    def depth(points):
        q = (points - centre).abs() - half_size
        return -(q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0))

    return depth


def union(*depths):
    return lambda points: torch.stack([depth(points) for depth in depths]).max(dim=0).values


def torus(major=0.5, minor=0.25):
    def depth(points):
        ring = points[:, :2].norm(dim=1) - major
        return minor - torch.sqrt(ring * ring + points[:, 2] ** 2)

    return depth


def grid_lookup(grid):
    """The fixture grid as a field, exact at the points of its own grid."""
    res = len(grid)
    values = torch.from_numpy(grid)

    def density(points):
        index = torch.round((points + RADIUS) / (2 * RADIUS) * (res - 1)).long().clamp(0, res - 1)
        return values[index[:, 0], index[:, 1], index[:, 2]]

    return density


def grid_interpolation(grid):
    """The fixture grid as a continuous field (trilinear), to sample it on finer grids."""
    volume = torch.from_numpy(grid)[None, None]

    def density(points):
        coords = (points / RADIUS).flip(1)[None, None, None]  # grid_sample wants (z, y, x) → (W, H, D)
        return F.grid_sample(volume, coords, mode="bilinear", align_corners=True).reshape(-1)

    return density


def coarse_indices(res, stride):
    return np.unique(np.r_[np.arange(0, res, stride), res - 1])


def both_meshes(density, res, config=True, color=gray):
    dense_stats, fast_stats = ExtractionStats(), ExtractionStats()
    dense = extract_mesh(density, color, resolution=res, coarse_to_fine=False, stats=dense_stats)
    fast = extract_mesh(density, color, resolution=res, coarse_to_fine=config, stats=fast_stats)
    return dense, fast, dense_stats, fast_stats


def assert_same_mesh(dense, fast):
    assert len(fast.vertices) == len(dense.vertices) and len(fast.faces) == len(dense.faces)
    np.testing.assert_array_equal(fast.vertices, dense.vertices)
    np.testing.assert_array_equal(fast.faces, dense.faces)


def careless_face_count(grid, stride):
    """Marching cubes restricted to the coarse cells whose corners straddle the threshold, nothing else."""
    res = len(grid)
    coarse = coarse_indices(res, stride)
    blocks = len(coarse) - 1
    above = grid[np.ix_(coarse, coarse, coarse)] > THRESHOLD
    corners = [above[x:x + blocks, y:y + blocks, z:z + blocks] for x, y, z in itertools.product((0, 1), repeat=3)]
    straddling = np.logical_or.reduce(corners) & ~np.logical_and.reduce(corners)
    block_of = np.minimum(np.arange(res - 1) // stride, blocks - 1)
    cells = np.zeros(grid.shape, bool)
    cells[1:, 1:, 1:] = straddling[np.ix_(block_of, block_of, block_of)]
    return len(marching_cubes(grid, THRESHOLD, mask=cells)[1])


# --- the fixture ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixture_grid(tiny_model_dir):
    return np.load(tiny_model_dir / "density_grid_32.npy")


def test_density_grid_reproduces_the_fixture_grid(fixture_grid):
    np.testing.assert_array_equal(density_grid(grid_lookup(fixture_grid), 32, RADIUS), fixture_grid)


def test_fixture_mesh_matches_reference(fixture_grid):
    mesh = extract_mesh(grid_lookup(fixture_grid), gray, resolution=32, coarse_to_fine=False)
    assert len(mesh.vertices) == 11_627 and len(mesh.faces) == 21_992
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(0.193490, abs=1e-4)  # outward winding
    assert mesh.vertices.min() >= -RADIUS - 1e-6 and mesh.vertices.max() <= RADIUS + 1e-6
    reference_vertices, _, _, _ = marching_cubes(fixture_grid, THRESHOLD)
    np.testing.assert_allclose(mesh.vertices, reference_vertices / 31 * 1.74 - 0.87, atol=1e-6)


@pytest.mark.parametrize("config", [True, CoarseToFine(strides=(8,)), CoarseToFine(strides=(5,))])
def test_coarse_to_fine_equals_dense_on_fixture_grid(fixture_grid, config):
    dense, fast, _, _ = both_meshes(grid_lookup(fixture_grid), 32, config)
    assert_same_mesh(dense, fast)


def test_grid_values_exactly_at_the_threshold_give_the_dense_mesh(fixture_grid):
    # A corner exactly at the threshold: the surface touches it, so the trace follows each face that has one.
    grid = np.where(np.abs(fixture_grid - THRESHOLD) < 1.0, np.float32(THRESHOLD), fixture_grid)
    assert (grid == THRESHOLD).sum() > 1_000
    dense, fast, _, _ = both_meshes(grid_lookup(grid), 32)
    assert_same_mesh(dense, fast)


@pytest.mark.parametrize("res", [79, 99])  # res − 1 not a multiple of the stride: a shorter last block
def test_coarse_to_fine_equals_dense_on_noisy_field(fixture_grid, res):
    dense, fast, dense_stats, fast_stats = both_meshes(grid_interpolation(fixture_grid), res)
    assert (res - 1) % CoarseToFine().strides[0] != 0
    assert len(dense.faces) > 100_000  # many open, tangled pieces reaching the grid edge
    assert_same_mesh(dense, fast)
    assert fast_stats.density_evaluations <= dense_stats.density_evaluations  # noise: nearly all of it is near



def test_tracing_the_surface_a_few_cells_at_a_time_gives_the_same_mesh(fixture_grid, monkeypatch):
    import core.extract

    density = grid_interpolation(fixture_grid)
    whole = extract_mesh(density, gray, resolution=64)
    monkeypatch.setattr(core.extract, "TRACE_CELLS", 7)  # many small parts per frontier, the last one shorter
    assert_same_mesh(whole, extract_mesh(density, gray, resolution=64))


# --- smooth and thin shapes -------------------------------------------------------------------------------

def test_coarse_to_fine_equals_dense_on_smooth_torus_at_256():
    dense, fast, dense_stats, fast_stats = both_meshes(density_from_depth(torus(), slope=40.0), 256)
    assert len(dense.faces) > 250_000
    assert_same_mesh(dense, fast)
    assert signed_volume(fast.vertices, fast.faces) == pytest.approx(2 * np.pi**2 * 0.5 * 0.25**2, rel=0.01)
    assert dense_stats.density_evaluations == 256**3
    assert fast_stats.density_evaluations < dense_stats.density_evaluations / 5
    assert 0 < fast_stats.refined_blocks < fast_stats.total_blocks


def test_evaluations_follow_the_surface():
    # Beyond the stride-4 lattice (33³ points here), about two evaluations per grid point the surface touches: the
    # trace evaluates the corners of the cells the surface crosses, and blocks beside a smooth surface are not
    # looked into.
    res = 128
    dense, fast, _, fast_stats = both_meshes(density_from_depth(torus(), slope=40.0), res)
    assert_same_mesh(dense, fast)
    points = surface_points(dense.vertices, res, RADIUS)
    assert points == 45_048 and fast_stats.density_evaluations == 123_302
    assert (fast_stats.density_evaluations - len(coarse_indices(res, 4)) ** 3) / points < 2.0


def test_a_nearly_flat_field_is_refined_only_near_its_surface():
    # Random-weight TripoSR fields vary by a few percent over the whole volume: every coarse sample lies within
    # the margin of the threshold, so only the slope term keeps the fine pass near the surface.
    res, slope = 128, 0.02
    dense, fast, dense_stats, fast_stats = both_meshes(density_from_depth(sphere((0.1, 0.0, -0.1), 0.45), slope), res)
    assert slope * 2 * RADIUS < CoarseToFine().margin  # the margin alone would refine every block
    assert_same_mesh(dense, fast)
    assert fast_stats.density_evaluations < dense_stats.density_evaluations / 5


def thin_plate_scene(config, res, attached, slope_per_margin):
    """A sphere and a plate lying between two coarse sample planes, thinner than the coarse spacing."""
    cell = 2 * RADIUS / (res - 1)
    x_plane = coarse_indices(res, config.strides[0])[len(coarse_indices(res, config.strides[0])) // 2 + 2]
    plate_x = -RADIUS + (x_plane + config.strides[0] / 2) * cell
    half_thickness = config.strides[0] / 4 * cell  # leaves stride/4 cells between the plate and each coarse plane
    gap = config.strides[0] / 2 * cell - half_thickness
    ball = sphere((plate_x - 0.2, 0.0, 0.0), 0.3) if attached else sphere((-0.45, 0.0, 0.0), 0.3)
    plate = box((plate_x, 0.0, 0.0), (half_thickness, 0.5, 0.5))
    slope = slope_per_margin * config.margin / gap
    return density_from_depth(union(ball, plate), slope), slope * gap


@pytest.mark.parametrize("config", [CoarseToFine(), CoarseToFine(strides=(8,))])
def test_thin_plate_attached_to_a_body_is_kept(config):
    res = 96
    density, log_gap_at_coarse_planes = thin_plate_scene(config, res, attached=True, slope_per_margin=4.0)
    assert log_gap_at_coarse_planes > config.margin  # only the flood fill can find the plate's far part
    grid = density_grid(density, res, RADIUS)
    dense, fast, _, _ = both_meshes(density, res, config)
    assert careless_face_count(grid, config.strides[0]) < len(dense.faces) - 5_000
    assert_same_mesh(dense, fast)


@pytest.mark.parametrize("config", [CoarseToFine(), CoarseToFine(strides=(8,))])
def test_separate_thin_plate_is_kept_within_the_margin(config):
    res = 96
    density, log_gap_at_coarse_planes = thin_plate_scene(config, res, attached=False, slope_per_margin=0.6)
    assert log_gap_at_coarse_planes < config.margin
    grid = density_grid(density, res, RADIUS)
    dense, fast, _, _ = both_meshes(density, res, config)
    assert careless_face_count(grid, config.strides[0]) < len(dense.faces) - 5_000
    assert_same_mesh(dense, fast)

    # The documented limit: with no margin, a separate piece no coarse sample sees is lost.
    blind = extract_mesh(density, gray, resolution=res, coarse_to_fine=CoarseToFine(config.strides, margin=0.0))
    assert len(blind.faces) < len(dense.faces) - 5_000


def test_separate_plate_between_the_finer_samples_is_kept():
    # A plate thinner than one cell, centred between two planes of the second level's samples (stride 2) inside
    # a coarse block: only the finer level's margin (half the coarse one) can see it.
    config, res = CoarseToFine(strides=(4, 2)), 96
    cell = 2 * RADIUS / (res - 1)
    x_plane = coarse_indices(res, 4)[len(coarse_indices(res, 4)) // 2 + 2]
    half_thickness, gap = 0.25 * cell, 0.75 * cell  # grid plane x_plane + 1 runs through it, x_plane + 2 does not
    fine_margin = config.margin * 2 / 4
    slope = 0.8 * fine_margin / gap
    plate = box((-RADIUS + (x_plane + 1) * cell, 0.0, 0.0), (half_thickness, 0.5, 0.5))
    density = density_from_depth(union(sphere((-0.45, 0.0, 0.0), 0.3), plate), slope)
    dense, fast, _, _ = both_meshes(density, res, config)
    blind = extract_mesh(density, gray, resolution=res, coarse_to_fine=CoarseToFine(strides=(4, 2), margin=0.0))
    assert len(blind.faces) < len(dense.faces) - 5_000
    assert_same_mesh(dense, fast)


def test_what_coarse_to_fine_may_miss_is_whole_separate_pieces_between_its_samples():
    # The documented bound on any difference: the fast mesh is the dense mesh minus whole separate pieces, and
    # only pieces that lie between the samples, where the field stays further than the margin below the
    # threshold. Here: two specks around odd grid points and a plate thinner than a cell but 6 cells wide on an
    # odd grid plane (like the sliver the benchmark's field has), all steep; and a speck on a coarse sample.
    res = 64
    cell = 2 * RADIUS / (res - 1)

    def at(*index):
        return tuple(-RADIUS + i * cell for i in index)

    hidden = [sphere(at(41, 13, 21), 0.45 * cell), sphere(at(45, 51, 33), 0.45 * cell),
              box(at(37, 30, 30), (0.25 * cell, 3 * cell, 3 * cell))]
    seen = sphere(at(20, 44, 44), 0.45 * cell)
    assert 20 in coarse_indices(res, CoarseToFine().strides[0]) and 44 in coarse_indices(res, 4)
    slope = 3.0 / (0.75 * cell)  # 3 log-units at the nearest samples: far beyond the margin
    density = density_from_depth(union(sphere((-0.4, 0.0, 0.0), 0.3), seen, *hidden), slope)
    dense, fast, _, _ = both_meshes(density, res)

    diff = compare(dense.vertices, dense.faces, fast.vertices, fast.faces, cell)
    assert diff.extra_faces == 0 and diff.partial_pieces == 0
    assert len(diff.missed_faces) == len(hidden)
    assert len(fast.faces) == len(dense.faces) - sum(diff.missed_faces)
    plate = max(diff.missed_extents, key=lambda extent: extent[1])
    assert plate[0] < 2 and min(plate[1:]) >= 5  # around one grid plane in x, wide in y and z


@pytest.mark.filterwarnings("error")
def test_densities_that_overflow_to_infinity_change_nothing():
    # exp(raw − 1) overflows float32 for raw > 89: a field that does inside a sphere's core still gives the
    # dense mesh, silently.
    base = density_from_depth(sphere((0.0, 0.1, 0.0), 0.5), slope=40.0)

    def density(points):
        values = base(points)
        return torch.where(values > 1e6, torch.inf, values)

    dense, fast, _, _ = both_meshes(density, 64)
    assert np.isfinite(dense.vertices).all()
    assert_same_mesh(dense, fast)


# --- mesh properties --------------------------------------------------------------------------------------

@pytest.mark.parametrize("coarse_to_fine", [False, True])
def test_faces_point_outward_and_colours_come_from_the_vertices(coarse_to_fine):
    batch_sizes = []

    def color(points):
        batch_sizes.append(len(points))
        return (points + RADIUS) / (2 * RADIUS)

    mesh = extract_mesh(density_from_depth(sphere((0.1, -0.2, 0.05), 0.4), 30.0), color, resolution=64,
                        coarse_to_fine=coarse_to_fine)
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * np.pi * 0.4**3, rel=0.02)
    a, b, c = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", normals, (a + b + c) / 3 - [0.1, -0.2, 0.05]) > 0).all()
    np.testing.assert_allclose(mesh.colors, (mesh.vertices + RADIUS) / (2 * RADIUS), atol=1e-6)
    assert sum(batch_sizes) == len(mesh.vertices)


def test_density_grid_axes_and_batches():
    batch_sizes = []

    def density(points):
        batch_sizes.append(len(points))
        return points[:, 0] + 10 * points[:, 1] + 100 * points[:, 2]

    res = 70
    grid = density_grid(density, res, 0.5)
    axis = np.linspace(0, 1, res, dtype=np.float32) * 1.0 - 0.5
    expected = axis[:, None, None] + 10 * axis[None, :, None] + 100 * axis[None, None, :]
    np.testing.assert_allclose(grid, expected, atol=1e-4)
    assert max(batch_sizes) <= BATCH_POINTS and sum(batch_sizes) == res**3


def test_coarse_to_fine_calls_stay_bounded():
    batch_sizes = []
    field = density_from_depth(torus(), 40.0)

    def density(points):
        batch_sizes.append(len(points))
        return field(points)

    extract_mesh(density, gray, resolution=128)
    assert max(batch_sizes) <= BATCH_POINTS


# --- errors and progress ----------------------------------------------------------------------------------

@pytest.mark.parametrize("coarse_to_fine", [False, True])
@pytest.mark.parametrize("value, advice", [(1.0, "lower the threshold"), (1000.0, "raise the threshold")])
def test_no_surface_is_a_clear_error(coarse_to_fine, value, advice):
    def constant(points):
        return torch.full((len(points),), value)

    with pytest.raises(InputError, match=f"No surface found at threshold 25.*{advice}"):
        extract_mesh(constant, gray, resolution=40, coarse_to_fine=coarse_to_fine)


@pytest.mark.parametrize(
    "settings",
    [dict(resolution=1), dict(resolution=5000), dict(resolution=32.5), dict(resolution=True),
     dict(threshold=0.0), dict(threshold=float("nan")), dict(radius=-1.0),
     dict(coarse_to_fine=CoarseToFine(strides=(0,))), dict(coarse_to_fine=CoarseToFine(strides=())),
     dict(coarse_to_fine=CoarseToFine(strides=(4, 3))), dict(coarse_to_fine=CoarseToFine(strides=(2, 4))),
     dict(coarse_to_fine=CoarseToFine(margin=-1.0))],
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(InputError):
        extract_mesh(density_from_depth(sphere((0, 0, 0), 0.4), 30.0), gray, **settings)


@pytest.mark.parametrize(
    "density, message",
    [(lambda p: torch.full((len(p),), float("nan")), "NaN densities"),
     (lambda p: torch.ones(len(p), 2), "returned shape")],
)
def test_broken_model_output_is_a_model_error(density, message):
    with pytest.raises(ModelError, match=message):
        extract_mesh(density, gray, resolution=16)


@pytest.mark.parametrize("coarse_to_fine", [False, True])
def test_progress_rises_to_one_and_can_cancel(coarse_to_fine):
    density = density_from_depth(sphere((0, 0, 0), 0.5), 30.0)
    seen = []
    extract_mesh(density, gray, resolution=96, coarse_to_fine=coarse_to_fine, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3

    def cancel(fraction):
        if fraction > 0.01:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        extract_mesh(density, gray, resolution=96, coarse_to_fine=coarse_to_fine, progress=cancel)


def test_progress_is_reported_after_every_batch_of_evaluations(monkeypatch):
    # The worker cancels inside the progress callback: a long extraction must reach it after every batch of
    # density queries, not only between its steps (a 256³ noisy field spends many batches in one step).
    monkeypatch.setattr("core.extract.BATCH_POINTS", 4096)  # many batches from a small field
    density = density_from_depth(torus(), slope=40.0)
    queries_since_progress, most = [0], [0]

    def counting_density(points):
        queries_since_progress[0] += 1
        most[0] = max(most[0], queries_since_progress[0])
        return density(points)

    def progress(fraction):
        queries_since_progress[0] = 0

    stats = ExtractionStats()
    extract_mesh(counting_density, gray, resolution=128, threshold=THRESHOLD, radius=RADIUS, progress=progress,
                 stats=stats)
    assert stats.density_evaluations > 20 * 4096  # many batches in all
    assert most[0] == 1


def test_slope_and_bend_maps_equal_each_blocks_own_4x4x4_neighbourhood():
    # The maps are made a slab at a time with sliding maxima; judged block by block from its own 4×4×4 lattice
    # points they must be the same numbers, non-numbers (unevaluated points, log 0, inf − inf) skipped alike.
    from core.extract import _slope_and_bend

    rng = np.random.default_rng(3)
    size = 12  # blocks per axis; lattice points size + 1, padded by a layer of NaN all round
    values = np.full((size + 3,) * 3, np.nan, np.float32)
    values[1:-1, 1:-1, 1:-1] = rng.lognormal(3.0, 2.0, (size + 1,) * 3)
    lattice = values[1:-1, 1:-1, 1:-1]
    lattice[rng.random(lattice.shape) < 0.2] = np.nan  # not evaluated
    lattice[:4, :4, :4] = np.nan  # a corner with nothing evaluated: slope and bend 0
    lattice[11, 11, 11] = np.inf  # an overflowed density: infinite steps
    lattice[11, 2, 6] = 0.0  # log → −inf
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
        slope, bend = _slope_and_bend(logs)
        largest = np.zeros((2, 3) + (size,) * 3, np.float32)  # order, axis, block
        for block in itertools.product(range(size), repeat=3):
            cube = logs[tuple(slice(b, b + 4) for b in block)]
            for order, axis in itertools.product((1, 2), range(3)):
                step = np.fmax.reduce(np.abs(np.diff(cube, order, axis=axis)), axis=None)
                largest[(order - 1, axis) + block] = 0 if np.isnan(step) else step
    expected_slope = np.sqrt(largest[0, 0] ** 2 + largest[0, 1] ** 2 + largest[0, 2] ** 2)
    expected_bend = (largest[1, 0] + largest[1, 1] + largest[1, 2]) / 8
    assert slope.shape == bend.shape == (size,) * 3
    np.testing.assert_array_equal(slope, expected_slope)
    np.testing.assert_array_equal(bend, expected_bend)
    assert np.isinf(slope).any() and (slope == 0).any() and np.isfinite(slope).any()  # all three kinds occurred


def test_a_field_judged_in_many_slabs_gives_the_same_mesh(monkeypatch):
    import core.extract

    density = density_from_depth(lambda p: 0.3 + 0.1 * torch.sin(9 * p[:, 0]) * torch.cos(7 * p[:, 1])
                                 - p.norm(dim=1), 40.0)
    whole = extract_mesh(density, gray, resolution=96)
    monkeypatch.setattr(core.extract, "JUDGE_VALUES", 1)  # a slab per layer of blocks …
    monkeypatch.setattr(core.extract, "JUDGE_BLOCKS", 7)  # … judged 7 blocks at a time
    sliced = extract_mesh(density, gray, resolution=96)
    assert len(whole.faces) > 1000
    np.testing.assert_array_equal(sliced.vertices, whole.vertices)
    np.testing.assert_array_equal(sliced.faces, whole.faces)
