"""Colour fidelity of a mesh against the field it came from, at random points of its surface (for the tests and
the README's figures)."""

import numpy as np


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0):
    """Area-uniform random points on the mesh. → face (K,), barycentric weights (K, 3), points (K, 3)"""
    rng = np.random.default_rng(seed)
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    weights = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    points = np.einsum("kc,kcx->kx", weights, vertices[faces[face]].astype(np.float64))
    return face, weights, points


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, as a renderer filters: texture uint8 (H, W, 3), row 0 at the top; uv (K, 2) with v up.
    → float (K, 3) in [0, 1]"""
    height, width = texture.shape[:2]
    x = np.clip(uv[:, 0] * width - 0.5, 0, width - 1)
    y = np.clip((1.0 - uv[:, 1]) * height - 0.5, 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    image = texture.astype(np.float64) / 255.0
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def colour_errors(vertices, faces, colors, color_fn, corner_uvs=None, texture=None, count=10_000, seed=0):
    """Mean absolute sRGB error (over channels and points) of the vertex colours and, when given, of the texture,
    against color_fn at `count` random surface points. → (vertex-colour error, texture error or None)"""
    face, weights, points = surface_samples(vertices, faces, count, seed)
    truth = np.asarray(color_fn(points.astype(np.float32)), np.float64)
    interpolated = np.einsum("kc,kcx->kx", weights, np.asarray(colors, np.float64)[faces[face]])
    vertex_error = float(np.abs(interpolated - truth).mean())
    if texture is None:
        return vertex_error, None
    uv = np.einsum("kc,kcx->kx", weights, np.asarray(corner_uvs, np.float64)[face])
    return vertex_error, float(np.abs(sample_texture(texture, uv) - truth).mean())
