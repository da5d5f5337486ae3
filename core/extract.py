"""Density field → mesh: a density grid (dense, or coarse-to-fine with the same result), scikit-image marching
cubes, vertex colours.

The grid is TripoSR's: `resolution` points per axis from −radius to +radius, endpoints included, grid index
[i, j, k] ↔ world (x, y, z). Marching cubes runs on (density − threshold) at level 0, as the reference does.
"""

import functools
import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
from skimage.measure import marching_cubes

from .errors import InputError, ModelError
from .mesh import Mesh
from .settings import RESOLUTION

BATCH_POINTS = 1 << 16
CLOSURE_POINTS = 1 << 18  # block points gathered at once to be evaluated: bounds that step's working memory
JUDGE_VALUES = 1 << 18  # judging blocks: lattice values whose slope and bend maps are made at once …
JUDGE_BLOCKS = 1 << 15  # … and blocks judged at once; both bound that step's working memory
TRACE_CELLS = 1 << 15  # frontier cells traced at once: bounds the trace's working memory (about 200 bytes a cell)

Field = Callable[[torch.Tensor], torch.Tensor]
GridDensity = Callable[[torch.Tensor], Field]  # axis (R,) → density at grid indices (N, 3) int64
Progress = Optional[Callable[[float], None]]


@dataclass
class CoarseToFine:
    """Where the coarse-to-fine grid evaluates the field, so that the cost follows the surface.

    The field is first sampled every `strides[0]` grid points. Wherever two neighbouring samples lie on
    different sides of the threshold, the grid points between them are evaluated, and the cells around each grid
    edge the surface crosses seed a trace: a traced cell's corners are evaluated, and each of its faces the
    surface crosses leads into the next cell, until no new cell is reached. Marching cubes then runs on the
    traced cells only: every surface piece that crosses a line between two samples is traced whole, and nothing
    else is evaluated at full resolution. A block (stride³ grid cells) is looked into at the next stride, and at
    the last stride evaluated at every grid point, when a separate piece may hide in it: its corners are on one
    side, the nearest within `margin` of log(threshold) (TripoSR's density is exp(raw − 1), so these are the MLP's
    raw units; scaled by the stride at finer levels), and some grid point inside lies, from every corner, within
    `slope_factor` × the local slope × its distance of the threshold (the slope: the largest log-density step
    between neighbouring samples around the block, per axis, as a vector's length); or its corners straddle the
    threshold but the field bends more across it than it changes over half a cell, as noise does. So the mesh is
    the dense one minus, at most, whole separate pieces that lie between the samples (no sample inside them),
    where the samples around them stay further from the threshold than the margin and the slope allow, or beside
    a smooth traced surface: pieces thinner than the sample spacing in at least one direction, such as a steep
    speck or a sliver (tests/core/test_extract.py shows both; benchmarks/ counts them on full-size fields).
    """

    strides: tuple[int, ...] = (4, 2)
    margin: float = 0.5
    slope_factor: float = 1.0


@dataclass
class ExtractionStats:
    """Filled in by `extract_mesh(..., stats=ExtractionStats())`, for benchmarks and logs."""

    resolution: int = 0
    density_evaluations: int = 0
    color_evaluations: int = 0
    refined_blocks: int = 0  # coarse-to-fine: the grid cells marching cubes visits (the traced ones) …
    total_blocks: int = 0  # … of all grid cells
    grid_seconds: float = 0.0
    marching_cubes_seconds: float = 0.0
    color_seconds: float = 0.0


def grid_axis(resolution: int, radius: float) -> torch.Tensor:
    """World coordinates of the grid points along one axis, computed as the reference does (float32)."""
    return torch.linspace(0.0, 1.0, resolution, dtype=torch.float32) * (2.0 * radius) - radius


def density_grid(density_fn: Field, resolution: int, radius: float, *, grid_density: Optional[GridDensity] = None,
                 progress: Progress = None, stats: Optional[ExtractionStats] = None) -> np.ndarray:
    """Evaluate the field at every grid point: float32 (res, res, res), [i, j, k] ↔ world (x, y, z)."""
    resolution = _check_grid(resolution, radius)
    sampler = _GridSampler(density_fn, grid_density, resolution, radius, stats or ExtractionStats())
    grid = sampler.grid
    total = grid.size
    for start in range(0, total, BATCH_POINTS):
        sampler.evaluate(np.arange(start, min(start + BATCH_POINTS, total)))
        if progress:
            progress(min(start + BATCH_POINTS, total) / total)
    return grid


def extract_mesh(density_fn: Field, color_fn: Field, *, resolution: int = 256, threshold: float = 25.0,
                 radius: float = 0.87, coarse_to_fine: Union[bool, CoarseToFine] = True,
                 grid_density: Optional[GridDensity] = None, progress: Progress = None,
                 stats: Optional[ExtractionStats] = None) -> Mesh:
    """Mesh of the surface density == threshold, faces counter-clockwise seen from outside, colours from color_fn.

    density_fn(points (N, 3) float32) -> density (N,); color_fn(points) -> sRGB (N, 3) in [0, 1]; both are called
    with at most BATCH_POINTS points at a time. grid_density, if given, maps the grid's axis to a faster function
    of grid indices giving the same densities as density_fn at those points (TripoSR.grid_density).
    coarse_to_fine=True (or a CoarseToFine) evaluates the field only near the surface; the mesh is the same as
    with the dense grid (see CoarseToFine for what it cannot see).
    """
    resolution = _check_grid(resolution, radius)
    if not (_is_number(threshold) and threshold > 0):
        raise InputError(f"The threshold must be a positive number, got {threshold!r}.")
    stats = stats if stats is not None else ExtractionStats()
    stats.resolution = resolution
    report = _stage_progress(progress)

    started = time.perf_counter()
    if coarse_to_fine:
        config = coarse_to_fine if isinstance(coarse_to_fine, CoarseToFine) else CoarseToFine()
        _check_coarse_to_fine(config)
        sampler = _GridSampler(density_fn, grid_density, resolution, radius, stats, heartbeat=report.again)
        grid, cells = _coarse_to_fine_grid(sampler, threshold, config, report(0.0, 0.8))
    else:
        grid = density_grid(density_fn, resolution, radius, grid_density=grid_density, progress=report(0.0, 0.8),
                            stats=stats)
        cells = None
    stats.grid_seconds = time.perf_counter() - started

    started = time.perf_counter()
    vertices, faces = _marching_cubes(grid, threshold, cells)
    del grid, cells
    vertices = vertices / (resolution - 1) * (2.0 * radius) - radius
    faces = faces[:, ::-1]  # skimage winds this field's triangles inward
    report(0.8, 0.9)(1.0)
    stats.marching_cubes_seconds = time.perf_counter() - started

    started = time.perf_counter()
    colors = _colors(color_fn, vertices, report(0.9, 1.0), stats)
    stats.color_seconds = time.perf_counter() - started
    return Mesh(vertices, faces, colors)


class _GridSampler:
    """Evaluates the density at grid points given by flat index into `grid`, writing the values there. heartbeat
    is called after every batch: a long step still reports progress, which is also where a caller cancels."""

    def __init__(self, density_fn: Field, grid_density: Optional[GridDensity], resolution: int, radius: float,
                 stats: ExtractionStats, heartbeat=lambda: None):
        self.grid = np.full((resolution,) * 3, np.nan, np.float32)  # NaN = not evaluated yet
        self.flat = self.grid.reshape(-1)
        self.resolution = resolution
        self.axis = grid_axis(resolution, radius)
        self.density_at = grid_density(self.axis) if grid_density else None
        self.density_fn = density_fn
        self.stats = stats
        self.heartbeat = heartbeat

    def evaluate(self, flat_indices: np.ndarray) -> None:
        res = self.resolution
        for start in range(0, len(flat_indices), BATCH_POINTS):
            index = torch.from_numpy(flat_indices[start:start + BATCH_POINTS])
            index = torch.stack([index // (res * res), index // res % res, index % res], dim=1)
            if self.density_at:
                values = _call(self.density_at, index, (len(index),), "density")
            else:
                points = self.axis[index.reshape(-1)].view(-1, 3)
                values = _call(self.density_fn, points, (len(points),), "density")
            if np.isnan(values).any():
                raise ModelError("The model returned NaN densities: its weights or input may be broken.")
            self.flat[flat_indices[start:start + BATCH_POINTS]] = values
            self.stats.density_evaluations += len(index)
            self.heartbeat()


def _coarse_to_fine_grid(sampler: _GridSampler, threshold, config: CoarseToFine, progress):
    """Fills the sampler's grid with exact values at the corners of every cell of each traced surface piece;
    returns it and the marching-cubes mask of those cells (skimage's mask[i+1, j+1, k+1] selects cell (i, j, k))."""
    grid, res = sampler.grid, sampler.resolution
    lattices = [_Lattice(res, stride) for stride in config.strides]
    top = lattices[0]
    sampler.evaluate(np.ravel_multi_index(np.ix_(top.coords, top.coords, top.coords), grid.shape).ravel())
    seeds, search = [], None
    for level, lattice in enumerate(lattices):
        if search is not None:  # the near blocks of the coarser level, sampled at this level's stride
            parent = lattices[level - 1]
            _evaluate_closures(sampler, parent, np.argwhere(search), lattice.stride)
            parent_of = parent.block_of[lattice.coords[:-1]]
            search = search[np.ix_(parent_of, parent_of, parent_of)]
        blocks = np.argwhere(np.ones((lattice.blocks,) * 3, bool) if search is None else search)
        straddle, near = _judge_blocks(grid, lattice, blocks, threshold, config.margin * lattice.stride / top.stride,
                                       config.slope_factor, sampler.heartbeat)
        if search is None and not (straddle | near).any():
            raise _no_surface(grid, threshold)
        seeds.append(_crossing_cells(sampler, lattice, threshold))
        search = near
        progress(0.05 + 0.2 * (level + 1) / len(lattices))
    finest = lattices[-1]
    near_blocks = np.argwhere(search)
    _evaluate_closures(sampler, finest, near_blocks, 1)
    seeds.append(finest.cells(near_blocks).ravel())
    cells = _trace(sampler, np.concatenate(seeds), threshold, lambda fraction: progress(0.25 + 0.75 * fraction))
    sampler.stats.refined_blocks, sampler.stats.total_blocks = int(cells.sum()), (res - 1) ** 3
    low = np.nanmin(grid)
    for layer in grid:  # points no traced cell has as a corner: any finite value (marching cubes never reads it)
        np.copyto(layer, low, where=np.isnan(layer))
    return grid, cells.reshape(grid.shape)


def _crossing_cells(sampler: _GridSampler, lattice: "_Lattice", threshold) -> np.ndarray:
    """Ids (flat index of the lowest corner) of grid cells the surface crosses, found along the lattice edges
    whose evaluated ends lie on different sides of the threshold: the grid points between their ends are
    evaluated, and each grid edge on them that the surface crosses gives the four cells around it."""
    res, coords = sampler.resolution, lattice.coords
    values = sampler.grid[np.ix_(coords, coords, coords)]
    above, on, known = values > threshold, values == threshold, ~np.isnan(values)
    del values
    offsets = (res * res, res, 1)
    found = [np.zeros(0, np.int64)]
    for axis, offset in enumerate(offsets):
        low, high = [slice(None)] * 3, [slice(None)] * 3
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        low, high = tuple(low), tuple(high)
        starts = np.argwhere(known[low] & known[high] & ((above[low] != above[high]) | on[low] | on[high]))
        if not len(starts):
            continue
        points = coords[starts]  # (E, 3) grid coordinates of each crossed lattice edge's low end
        length = coords[starts[:, axis] + 1] - points[:, axis]
        origin = (points[:, 0] * res + points[:, 1]) * res + points[:, 2]
        along = origin[:, None] + np.minimum(np.arange(lattice.stride + 1), length[:, None]) * offset  # (E, s + 1)
        sampler.evaluate(_unique_unevaluated(sampler.flat, along[:, 1:-1].ravel()))
        crossed = _crossed(sampler.flat[along], threshold)
        edges = along[:, :-1][crossed]  # low ends of the crossed grid edges
        first, second = (o for a, o in enumerate(offsets) if a != axis)
        for a, b in itertools.product((0, 1), repeat=2):  # the four cells sharing a grid edge
            found.append(_inside(edges - a * first - b * second, res))
    return np.concatenate(found)


def _crossed(values: np.ndarray, threshold) -> np.ndarray:
    """Per pair of neighbours along the last axis: whether the surface passes between them (one above the
    threshold and one not, or either exactly at it): (..., n) → (..., n − 1)."""
    above, on = values > threshold, values == threshold
    return (above[..., :-1] != above[..., 1:]) | on[..., :-1] | on[..., 1:]


def _inside(cells: np.ndarray, res: int) -> np.ndarray:
    """The cell ids whose lowest corner really is a cell's (every coordinate 0 … res − 2); offsets that stepped
    off the grid wrap to a coordinate of res − 1 or below zero."""
    keep = (cells >= 0) & (cells // (res * res) <= res - 2) & (cells // res % res <= res - 2) & (cells % res <= res - 2)
    return cells[keep]


def _trace(sampler: _GridSampler, seeds: np.ndarray, threshold, progress) -> np.ndarray:
    """From the seed cells, every cell reachable through faces the surface crosses: each traced cell's corners
    are evaluated, and a face whose corners lie on different sides of the threshold leads into the next cell.
    Returns marching cubes' mask, flat: cell id c ↔ mask[c + res² + res + 1]."""
    res = sampler.resolution
    shift = res * res + res + 1
    mask = np.zeros(res ** 3, bool)  # the traced cells, and those reached for the next round
    corner = np.array([x * res * res + y * res + z for x, y, z in itertools.product((0, 1), repeat=3)])
    faces = [(axis, side, np.uint8(sum(1 << c for c, bits in enumerate(itertools.product((0, 1), repeat=3))
                                       if bits[axis] == side)))
             for axis in range(3) for side in (0, 1)]  # a face's corners as bits of a cell's 8
    frontier, traced = np.unique(seeds), 0
    mask[frontier + shift] = True
    while len(frontier):
        reached = []
        for part in np.array_split(frontier, -(-len(frontier) // TRACE_CELLS)):
            corners = part[:, None] + corner  # (K, 8)
            sampler.evaluate(_unique_unevaluated(sampler.flat, corners.ravel()))
            values = sampler.flat[corners]
            above, on = (np.packbits(test, axis=1, bitorder="little")[:, 0]
                         for test in (values > threshold, values == threshold))  # corner c ↔ bit c
            del corners, values
            position = [part // (res * res), part // res % res, part % res]
            for axis, side, face in faces:
                crossed = ((above & face != 0) & (above & face != face)) | (on & face != 0)
                step = 1 if side else -1
                crossed &= (position[axis] + step >= 0) & (position[axis] + step <= res - 2)
                neighbours = part[crossed] + step * (res * res, res, 1)[axis]
                neighbours = neighbours[~mask[neighbours + shift]]
                mask[neighbours + shift] = True
                reached.append(neighbours)
        traced += len(frontier)
        frontier = np.concatenate(reached)
        progress(traced / (traced + 4 * len(frontier)))
    return mask


class _Lattice:
    """The grid points every `stride` along an axis (and the last one), and the blocks between them."""

    def __init__(self, resolution: int, stride: int):
        self.resolution, self.stride = resolution, stride
        self.coords = np.unique(np.r_[np.arange(0, resolution, stride), resolution - 1])  # last block may be shorter
        self.blocks = len(self.coords) - 1
        self.block_of = np.minimum(np.arange(resolution) // stride, self.blocks - 1)  # grid index → block

    def closure(self, block_index: np.ndarray, step: int) -> np.ndarray:
        """Flat grid indices of the points every `step` in each block, its faces included: (K, n³)."""
        return self._points(block_index, np.arange(0, self.stride + 1, step), 0)

    def cells(self, block_index: np.ndarray) -> np.ndarray:
        """Ids (flat index of the lowest corner) of the grid cells in each block: (K, stride³), a shorter last
        block repeating its last cell."""
        return self._points(block_index, np.arange(self.stride), 1)

    def _points(self, block_index, offsets, end):
        res = self.resolution
        low, high = self.coords[block_index], self.coords[block_index + 1] - end
        index = np.minimum(low[:, :, None] + offsets, high[:, :, None])
        return ((index[:, 0, :, None, None] * res + index[:, 1, None, :, None]) * res
                + index[:, 2, None, None, :]).reshape(len(block_index), len(offsets) ** 3)


def _check_coarse_to_fine(config: CoarseToFine) -> None:
    strides = config.strides
    valid = (isinstance(strides, (tuple, list)) and len(strides) > 0
             and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 64 for s in strides)
             and all(a > b and a % b == 0 for a, b in zip(strides, strides[1:])))
    if not (valid and config.margin >= 0 and config.slope_factor >= 0):
        raise InputError("Coarse-to-fine needs strides from 64 down to 1, each a multiple of the next, a margin ≥ 0 "
                         f"and a slope factor ≥ 0, got {config}.")


def _evaluate_closures(sampler: _GridSampler, lattice: _Lattice, block_index: np.ndarray, step: int) -> None:
    chunk = max(1, CLOSURE_POINTS // (lattice.stride // step + 1) ** 3)
    for start in range(0, len(block_index), chunk):
        index = lattice.closure(block_index[start:start + chunk], step).ravel()
        sampler.evaluate(_unique_unevaluated(sampler.flat, index))


def _judge_blocks(grid, lattice: _Lattice, blocks: np.ndarray, threshold, margin, slope_factor, heartbeat):
    """For the given blocks of the lattice (K, 3), in np.argwhere's order: straddle (their corners lie on both
    sides of the threshold) and near (they do not, but a separate piece may hide inside: see CoarseToFine), as
    (blocks,)³ masks. Each block is judged from the 4×4×4 lattice points around it; callers pass blocks whose
    corners are evaluated."""
    size = lattice.blocks
    values = np.full((size + 3,) * 3, np.nan, np.float32)  # the lattice's values, a layer of NaN all round
    values[1:-1, 1:-1, 1:-1] = grid[np.ix_(lattice.coords, lattice.coords, lattice.coords)]
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0: −inf, a step to it infinite
        logs = np.log(values)
    gaps = np.abs(logs - math.log(threshold))  # NaN where not evaluated: never close
    straddle, near = np.zeros((size,) * 3, bool), np.zeros((size,) * 3, bool)
    reach = _corner_distances(lattice.stride)  # (points, 8), in lattice steps
    layers = max(1, JUDGE_VALUES // (size + 3) ** 2)  # block layers along the first axis whose maps are made at once
    bounds = np.searchsorted(blocks[:, 0], np.arange(0, size + layers, layers))
    for first, (start, stop) in zip(range(0, size, layers), zip(bounds[:-1], bounds[1:])):
        if start == stop:
            continue
        slope_map, bend_map = _slope_and_bend(logs[first:first + layers + 3])
        count = min(layers, size - first)
        (low, high), (nearest, furthest) = (_corner_extremes(padded, first, count) for padded in (values, gaps))
        for chunk in range(start, stop, JUDGE_BLOCKS):
            block = blocks[chunk:min(chunk + JUDGE_BLOCKS, stop)]
            local = tuple((block - (first, 0, 0)).T)
            crossing = (high[local] > threshold) & ~(low[local] > threshold)
            close = ~crossing & (nearest[local] <= margin)
            look = crossing | close  # the only blocks the slope and bend can change anything for
            slope = np.where(look, slope_factor * slope_map[local], np.float32(0))
            rough = crossing & (bend_map[local] * lattice.stride >= slope / 2)
            close &= furthest[local] <= slope * reach.max()  # else no point is within reach of every corner
            hidden = np.zeros(len(block), bool)
            corner_index = tuple(np.moveaxis(block[close][:, None, :] + _CORNERS + 1, 2, 0))
            hidden[close] = _within_reach(gaps[corner_index], slope[close], reach)
            straddle[tuple(block.T)] = crossing
            near[tuple(block.T)] = hidden | rough
            heartbeat()
    return straddle, near


def _corner_extremes(padded: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of the `count` block layers from `first` (count, n, n): the smallest and the largest of the
    values at its 8 corners (NaN if any is NaN), from the padded lattice values (see _judge_blocks)."""
    size = padded.shape[1] - 3
    corners = padded[first + 1:first + count + 2, 1:size + 2, 1:size + 2]
    views = [corners[a:a + count, b:b + size, c:c + size] for a, b, c in _CORNERS]
    low, high = views[0], views[0]
    for view in views[1:]:
        low, high = np.minimum(low, view), np.maximum(high, view)
    return low, high


def _within_reach(gaps: np.ndarray, slope: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Per block (gaps (C, 8) at its corners, slope (C,)): whether some grid point inside lies, from every
    corner, within the slope × its distance (reach (points, 8)) of the threshold. A point at a time, each tried
    only on the blocks no point before it was found in: (C, 8) at once instead of (C, points, 8)."""
    found = np.zeros(len(gaps), bool)
    left = np.arange(len(gaps))
    for distances in reach:
        within = (gaps[left] <= slope[left, None] * distances).all(axis=1)
        found[left[within]] = True
        left = left[~within]
        if not len(left):
            break
    return found


def _slope_and_bend(logs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded lattice log-densities (L + 3, n + 3, n + 3) → per block of the L layers (L, n, n): the slope, as a
    vector's length, of the largest |step| between neighbouring lattice points along each axis among the 4×4×4
    points around the block, and the bend, the sum over the axes of the largest |second difference| there, / 8.
    Steps that are not numbers are skipped (an axis with none counts 0); an infinite one stays infinite."""
    out = (logs.shape[0] - 3, logs.shape[1] - 3, logs.shape[2] - 3)
    slope, bend = 0, 0
    for axis in range(3):
        with np.errstate(invalid="ignore"):  # inf − inf: NaN, skipped
            steps = [_window_largest(np.abs(np.diff(logs, order, axis=axis)), out, axis, 4 - order)
                     for order in (1, 2)]
        slope, bend = slope + steps[0] ** 2, bend + steps[1]
    return np.sqrt(slope), bend / 8


def _window_largest(differences: np.ndarray, out: tuple, axis: int, width: int) -> np.ndarray:
    """The largest number in each window of `width` along `axis` and 4 along the other axes (NaN skipped,
    0 where all are NaN), for the first out[a] windows per axis."""
    largest = differences
    for a in range(3):
        span = width if a == axis else 4
        ahead = [slice(None)] * 3
        window = None
        for offset in range(span):
            ahead[a] = slice(offset, offset + out[a])
            window = largest[tuple(ahead)] if window is None else np.fmax(window, largest[tuple(ahead)])
        largest = window
    return np.where(np.isnan(largest), np.float32(0), largest)


_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))


@functools.cache
def _corner_distances(stride: int) -> np.ndarray:
    """Distance from each grid point of a block that is not a corner to each corner, in lattice steps; the points
    furthest from their nearest corner first (the likeliest to lie within reach of every corner)."""
    points = np.array([p for p in itertools.product(range(stride + 1), repeat=3) if set(p) - {0, stride}])
    distances = np.linalg.norm(points[:, None, :] - stride * _CORNERS, axis=2) / stride
    return distances[np.argsort(-distances.min(axis=1), kind="stable")]


def _unique_unevaluated(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The distinct entries of `index` whose grid value is still NaN. Neighbouring blocks share their faces, so
    `index` repeats points; instead of sorting, each candidate writes its position into the (not yet evaluated)
    grid value and only the last writer of each point reads its own position back."""
    index = index[np.isnan(flat[index])]
    position = np.arange(len(index), dtype=np.float32)  # exact below 2**24; callers pass far fewer points
    flat[index] = position
    return index[flat[index] == position]


def _marching_cubes(grid, threshold, cells):
    if not np.nanmin(grid) < threshold < np.nanmax(grid):
        raise _no_surface(grid, threshold)
    vertices, faces, _, _ = marching_cubes(grid, threshold, mask=cells)
    if len(faces) == 0:
        raise _no_surface(grid, threshold)
    return vertices, faces


def _no_surface(values, threshold) -> InputError:
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    advice = ("lower the threshold setting (or try another image)" if high <= threshold
              else "raise the threshold setting" if low >= threshold
              else "try a lower threshold or a higher resolution")
    return InputError(f"No surface found at threshold {threshold:g}: the model's density ranges from {low:.3g} "
                      f"to {high:.3g} in the volume. To get a mesh, {advice}.")


def _colors(color_fn: Field, vertices: np.ndarray, progress, stats: ExtractionStats) -> np.ndarray:
    colors = np.empty_like(vertices)
    points = torch.from_numpy(vertices)
    for start in range(0, len(points), BATCH_POINTS):
        batch = points[start:start + BATCH_POINTS]
        colors[start:start + len(batch)] = _call(color_fn, batch, (len(batch), 3), "colour")
        stats.color_evaluations += len(batch)
        progress(min(1.0, (start + len(batch)) / len(points)))
    if np.isnan(colors).any():
        raise ModelError("The model returned NaN colours: its weights or input may be broken.")
    return np.clip(colors, 0.0, 1.0)


def _call(fn: Field, points: torch.Tensor, shape, what: str) -> np.ndarray:
    with torch.no_grad():
        values = fn(points)
    values = values.detach().to("cpu", torch.float32).numpy()
    if values.size != math.prod(shape):
        raise ModelError(f"The {what} function returned shape {values.shape} for {len(points)} points.")
    return values.reshape(shape)


def _check_grid(resolution, radius) -> int:
    whole = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool)
    if not (whole and 2 <= resolution <= RESOLUTION.maximum):
        raise InputError(f"The resolution must be a whole number from 2 to {RESOLUTION.maximum}, got {resolution!r}.")
    if not (_is_number(radius) and radius > 0):
        raise InputError(f"The radius must be a positive number, got {radius!r}.")
    return int(resolution)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _stage_progress(progress: Progress):
    """report(a, b) → a callback mapping a stage's own 0..1 onto a..b of the whole, never going backwards;
    report.again() reports the last value once more."""
    last = [0.0]

    def report(low, high):
        def callback(fraction):
            value = max(last[0], low + (high - low) * min(max(fraction, 0.0), 1.0))
            last[0] = value
            if progress:
                progress(value)
        return callback

    def again():
        if progress:
            progress(last[0])

    report.again = again
    return report
