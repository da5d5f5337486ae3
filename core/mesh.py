"""The mesh this project produces: vertices, triangles, sRGB vertex colours and optionally a UV map with its
texture; saved as .ply, .obj (+ .mtl and .png when textured) or .glb."""

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}


@dataclass(eq=False)
class Mesh:
    """A triangle mesh in TripoSR's native frame (Z up, reference camera at +X, image-right +Y).

    vertices float32 (N, 3); faces int32 (M, 3), counter-clockwise seen from outside;
    colors float32 (N, 3), sRGB in [0, 1]. Arrays are converted to these dtypes on construction.
    Textured meshes also have uvs float32 (M, 3, 2), the UV of every face corner (core.texture's convention),
    and texture uint8 (H, W, 3), sRGB, row 0 at the top.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uvs: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None

    def __post_init__(self):
        self.vertices = _as_array(self.vertices, np.float32, "vertices")
        self.faces = _as_array(self.faces, np.int64, "faces")
        self.colors = _as_array(self.colors, np.float32, "colors")
        n = len(self.vertices)
        if len(self.colors) != n:
            raise InputError(f"Mesh has {n} vertices but {len(self.colors)} colours: give one colour per vertex.")
        if not np.isfinite(self.vertices).all():
            raise InputError("Mesh vertices contain NaN or infinite coordinates.")
        if self.colors.size and not (np.isfinite(self.colors).all() and self.colors.min() >= 0 and self.colors.max() <= 1):
            raise InputError("Mesh colours must be sRGB values in [0, 1].")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n):
            raise InputError(f"Mesh faces refer to vertex indices outside 0..{n - 1}.")
        self.faces = self.faces.astype(np.int32)
        if (self.uvs is None) != (self.texture is None):
            raise InputError("A textured mesh needs both its UVs and its texture.")
        if self.uvs is not None:
            self.uvs = np.ascontiguousarray(self.uvs, dtype=np.float32)
            self.texture = np.ascontiguousarray(self.texture, dtype=np.uint8)
            if self.uvs.shape != (len(self.faces), 3, 2) or not np.isfinite(self.uvs).all():
                raise InputError(f"Mesh UVs must be finite, one (u, v) per face corner: shape {(len(self.faces), 3, 2)}.")
            if self.texture.ndim != 3 or self.texture.shape[2] != 3 or not self.texture.size:
                raise InputError(f"A mesh texture must have shape (height, width, 3), got {self.texture.shape}.")

    def save(self, path) -> Path:
        """Write the mesh to `path` (.ply binary, .obj text or .glb, by suffix); a textured .obj gets its .mtl and
        .png beside it. Files appear only when complete. .ply and an untextured .obj carry vertex colours."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".glb" or (suffix == ".obj" and self.texture is not None):
            from .export import glb_bytes, textured_obj_files

            files = {path: glb_bytes(self)} if suffix == ".glb" else textured_obj_files(self, path)
            for target, data in files.items():
                _write_atomically(target, data)
            return path
        write = {".ply": self._ply_bytes, ".obj": self._obj_bytes}.get(suffix)
        if write is None:
            raise InputError(f"Cannot save a mesh as '{path.suffix or path.name}': use a .ply, .obj or .glb file name.")
        _write_atomically(path, write())
        return path

    @classmethod
    def load(cls, path) -> "Mesh":
        """Read a .ply (binary little-endian) or .obj file with vertex colours, as written by `save`."""
        path = Path(path)
        read = {".ply": _parse_ply, ".obj": _parse_obj}.get(path.suffix.lower())
        if read is None:
            raise InputError(f"Cannot read a mesh from '{path.name}': use a .ply or .obj file.")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InputError(f"Cannot read mesh file {path}: {error.strerror or error}.") from error
        return cls(*read(data, path))

    def _ply_bytes(self) -> bytes:
        header = (
            "ply\nformat binary_little_endian 1.0\ncomment written by Image to Mesh\n"
            f"element vertex {len(self.vertices)}\n"
            "property float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\n"
            f"element face {len(self.faces)}\n"
            "property list uchar int vertex_indices\nend_header\n"
        )
        vertex = np.empty(len(self.vertices), np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]))
        vertex["xyz"] = self.vertices
        vertex["rgb"] = np.round(np.clip(self.colors, 0.0, 1.0) * 255.0)
        face = np.empty(len(self.faces), np.dtype([("count", "u1"), ("indices", "<i4", 3)]))
        face["count"] = 3
        face["indices"] = self.faces
        return header.encode("ascii") + vertex.tobytes() + face.tobytes()

    def _obj_bytes(self) -> bytes:
        # %.9g round-trips float32 exactly.
        rows = np.hstack([self.vertices, self.colors]).astype(np.float64)
        vertex_lines = ("v %.9g %.9g %.9g %.6g %.6g %.6g\n" * len(rows)) % tuple(rows.ravel().tolist())
        face_lines = ("f %d %d %d\n" * len(self.faces)) % tuple((self.faces.astype(np.int64) + 1).ravel().tolist())
        return ("# written by Image to Mesh\n" + vertex_lines + face_lines).encode("ascii")


def _as_array(value, dtype, name: str) -> np.ndarray:
    try:
        array = np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InputError(f"Mesh {name} must be a numeric array: {error}") from error
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"Mesh {name} must have shape (n, 3), got {array.shape}.")
    return array


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it, so a failed save never leaves half a file."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise InputError(f"Cannot write {path}: {error.strerror or error}. Choose a folder you can write to.") from error
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes the file private; saved meshes get the usual mode
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise InputError(f"Cannot write {path}: {error.strerror or error}.") from error
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _broken(path: Path, what: str) -> InputError:
    return InputError(f"{path.name} is not a mesh file this add-on can read ({what}). Save it again as .ply or .obj.")


def _parse_ply(data: bytes, path: Path):
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise _broken(path, "no PLY header")
    body = data[end + len(b"end_header\n"):]
    elements = []  # (name, count, [(property, type) or (property, count_type, item_type)])
    for line in data[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if words[1:2] != ["binary_little_endian"]:
                raise _broken(path, f"PLY format '{' '.join(words[1:2])}', only binary_little_endian is supported")
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) in (3, 5):
            elements[-1][2].append(tuple(words[1:]))
        else:
            raise _broken(path, f"unexpected PLY header line '{line}'")

    arrays = {}
    offset = 0
    for name, count, properties in elements:
        try:
            if any(p[0] == "list" for p in properties):
                if len(properties) != 1:
                    raise _broken(path, f"PLY element '{name}' mixes a list with other properties")
                _, count_type, item_type, field = properties[0]
                dtype = np.dtype([("count", _PLY_TYPES[count_type]), (field, _PLY_TYPES[item_type], 3)])
            else:
                dtype = np.dtype([(field, _PLY_TYPES[kind]) for kind, field in properties])
        except KeyError as error:
            raise _broken(path, f"unknown PLY type {error}") from None
        if offset + count * dtype.itemsize > len(body):
            raise _broken(path, f"the file ends inside the '{name}' data")
        arrays[name] = np.frombuffer(body, dtype, count, offset)
        offset += count * dtype.itemsize
        if name == "face" and count and not (arrays[name]["count"] == 3).all():
            raise _broken(path, "only triangle faces are supported")

    vertex, face = arrays.get("vertex"), arrays.get("face")
    if vertex is None or not {"x", "y", "z"} <= set(vertex.dtype.names):
        raise _broken(path, "no vertex positions")
    vertices = np.stack([vertex[axis] for axis in "xyz"], axis=1)
    if {"red", "green", "blue"} <= set(vertex.dtype.names):
        colors = np.stack([vertex[channel] for channel in ("red", "green", "blue")], axis=1) / 255.0
    else:
        colors = np.ones_like(vertices)
    faces = face[face.dtype.names[1]] if face is not None else np.zeros((0, 3))
    return vertices, faces, colors


def _parse_obj(data: bytes, path: Path):
    lines = data.decode("utf-8", "replace").splitlines()
    vertex_rows = [line[2:] for line in lines if line.startswith("v ")]
    face_rows = [line[2:] for line in lines if line.startswith("f ")]
    corner_counts = np.array([len(row.split()) for row in face_rows], dtype=np.int64)
    try:
        vertex_values = np.array(" ".join(vertex_rows).split(), dtype=np.float64)
        corners = np.array(re.sub(r"/\S*", "", " ".join(face_rows)).split(), dtype=np.int64)
    except ValueError as error:
        raise _broken(path, f"a number cannot be read: {error}") from None
    columns = vertex_values.size // len(vertex_rows) if vertex_rows else 3
    if columns not in (3, 6) or vertex_values.size != columns * len(vertex_rows):
        raise _broken(path, "vertex lines must all hold x y z or x y z r g b")
    if (corner_counts < 3).any():
        raise _broken(path, "a face has fewer than three corners")
    vertex_values = vertex_values.reshape(-1, columns)
    vertices = vertex_values[:, :3]
    colors = vertex_values[:, 3:] if columns == 6 else np.ones_like(vertices)
    corners = np.where(corners < 0, corners + len(vertices), corners - 1)  # OBJ: 1-based, negative = from the end
    return vertices, _fan_triangles(corners, corner_counts), colors


def _fan_triangles(corners: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Split polygons (corner lists of the given lengths, concatenated) into triangle fans."""
    if (counts == 3).all():
        return corners.reshape(-1, 3)
    first = np.repeat(np.cumsum(counts) - counts, counts - 2)
    step = np.arange(len(first)) - np.repeat(np.cumsum(counts - 2) - (counts - 2), counts - 2)
    return np.stack([corners[first], corners[first + step + 1], corners[first + step + 2]], axis=1)
