"""A coarse-to-fine mesh against the dense mesh of the same field, face by face, in the terms of the bound that
CoarseToFine documents: the fast mesh is the dense mesh minus whole separate pieces."""

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class MeshDiff:
    extra_faces: int  # fast faces that are not dense faces
    partial_pieces: int  # dense pieces the fast mesh has some but not all faces of
    missed_faces: list  # per dense piece the fast mesh lacks entirely, its face count
    missed_extents: list  # ... and its size along x, y, z in grid cells

    @property
    def within_bound(self) -> bool:
        return self.extra_faces == 0 and self.partial_pieces == 0


def compare(dense_vertices, dense_faces, fast_vertices, fast_faces, spacing: float) -> MeshDiff:
    """Faces are compared by their corners' coordinates (both meshes come from the same grid values, so shared
    vertices are bitwise equal); a piece is a set of dense faces connected through shared vertices."""
    dense_ids, fast_ids = _vertex_ids(dense_vertices, fast_vertices)
    kept, in_dense = _shared_rows(_face_keys(dense_ids[dense_faces]), _face_keys(fast_ids[fast_faces]))
    vertex_piece = _vertex_pieces(dense_faces, len(dense_vertices))
    pieces = vertex_piece[dense_faces[:, 0]]
    faces_per_piece = np.bincount(pieces, minlength=vertex_piece.max() + 1)
    kept_per_piece = np.bincount(pieces, weights=kept, minlength=len(faces_per_piece))
    missed = np.flatnonzero((kept_per_piece == 0) & (faces_per_piece > 0))
    extents = _extents(dense_vertices, vertex_piece)[missed] / spacing
    return MeshDiff(extra_faces=int((~in_dense).sum()),
                    partial_pieces=int(((kept_per_piece > 0) & (kept_per_piece < faces_per_piece)).sum()),
                    missed_faces=faces_per_piece[missed].tolist(),
                    missed_extents=[tuple(np.round(extent, 2).tolist()) for extent in extents])


def _vertex_ids(*vertex_arrays):
    """The same id for the same coordinates, across the arrays."""
    joined = np.ascontiguousarray(np.concatenate(vertex_arrays), dtype=np.float32).view(np.uint32)
    return np.split(_row_ids(joined), np.cumsum([len(v) for v in vertex_arrays])[:-1])


def _face_keys(corner_ids) -> np.ndarray:
    """Per face its corners' ids, starting at the smallest, winding kept: (M, 3)."""
    first = np.argmin(corner_ids, axis=1)
    rows = np.arange(len(corner_ids))
    return np.stack([corner_ids[rows, (first + shift) % 3] for shift in range(3)], axis=1)


def _shared_rows(a, b):
    """For rows of a (each unique) whether b has them, and the same for b."""
    ids = _row_ids(np.concatenate([a, b]))
    count = np.bincount(ids)
    return count[ids[:len(a)]] > 1, count[ids[len(a):]] > 1


def _row_ids(rows) -> np.ndarray:
    """Equal rows get equal ids (a lexicographic sort; np.unique on byte rows is many times slower)."""
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    new = np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)]
    ids = np.empty(len(rows), np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def _vertex_pieces(faces, vertex_count) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), (vertex_count,) * 2)
    return connected_components(graph, directed=False)[1]


def _extents(vertices, vertex_piece) -> np.ndarray:
    """Per piece, its bounding box's size along x, y, z."""
    order = np.argsort(vertex_piece, kind="stable")
    coordinates = vertices[order].astype(np.float64)
    starts = np.searchsorted(vertex_piece[order], np.arange(vertex_piece.max() + 1))
    return np.maximum.reduceat(coordinates, starts) - np.minimum.reduceat(coordinates, starts)


def surface_points(vertices: np.ndarray, resolution: int, radius: float) -> int:
    """The grid points any exact extraction must evaluate: both ends of every grid edge a mesh vertex lies on."""
    index = (vertices.astype(np.float64) + radius) / (2 * radius) * (resolution - 1)
    low = np.floor(index + 1e-4).astype(np.int64)  # a vertex within 1e-4 of a grid plane lies on it
    high = np.where(index - low > 1e-4, low + 1, low)
    ends = np.concatenate([low, high])
    return len(np.unique((ends[:, 0] * resolution + ends[:, 1]) * resolution + ends[:, 2]))
