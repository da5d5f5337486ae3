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
    dense_keys, fast_keys = _face_keys(dense_ids[dense_faces]), _face_keys(fast_ids[fast_faces])
    kept = np.isin(dense_keys, fast_keys)
    pieces = _pieces(dense_faces, len(dense_vertices))
    faces_per_piece = np.bincount(pieces)
    kept_per_piece = np.bincount(pieces, weights=kept, minlength=len(faces_per_piece))
    missed = np.flatnonzero((kept_per_piece == 0) & (faces_per_piece > 0))
    extents = []
    for piece in missed:
        corners = dense_vertices[dense_faces[pieces == piece]].reshape(-1, 3)
        extents.append(tuple(np.round((corners.max(0) - corners.min(0)).astype(np.float64) / spacing, 2).tolist()))
    return MeshDiff(extra_faces=int((~np.isin(fast_keys, dense_keys)).sum()),
                    partial_pieces=int(((kept_per_piece > 0) & (kept_per_piece < faces_per_piece)).sum()),
                    missed_faces=faces_per_piece[missed].tolist(), missed_extents=extents)


def _vertex_ids(*vertex_arrays):
    """The same id for the same coordinates, across the arrays."""
    joined = np.ascontiguousarray(np.concatenate(vertex_arrays), dtype=np.float32)
    _, ids = np.unique(joined.view(np.dtype((np.void, 12)))[:, 0], return_inverse=True)
    return np.split(ids.reshape(-1), np.cumsum([len(v) for v in vertex_arrays])[:-1])


def _face_keys(corner_ids) -> np.ndarray:
    """One key per face: its corners' ids starting at the smallest, winding kept."""
    first = np.argmin(corner_ids, axis=1)
    rows = np.arange(len(corner_ids))
    rolled = np.stack([corner_ids[rows, (first + shift) % 3] for shift in range(3)], axis=1).astype(np.int64)
    return np.ascontiguousarray(rolled).view(np.dtype((np.void, 24)))[:, 0]


def _pieces(faces, vertex_count) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), (vertex_count,) * 2)
    _, vertex_piece = connected_components(graph, directed=False)
    return vertex_piece[faces[:, 0]]
