"""Density field → mesh: a density grid (dense, or coarse-to-fine with the same result), scikit-image marching
cubes, vertex colours.

The grid is TripoSR's: `resolution` points per axis from −radius to +radius, endpoints included, grid index
[i, j, k] ↔ world (x, y, z). Marching cubes runs on (density − threshold) at level 0, as the reference does.
"""

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

BATCH_POINTS = 1 << 18

Field = Callable[[torch.Tensor], torch.Tensor]
GridDensity = Callable[[torch.Tensor], Field]  # axis (R,) → density at grid indices (N, 3) int64
Progress = Optional[Callable[[float], None]]


@dataclass
class CoarseToFine:
    """Where the coarse-to-fine grid evaluates the field at full resolution.

    The field is first sampled every `strides[0]` grid points. A block (stride³ grid cells) is kept when its
    corners straddle the threshold, or when a corner's log-density comes close to log(threshold): within
    `slope_factor` times the local slope (the largest log-density step between neighbouring samples around the
    block), and never more than `margin` (TripoSR's density is exp(raw − 1), so these are the MLP's raw units).
    The slope term keeps flat fields from refining everywhere; in steep ones the margin decides. Kept blocks are
    sampled at the next stride and their sub-blocks judged the same way, with the margin scaled by the stride
    (a bump rises above its nearest sample by at most slope × distance); the blocks kept at the last stride are
    evaluated at every grid point. Then every last-stride block whose exactly evaluated boundary points show the
    surface entering it is evaluated too, until no block is pulled in: each surface piece that touches an
    evaluated block is traced completely. So the mesh is the dense one minus, at most, whole separate pieces
    that lie between the samples (no sample inside them) while the field at every sample around them stays
    further below the threshold than the margin allows for: pieces thinner than the sample spacing in at least
    one direction, such as a steep speck or a sliver (tests/core/test_extract.py shows both; benchmarks/ counts
    them on full-size fields).
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
    refined_blocks: int = 0
    total_blocks: int = 0
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
        grid, cells = _coarse_to_fine_grid(_GridSampler(density_fn, grid_density, resolution, radius, stats),
                                           threshold, config, report(0.0, 0.8))
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
    """Evaluates the density at grid points given by flat index into `grid`, writing the values there."""

    def __init__(self, density_fn: Field, grid_density: Optional[GridDensity], resolution: int, radius: float,
                 stats: ExtractionStats):
        self.grid = np.full((resolution,) * 3, np.nan, np.float32)  # NaN = not evaluated yet
        self.flat = self.grid.reshape(-1)
        self.resolution = resolution
        self.axis = grid_axis(resolution, radius)
        self.density_at = grid_density(self.axis) if grid_density else None
        self.density_fn = density_fn
        self.stats = stats

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


def _coarse_to_fine_grid(sampler: _GridSampler, threshold, config: CoarseToFine, progress):
    """Fills the sampler's grid with values that are exact in every block that may hold surface; returns it and
    the marching-cubes cell mask of those blocks (skimage's mask[i+1, j+1, k+1] selects cell (i, j, k))."""
    grid, flat, res = sampler.grid, sampler.flat, sampler.resolution
    lattices = [_Lattice(res, stride) for stride in config.strides]

    top = lattices[0]
    sampler.evaluate(np.ravel_multi_index(np.ix_(top.coords, top.coords, top.coords), grid.shape).ravel())
    progress(0.05)
    keep, side = _judge_blocks(grid, top, threshold, config.margin, config.slope_factor)
    if not keep.any():
        raise _no_surface(grid, threshold)
    for level, (parent, child) in enumerate(zip(lattices, lattices[1:]), start=1):
        _evaluate_closures(sampler, parent, np.argwhere(keep), child.stride)
        progress(0.05 + 0.2 * level / len(lattices))
        parent_of = parent.block_of[child.coords[:-1]]
        region = np.ix_(parent_of, parent_of, parent_of)
        child_keep, child_side = _judge_blocks(grid, child, threshold, config.margin * child.stride / top.stride,
                                               config.slope_factor)
        keep, side = keep[region], side[region]
        side = np.where(keep, child_side, side)  # blocks inside a kept parent have exact corners of their own
        keep &= child_keep

    finest, refined = lattices[-1], keep
    frontier, evaluated = refined.copy(), 0
    while frontier.any():
        fresh = np.argwhere(frontier)
        _evaluate_closures(sampler, finest, fresh, 1)
        evaluated += len(fresh)
        progress(0.25 + 0.75 * evaluated / refined.sum())
        # A block not refined yet is pulled in when an exact value on its boundary lies on the other side.
        candidates = np.argwhere(_neighbourhood_max(frontier) & ~refined)
        frontier[:] = False
        for start in range(0, len(candidates), 1 << 15):
            block_index = candidates[start:start + (1 << 15)]
            values = flat[finest.closure(block_index, 1)]
            block_side = side[tuple(block_index.T)][:, None]
            disagree = ~np.isnan(values) & (((values > threshold) != block_side) | (values == threshold))
            frontier[tuple(block_index[disagree.any(axis=1)].T)] = True
        refined |= frontier

    sampler.stats.refined_blocks, sampler.stats.total_blocks = int(refined.sum()), refined.size
    cells = _fill_and_mask(grid, finest, side, refined)
    return grid, cells


class _Lattice:
    """The grid points every `stride` along an axis (and the last one), and the blocks between them."""

    def __init__(self, resolution: int, stride: int):
        self.resolution, self.stride = resolution, stride
        self.coords = np.unique(np.r_[np.arange(0, resolution, stride), resolution - 1])  # last block may be shorter
        self.blocks = len(self.coords) - 1
        self.block_of = np.minimum(np.arange(resolution) // stride, self.blocks - 1)  # grid index → block

    def closure(self, block_index: np.ndarray, step: int) -> np.ndarray:
        """Flat grid indices of the points every `step` in each block, its faces included: (K, n³)."""
        res = self.resolution
        low, high = self.coords[block_index], self.coords[block_index + 1]
        index = np.minimum(low[:, :, None] + np.arange(0, self.stride + 1, step), high[:, :, None])
        return ((index[:, 0, :, None, None] * res + index[:, 1, None, :, None]) * res
                + index[:, 2, None, None, :]).reshape(len(block_index), -1)


def _check_coarse_to_fine(config: CoarseToFine) -> None:
    strides = config.strides
    valid = (isinstance(strides, (tuple, list)) and len(strides) > 0
             and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 64 for s in strides)
             and all(a > b and a % b == 0 for a, b in zip(strides, strides[1:])))
    if not (valid and config.margin >= 0 and config.slope_factor >= 0):
        raise InputError("Coarse-to-fine needs strides from 64 down to 1, each a multiple of the next, a margin ≥ 0 "
                         f"and a slope factor ≥ 0, got {config}.")


def _evaluate_closures(sampler: _GridSampler, lattice: _Lattice, block_index: np.ndarray, step: int) -> None:
    chunk = max(1, (1 << 20) // (lattice.stride // step + 1) ** 3)
    for start in range(0, len(block_index), chunk):
        index = lattice.closure(block_index[start:start + chunk], step).ravel()
        sampler.evaluate(_unique_unevaluated(sampler.flat, index))


def _judge_blocks(grid, lattice: _Lattice, threshold, margin, slope_factor):
    """Per block of the lattice: keep (its corners straddle the threshold or come near it) and side (all corners
    above). Blocks with an unevaluated corner get keep = side = False; callers only use evaluated ones."""
    values = grid[np.ix_(lattice.coords, lattice.coords, lattice.coords)]
    above = values > threshold
    all_above, any_above = _over_corners(np.logical_and, above), _over_corners(np.logical_or, above)
    del above
    log_values = np.log(np.maximum(values, np.finfo(np.float32).tiny, out=values), out=values)
    limit = np.minimum(margin, slope_factor * _local_slope(log_values))
    log_gap = np.abs(np.subtract(log_values, math.log(threshold), out=log_values), out=log_values)
    near = _over_corners(np.fmin, log_gap) <= limit  # NaN (never near) only where every corner is unevaluated
    return (any_above & ~all_above) | near, all_above


def _over_corners(combine, array: np.ndarray) -> np.ndarray:
    """Per block, `combine` folded over the values at its 8 corners (array holds one value per lattice point)."""
    blocks = len(array) - 1
    result = array[:blocks, :blocks, :blocks].copy()
    for x, y, z in itertools.product((0, 1), repeat=3):
        combine(result, array[x:x + blocks, y:y + blocks, z:z + blocks], out=result)
    return result


def _local_slope(log_values: np.ndarray) -> np.ndarray:
    """Per block: the largest |Δ log-density| along an evaluated lattice edge of the block or of its 26
    neighbours (edges with an unevaluated end are skipped)."""
    blocks = len(log_values) - 1
    slope = np.zeros((blocks,) * 3, np.float32)
    for axis in range(3):
        with np.errstate(invalid="ignore"):  # inf − inf where the density overflowed: NaN, skipped like the rest
            step = np.abs(np.diff(log_values, axis=axis))  # one axis has `blocks` entries, the others blocks + 1
        for offsets in itertools.product((0, 1), repeat=2):
            index = [slice(None)] * 3
            others = [a for a in range(3) if a != axis]
            for other, offset in zip(others, offsets):
                index[other] = slice(offset, offset + blocks)
            np.fmax(slope, step[tuple(index)], out=slope)
    return _neighbourhood_max(slope)


def _neighbourhood_max(array: np.ndarray) -> np.ndarray:
    """Each entry's maximum over its 3×3×3 neighbourhood (inside the array); for booleans, any. Three 1-D
    passes over shifted views: several times faster than scipy's filter on these small arrays."""
    result = array.copy()
    for axis in range(3):
        low, high = [slice(None)] * 3, [slice(None)] * 3
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        source = result.copy()
        np.maximum(result[tuple(low)], source[tuple(high)], out=result[tuple(low)])
        np.maximum(result[tuple(high)], source[tuple(low)], out=result[tuple(high)])
    return result


def _unique_unevaluated(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The distinct entries of `index` whose grid value is still NaN. Neighbouring blocks share their faces, so
    `index` repeats points; instead of sorting, each candidate writes its position into the (not yet evaluated)
    grid value and only the last writer of each point reads its own position back."""
    index = index[np.isnan(flat[index])]
    position = np.arange(len(index), dtype=np.float32)  # exact below 2**24; callers pass far fewer points
    flat[index] = position
    return index[flat[index] == position]


def _fill_and_mask(grid, lattice: _Lattice, side, refined):
    """Give every unevaluated point a value on its block's side of the threshold (no refined cell has such a
    corner, so marching cubes never reads it) and build the cell mask of the refined blocks; a layer of blocks
    at a time to keep memory flat."""
    res = grid.shape[0]
    low, high = np.nanmin(grid), np.nanmax(grid)
    cells = np.zeros(grid.shape, bool)

    def per_point(layer):  # block layer (blocks, blocks) → (res, res), each point taking its block's entry
        return layer.take(lattice.block_of, 0).take(lattice.block_of, 1)

    for block in range(lattice.blocks):
        rows = slice(lattice.coords[block], lattice.coords[block + 1] + (block == lattice.blocks - 1))
        missing = np.isnan(grid[rows])
        above = per_point(side[block])
        np.copyto(grid[rows], high, where=missing & above)
        np.copyto(grid[rows], low, where=missing & ~above)
        cell_rows = slice(rows.start + 1, min(rows.stop + 1, res))
        cells[cell_rows, 1:, 1:] = per_point(refined[block])[:-1, :-1]
    return cells


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
    """report(a, b) → a callback mapping a stage's own 0..1 onto a..b of the whole, never going backwards."""
    last = [0.0]

    def report(low, high):
        def callback(fraction):
            value = max(last[0], low + (high - low) * min(max(fraction, 0.0), 1.0))
            last[0] = value
            if progress:
                progress(value)
        return callback

    return report
