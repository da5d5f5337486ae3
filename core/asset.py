"""From the marching-cubes surface to an asset: clean-up, a face budget, watertightness, a texture from the field.

Every step works on plain arrays and a colour function of the field (points in the field's frame → sRGB float
(K, 3)), so the command line, the worker and a re-bake in Blender share it. The settings and their limits import
nothing heavy (Blender reads them when the add-on loads); the steps import scipy, xatlas, fast-simplification.
"""

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .mesh import Mesh

FLOATER_AREA_FRACTION = 0.02  # a separate piece with less than 2 % of the largest piece's area is a floater
TEXTURE_SIZE_LIMITS = (16, 8192)  # besides 0 (vertex colours only); the add-on offers 512–4096
DEFAULT_TEXTURE_SIZE = 1024  # enough for the field's detail on a ~20k-face asset, 3 MB in memory
DEFAULT_FACE_LIMIT = 20000  # the add-on's default: a real-time asset; the texture carries the detail
FACE_LIMIT_MIN = 4  # besides 0 (no limit): a tetrahedron
TEXTURE_FACE_LIMIT_MAX = 100_000  # UV unwrapping (xatlas) grows faster than the face count: ~35 s at 100k on 2 cores


@dataclass
class AssetSettings:
    """The library's defaults leave the extracted surface as it is (apart from merging duplicate vertices); the
    add-on's panel and the command line default to removing floaters, and the panel to DEFAULT_TEXTURE_SIZE and
    DEFAULT_FACE_LIMIT."""

    texture_size: int = 0  # 0: vertex colours only
    face_limit: int = 0  # 0: no limit
    remove_floaters: bool = False
    watertight: bool = False

    def validate(self):
        low, high = TEXTURE_SIZE_LIMITS
        if not _whole(self.texture_size) or not (self.texture_size == 0 or low <= self.texture_size <= high):
            raise InputError(f"Texture size must be 0 (vertex colours only) or a whole number from {low} to {high}, "
                             f"not {self.texture_size!r}.")
        if not _whole(self.face_limit) or not (self.face_limit == 0 or self.face_limit >= FACE_LIMIT_MIN):
            raise InputError(f"Face limit must be 0 (no limit) or a whole number of at least {FACE_LIMIT_MIN}, "
                             f"not {self.face_limit!r}.")
        if self.texture_size and not FACE_LIMIT_MIN <= self.face_limit <= TEXTURE_FACE_LIMIT_MAX:
            raise InputError(f"A texture needs a face limit from {FACE_LIMIT_MIN} to {TEXTURE_FACE_LIMIT_MAX:,} faces "
                             "(UV unwrapping a larger mesh takes many minutes): set a face limit, or texture size 0 "
                             "for vertex colours.")
        for name in ("remove_floaters", "watertight"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, not {getattr(self, name)!r}.")


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def finish_mesh(mesh: Mesh, color_fn, settings: AssetSettings, progress=None) -> Mesh:
    """The extracted mesh cleaned, within its face budget, optionally closed, and textured when asked.

    Normals stay outward without a step of their own: marching cubes winds every face with its normal toward
    lower density, the decimator refuses collapses that flip a face, and hole fans follow the hole's winding
    (a per-piece flip would be wrong for the inner wall of a hollow object).

    progress(stage, fraction) with stage "Finishing mesh" or "Baking texture"."""
    from . import cleanup
    from .texture import bake, unwrap

    report = progress or (lambda stage, fraction: None)
    report("Finishing mesh", 0.0)
    vertices, faces, kept = cleanup.merge_duplicate_vertices(mesh.vertices, mesh.faces.astype(np.int64))
    colors = mesh.colors[kept]
    if settings.remove_floaters:
        vertices, faces, kept = cleanup.remove_floaters(vertices, faces, FLOATER_AREA_FRACTION)
        colors = colors[kept]
    moved = False
    if settings.watertight:
        vertices, faces = cleanup.make_watertight(vertices, faces)
        moved = True
    report("Finishing mesh", 0.3)
    target = settings.face_limit
    while settings.face_limit and len(faces) > settings.face_limit and target >= FACE_LIMIT_MIN:
        vertices, faces = decimate(vertices, faces, target)
        if settings.watertight:  # closing what the decimation may have pinched can add a few faces
            vertices, faces = cleanup.make_watertight(vertices, faces)
        target -= max(len(faces) - settings.face_limit, 0) + 1
        moved = True
    report("Finishing mesh", 0.8)
    vertices, faces, kept = cleanup.drop_unused_vertices(vertices, faces)
    colors = color_fn(vertices) if moved else colors[kept]
    report("Finishing mesh", 1.0)
    if not settings.texture_size or len(faces) == 0:
        return Mesh(vertices, faces, colors)
    report("Baking texture", 0.0)
    corner_uvs = unwrap(vertices, faces, settings.texture_size)
    report("Baking texture", 0.5)
    texture = bake(vertices, faces, corner_uvs, settings.texture_size, color_fn)
    report("Baking texture", 1.0)
    return Mesh(vertices, faces, colors, uvs=corner_uvs, texture=texture)


def decimate(vertices: np.ndarray, faces: np.ndarray, face_limit: int):
    """Quadric edge-collapse decimation (fast-simplification) to at most face_limit faces. → vertices, faces"""
    import fast_simplification

    from . import cleanup

    target = face_limit
    while True:
        points, triangles = fast_simplification.simplify(
            np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.int64), target_count=target)
        triangles = cleanup.drop_degenerate_faces(triangles)
        if len(triangles) <= face_limit or target <= FACE_LIMIT_MIN:
            return points.astype(np.float32), triangles
        target = max(FACE_LIMIT_MIN, target - (len(triangles) - face_limit) - 1)
