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
from scipy.ndimage import maximum_filter
from skimage.measure import marching_cubes

from .errors import InputError, ModelError
from .mesh import Mesh

BATCH_POINTS = 1 << 18
MAX_RESOLUTION = 1024  # a 1024³ float32 grid alone is 4.3 GB

Field = Callable[[torch.Tensor], torch.Tensor]
Progress = Optional[Callable[[float], None]]


@dataclass
class CoarseToFine:
    """Where the coarse-to-fine grid evaluates the field at full resolution.

    The field is first sampled every `stride` grid points. A coarse cell (a block of stride³ grid cells) is
    evaluated in full when its corners straddle the threshold, or when a corner's log-density comes close to
    log(threshold): within `slope_factor` times the local slope (the largest log-density step between
    neighbouring coarse samples around the block), and never more than `margin` (TripoSR's density is
    exp(raw − 1), so these are the MLP's raw units). The slope term keeps flat fields from refining everywhere;
    in steep ones the margin decides. Then every block whose exactly evaluated boundary points show the surface
    entering it is evaluated too, until no block is pulled in: each surface piece that touches an evaluated
    block is traced completely. What remains unseen is a separate piece smaller than a coarse cell that no
    coarse sample comes that close to.
    """

    stride: int = 4
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


def density_grid(density_fn: Field, resolution: int, radius: float, *, progress: Progress = None,
                 stats: Optional[ExtractionStats] = None) -> np.ndarray:
    """Evaluate the field at every grid point: float32 (res, res, res), [i, j, k] ↔ world (x, y, z)."""
    resolution = _check_grid(resolution, radius)
    grid = np.empty((resolution,) * 3, np.float32)
    sampler = _GridSampler(density_fn, grid, radius, stats or ExtractionStats())
    total = grid.size
    for start in range(0, total, BATCH_POINTS):
        sampler.evaluate(np.arange(start, min(start + BATCH_POINTS, total)))
        if progress:
            progress(min(start + BATCH_POINTS, total) / total)
    return grid


def extract_mesh(density_fn: Field, color_fn: Field, *, resolution: int = 256, threshold: float = 25.0,
                 radius: float = 0.87, coarse_to_fine: Union[bool, CoarseToFine] = True, progress: Progress = None,
                 stats: Optional[ExtractionStats] = None) -> Mesh:
    """Mesh of the surface density == threshold, faces counter-clockwise seen from outside, colours from color_fn.

    density_fn(points (N, 3) float32) -> density (N,); color_fn(points) -> sRGB (N, 3) in [0, 1]; both are called
    with at most BATCH_POINTS points at a time. coarse_to_fine=True (or a CoarseToFine) evaluates the field only
    near the surface; the mesh is the same as with the dense grid (see CoarseToFine for what it cannot see).
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
        grid, cells = _coarse_to_fine_grid(density_fn, resolution, radius, threshold, config,
                                           report(0.0, 0.8), stats)
    else:
        grid, cells = density_grid(density_fn, resolution, radius, progress=report(0.0, 0.8), stats=stats), None
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

    def __init__(self, density_fn: Field, grid: np.ndarray, radius: float, stats: ExtractionStats):
        self.density_fn = density_fn
        self.flat = grid.reshape(-1)
        self.resolution = grid.shape[0]
        self.axis = grid_axis(self.resolution, radius)
        self.stats = stats

    def evaluate(self, flat_indices: np.ndarray) -> None:
        res = self.resolution
        for start in range(0, len(flat_indices), BATCH_POINTS):
            index = torch.from_numpy(flat_indices[start:start + BATCH_POINTS])
            points = torch.stack([self.axis[index // (res * res)], self.axis[index // res % res],
                                  self.axis[index % res]], dim=1)
            values = _call(self.density_fn, points, (len(points),), "density")
            if np.isnan(values).any():
                raise ModelError("The model returned NaN densities: its weights or input may be broken.")
            self.flat[flat_indices[start:start + BATCH_POINTS]] = values
            self.stats.density_evaluations += len(points)


def _coarse_to_fine_grid(density_fn, resolution, radius, threshold, config: CoarseToFine, progress, stats):
    """A full-size grid whose values are exact in every block that may hold surface; returns it and the
    marching-cubes cell mask of those blocks (skimage's mask[i+1, j+1, k+1] selects cell (i, j, k))."""
    if not (isinstance(config.stride, int) and 1 <= config.stride <= 64 and config.margin >= 0
            and config.slope_factor >= 0):
        raise InputError(f"Coarse-to-fine needs a stride from 1 to 64, a margin ≥ 0 and a slope factor ≥ 0, got {config}.")
    res, stride = resolution, config.stride
    coarse = np.unique(np.r_[np.arange(0, res, stride), res - 1])  # last block may be shorter
    blocks = len(coarse) - 1
    stats.total_blocks = blocks ** 3
    grid = np.full((res,) * 3, np.nan, np.float32)  # NaN = not evaluated yet
    flat = grid.reshape(-1)
    sampler = _GridSampler(density_fn, grid, radius, stats)

    sampler.evaluate(np.ravel_multi_index(np.ix_(coarse, coarse, coarse), grid.shape).ravel())
    progress(0.05)
    corner_values = grid[np.ix_(coarse, coarse, coarse)]
    above = corner_values > threshold
    log_values = np.log(np.maximum(corner_values, np.finfo(np.float32).tiny))
    corners = list(itertools.product((0, 1), repeat=3))

    def over_corners(reduce, values):
        return reduce([values[x:x + blocks, y:y + blocks, z:z + blocks] for x, y, z in corners])

    all_above = over_corners(np.logical_and.reduce, above)
    log_gap = over_corners(np.minimum.reduce, np.abs(log_values - math.log(threshold)))
    near = log_gap <= np.minimum(config.margin, config.slope_factor * _local_slope(log_values))
    refined = (over_corners(np.logical_or.reduce, above) & ~all_above) | near
    if not refined.any():
        raise _no_surface(corner_values, threshold)

    offsets = np.arange(stride + 1)

    def closure(block_index):
        """Flat grid indices of all points of each block, its faces included: (K, (stride+1)³), edge-clipped."""
        low, high = coarse[block_index], coarse[block_index + 1]
        index = np.minimum(low[:, :, None] + offsets, high[:, :, None])
        return ((index[:, 0, :, None, None] * res + index[:, 1, None, :, None]) * res
                + index[:, 2, None, None, :]).reshape(len(block_index), -1)

    neighbours = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if any(d)])
    chunk = max(1, (1 << 20) // (stride + 1) ** 3)
    pending = np.argwhere(refined)
    done = 0
    while len(pending):
        for start in range(0, len(pending), chunk):
            index = closure(pending[start:start + chunk]).ravel()
            sampler.evaluate(_unique_unevaluated(flat, index))
            done += len(pending[start:start + chunk])
            progress(0.05 + 0.95 * done / refined.sum())

        # A block not refined yet is pulled in when an exact value on its boundary lies on the other side.
        candidates = (pending[:, None, :] + neighbours).reshape(-1, 3)
        candidates = candidates[((candidates >= 0) & (candidates < blocks)).all(axis=1)]
        candidates = np.unique(np.ravel_multi_index(candidates.T, refined.shape))
        candidates = np.stack(np.unravel_index(candidates[~refined.flat[candidates]], refined.shape), axis=1)
        pulled = []
        for start in range(0, len(candidates), chunk):
            block_index = candidates[start:start + chunk]
            values = flat[closure(block_index)]
            side = all_above[tuple(block_index.T)][:, None]
            disagree = ~np.isnan(values) & (((values > threshold) != side) | (values == threshold))
            pulled.append(block_index[disagree.any(axis=1)])
        pending = np.concatenate(pulled) if pulled else np.zeros((0, 3), np.int64)
        refined[tuple(pending.T)] = True

    stats.refined_blocks = int(refined.sum())
    cells = _fill_and_mask(grid, stride, corner_values, refined)
    return grid, cells


def _local_slope(log_values: np.ndarray) -> np.ndarray:
    """Per coarse block: the largest |Δ log-density| along a coarse edge of the block or of its 26 neighbours."""
    blocks = len(log_values) - 1
    slope = np.zeros((blocks,) * 3, np.float32)
    for axis in range(3):
        step = np.abs(np.diff(log_values, axis=axis))  # one axis has `blocks` entries, the others blocks + 1
        for offsets in itertools.product((0, 1), repeat=2):
            index = [slice(None)] * 3
            others = [a for a in range(3) if a != axis]
            for other, offset in zip(others, offsets):
                index[other] = slice(offset, offset + blocks)
            np.maximum(slope, step[tuple(index)], out=slope)
    return maximum_filter(slope, size=3, mode="nearest")


def _unique_unevaluated(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The distinct entries of `index` whose grid value is still NaN. Neighbouring blocks share their faces, so
    `index` repeats points; instead of sorting, each candidate writes its position into the (not yet evaluated)
    grid value and only the last writer of each point reads its own position back."""
    index = index[np.isnan(flat[index])]
    position = np.arange(len(index), dtype=np.float32)  # exact below 2**24; callers pass far fewer points
    flat[index] = position
    return index[flat[index] == position]


def _fill_and_mask(grid, stride, corner_values, refined):
    """Give unevaluated points their block's lower-corner value (its whole block lies on that side of the
    threshold) and build the cell mask of the refined blocks; slab by slab to keep memory flat."""
    res, blocks = grid.shape[0], len(refined)
    block_of = np.minimum(np.arange(res) // stride, blocks - 1)
    cells = np.zeros(grid.shape, bool)
    for i in range(res):
        slab = grid[i]
        missing = np.isnan(slab)
        if missing.any():
            slab[missing] = corner_values[block_of[i]].take(block_of, 0).take(block_of, 1)[missing]
        if i < res - 1:
            cells[i + 1, 1:, 1:] = refined[block_of[i]].take(block_of[:-1], 0).take(block_of[:-1], 1)
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
    if not (whole and 2 <= resolution <= MAX_RESOLUTION):
        raise InputError(f"The resolution must be a whole number from 2 to {MAX_RESOLUTION}, got {resolution!r}.")
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
