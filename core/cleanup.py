"""Mesh clean-up on plain arrays: merge duplicate vertices, drop floaters, close holes.

vertices float32 (N, 3); faces int (M, 3), counter-clockwise seen from outside. Functions that drop or merge
vertices also return `kept` (N',): for each output vertex, the input vertex it came from, so per-vertex data
(colours) can follow.
"""

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def merge_duplicate_vertices(vertices: np.ndarray, faces: np.ndarray):
    """Vertices at exactly the same position become one; faces that collapse or repeat are dropped.
    → vertices, faces, kept"""
    _, first, inverse = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the vertices in their original order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    kept = first[order]
    faces = rank[inverse.reshape(-1)][faces]
    return vertices[kept], drop_degenerate_faces(faces), kept


def merge_close_vertices(vertices: np.ndarray, faces: np.ndarray, distance: float):
    """Vertices closer than `distance` (in chains) become one, at the first one's position; faces that collapse
    or repeat are dropped. → vertices, faces, kept"""
    from scipy.spatial import cKDTree

    pairs = cKDTree(vertices).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return vertices, drop_degenerate_faces(faces), np.arange(len(vertices))
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(vertices),) * 2)
    _, group = connected_components(graph, directed=False)
    _, first = np.unique(group, return_index=True)  # the first vertex of each group stands for it
    representative = first[group]
    return drop_unused_vertices(vertices, drop_degenerate_faces(representative[faces]))


def drop_degenerate_faces(faces: np.ndarray) -> np.ndarray:
    """Faces with a repeated corner, and second copies of a face (same corners in any order), removed."""
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    return faces[np.sort(first)]


def piece_labels(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Connected piece (sharing vertices) of every face: int (M,)."""
    if len(faces) == 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(vertex_count, vertex_count))
    _, vertex_labels = connected_components(graph, directed=False)
    return vertex_labels[faces[:, 0]]


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def remove_floaters(vertices: np.ndarray, faces: np.ndarray, fraction: float):
    """Drop every separate piece whose surface area is below `fraction` of the largest piece's.
    → vertices, faces, kept"""
    labels = piece_labels(faces, len(vertices))
    if len(faces):
        area = np.bincount(labels, weights=face_areas(vertices, faces))
        faces = faces[area[labels] >= fraction * area.max()]
    return drop_unused_vertices(vertices, faces)


def drop_unused_vertices(vertices: np.ndarray, faces: np.ndarray):
    """→ vertices, faces, kept (only the vertices some face uses, in their original order)."""
    used = np.zeros(len(vertices), bool)
    used[faces.reshape(-1)] = True
    kept = np.flatnonzero(used)
    index = np.full(len(vertices), -1, np.int64)
    index[kept] = np.arange(len(kept))
    return vertices[kept], index[faces], kept


SHORTEST_EDGE = 1e-4  # watertight meshes have no shorter edge (Blender's QuadriFlow refuses them)


def make_watertight(vertices: np.ndarray, faces: np.ndarray, max_rounds: int = 10):
    """A closed 2-manifold: vertices closer than SHORTEST_EDGE merged, faces on edges shared by more than two
    faces (or by two faces wound the same way) removed, then every hole closed by a fan around a new vertex at
    the hole's centre. → vertices, faces"""
    vertices, faces, _ = merge_close_vertices(vertices, np.asarray(faces, np.int64), SHORTEST_EDGE)
    for _ in range(max_rounds):
        bad = _bad_edge_faces(faces, len(vertices))
        if not bad.any():
            break
        faces = faces[~bad]
    new_vertices, new_faces = [], []
    next_index = len(vertices)
    for loop in _boundary_loops(faces):
        centre = vertices[loop].mean(axis=0)
        fan = np.stack([np.roll(loop, -1), loop, np.full(len(loop), next_index)], axis=1)
        new_vertices.append(centre)
        new_faces.append(fan)
        next_index += 1
    if new_vertices:
        vertices = np.concatenate([vertices, np.asarray(new_vertices, vertices.dtype)])
        faces = np.concatenate([faces, *new_faces])
    return vertices, faces


def edge_counts(faces: np.ndarray, vertex_count: int):
    """→ undirected edge keys (E,), faces per edge (E,), the key of every face's three edges (M, 3)"""
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    keys = np.minimum(start, end) * vertex_count + np.maximum(start, end)
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return unique, counts, inverse.reshape(-1, 3)


def _bad_edge_faces(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Faces touching an edge that more than two faces share, or that two faces use in the same direction."""
    if len(faces) == 0:
        return np.zeros(0, bool)
    _, counts, face_edges = edge_counts(faces, vertex_count)
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    _, directed_inverse, directed_counts = np.unique(start * vertex_count + end, return_inverse=True,
                                                     return_counts=True)
    bad_edge = counts > 2
    bad_edge[face_edges.reshape(-1)[directed_counts[directed_inverse] > 1]] = True
    return bad_edge[face_edges].any(axis=1)


def _boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary half-edges (those whose reverse no face has), each with no repeated vertex:
    a loop passing a vertex twice is split there."""
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    half_edges = set(zip(start.tolist(), end.tolist()))
    outgoing: dict[int, list[int]] = {}
    for a, b in half_edges:
        if (b, a) not in half_edges:
            outgoing.setdefault(a, []).append(b)
    loops = []
    while outgoing:
        first = next(iter(outgoing))
        walk, position = [first], {first: 0}
        current = first
        while True:
            following = outgoing[current].pop()
            if not outgoing[current]:
                del outgoing[current]
            if following in position:  # closed a simple loop: cut it off the walk
                cut = position[following]
                loops.append(np.array(walk[cut:], np.int64))
                for vertex in walk[cut + 1:]:
                    del position[vertex]
                walk = walk[:cut + 1]
                if following not in outgoing:
                    break
                current = following
                continue
            position[following] = len(walk)
            walk.append(following)
            current = following
            if current not in outgoing:  # an open chain (cannot happen on a mesh whose edges are manifold)
                break
    return [loop for loop in loops if len(loop) >= 3]
