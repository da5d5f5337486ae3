"""A texture painted from the colour field: UV unwrap (xatlas), the surface point of every texel, its colour from
the field, seams padded by filling every uncovered texel with its nearest covered texel's colour.

Image convention: texture uint8 (size, size, 3), sRGB, row 0 at the top (as PNG stores it); UV (0, 0) is the
bottom-left corner (Blender's and OBJ's convention), so texel (row r, column c) has its centre at
u = (c + 0.5) / size, v = 1 − (r + 0.5) / size.

Rasterising texels is written here (numpy) because the unwrapper does not do it, and a GPU rasteriser (the
reference uses moderngl) is not available in every Blender.
"""

from typing import Callable

import numpy as np
from scipy.ndimage import distance_transform_edt

ColorFn = Callable[[np.ndarray], np.ndarray]  # points float32 (K, 3) → sRGB float (K, 3) in [0, 1]
CANDIDATES_PER_CHUNK = 1 << 22  # texel centres tested at once while rasterising (bounds memory)
EDGE_TOLERANCE = 1e-6  # texel centres on a shared edge belong to both triangles (never to neither)


def padding_for(size: int) -> int:
    """Texels between UV islands: as the reference's bake (at least 2, 1 per 256 texels of size)."""
    return max(2, round(size / 256))


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """xatlas charts packed for a size² texture without overlap. → corner UVs float32 (M, 3, 2) in [0, 1]."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_iterations = 0  # one pass of chart growing: several times faster, the charts are as good for baking
    packing = xatlas.PackOptions()
    packing.resolution = size
    packing.padding = padding_for(size)
    packing.bilinear = True
    atlas.generate(charts, packing)
    vertex_map, atlas_faces, uvs = atlas.get_mesh(0)
    # xatlas keeps the face order; its vertices are the input's, split along the seams.
    return uvs[atlas_faces.astype(np.int64)].astype(np.float32)


def texel_samples(corner_uvs: np.ndarray, size: int):
    """Every texel whose centre lies inside (or on the edge of) a UV triangle.

    corner_uvs (M, 3, 2) → rows (K,), columns (K,), face (K,), barycentric weights float64 (K, 3). A texel
    inside two triangles appears twice (the later triangle's sample is the one a texture keeps)."""
    xy = np.empty(corner_uvs.shape, np.float64)
    xy[..., 0] = corner_uvs[..., 0] * size
    xy[..., 1] = (1.0 - corner_uvs[..., 1]) * size  # rows grow downward
    low = np.clip(np.ceil(xy.min(axis=1) - 0.5), 0, size).astype(np.int64)  # first texel centre >= min
    high = np.clip(np.floor(xy.max(axis=1) - 0.5), -1, size - 1).astype(np.int64)
    span = np.maximum(high - low + 1, 0)  # (M, 2): columns, rows
    counts = span[:, 0] * span[:, 1]
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    double_area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    counts[np.abs(double_area) < 1e-12] = 0

    results = []
    ends = np.cumsum(counts)
    begin = 0
    while begin < len(counts):
        end = int(np.searchsorted(ends, (ends[begin - 1] if begin else 0) + CANDIDATES_PER_CHUNK, side="right"))
        end = max(end, begin + 1)
        results.append(_chunk_samples(slice(begin, end), xy, low, span, counts, double_area))
        begin = end
    if not results:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros((0, 3))
    return tuple(np.concatenate(parts) for parts in zip(*results))


def _chunk_samples(chunk: slice, xy, low, span, counts, double_area):
    face = np.repeat(np.arange(chunk.start, chunk.stop), counts[chunk])
    offset = np.arange(len(face)) - np.repeat(np.cumsum(counts[chunk]) - counts[chunk], counts[chunk])
    columns = low[face, 0] + offset % span[face, 0]
    rows = low[face, 1] + offset // span[face, 0]
    px, py = columns + 0.5, rows + 0.5
    a, b, c = xy[face, 0], xy[face, 1], xy[face, 2]
    area = double_area[face]
    weight_a = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / area
    weight_b = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / area
    weight_c = 1.0 - weight_a - weight_b
    weights = np.stack([weight_a, weight_b, weight_c], axis=1)
    inside = (weights >= -EDGE_TOLERANCE).all(axis=1)
    return rows[inside], columns[inside], face[inside], weights[inside]


def bake(vertices: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray, size: int, color_fn: ColorFn,
         progress=None) -> np.ndarray:
    """The colour field painted into a size² texture over the mesh's UVs. → uint8 (size, size, 3)

    vertices are in the field's frame; each covered texel gets the field's colour at its surface point
    (the barycentric point of its triangle), every other texel its nearest covered texel's colour."""
    rows, columns, face, weights = texel_samples(corner_uvs, size)
    if len(face) == 0:
        raise ValueError("The mesh's UV map covers no texel centre: it has no area in UV space.")
    corners = vertices[faces[face]].astype(np.float64)  # (K, 3, 3)
    points = np.einsum("kc,kcx->kx", weights, corners).astype(np.float32)
    colors = color_fn(points)
    if progress:
        progress(0.9)
    image = np.zeros((size, size, 3), np.float32)
    covered = np.zeros((size, size), bool)
    image[rows, columns] = colors
    covered[rows, columns] = True
    return to_uint8(fill_uncovered(image, covered))


def fill_uncovered(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every texel not covered takes the value of its nearest covered texel, so filtering and mipmaps near an
    island's edge (and at any distance from it) read the island's own colours, never a background."""
    _, (nearest_rows, nearest_columns) = distance_transform_edt(~covered, return_indices=True)
    return image[nearest_rows, nearest_columns]


def to_uint8(colors: np.ndarray) -> np.ndarray:
    return np.round(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)

