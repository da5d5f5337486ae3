"""Textured and glTF files through trimesh: .glb (UVs + embedded PNG, or vertex colours) and .obj + .mtl + .png.

glTF is Y up: the mesh is turned from TripoSR's Z-up frame by (x, y, z) → (x, z, −y), which a glTF importer
(Blender's) turns back, so every format opens in the same frame.
"""

from pathlib import Path

import numpy as np

from .mesh import Mesh

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=np.float32)
ROUGHNESS = 0.8  # a matte default, as the add-on's material


def glb_bytes(mesh: Mesh) -> bytes:
    from trimesh.exchange.gltf import export_glb

    return export_glb(_trimesh(mesh, Z_UP_TO_Y_UP), include_normals=True)


def textured_obj_files(mesh: Mesh, path: Path) -> dict[Path, bytes]:
    """{path: the .obj, its .mtl, its .png} for a textured mesh."""
    from trimesh.exchange.obj import export_obj

    text, files = export_obj(_trimesh(mesh, name=f"{path.stem}_texture"), include_normals=False, include_color=False, include_texture=True,
                             return_texture=True, write_texture=False, mtl_name=f"{path.stem}.mtl")
    return {path: text.encode("utf-8"), **{path.parent / name: data for name, data in files.items()}}


def split_at_seams(mesh: Mesh):
    """One vertex per distinct (vertex, UV) pair, as glTF and trimesh need. → vertex index (K,), uv (K, 2),
    faces (M, 3) into those K vertices"""
    corners = np.concatenate([mesh.faces.reshape(-1, 1).astype(np.float64), mesh.uvs.reshape(-1, 2)], axis=1)
    unique, inverse = np.unique(corners, axis=0, return_inverse=True)
    return unique[:, 0].astype(np.int64), unique[:, 1:].astype(np.float32), inverse.reshape(-1, 3)


def _trimesh(mesh: Mesh, rotation=None, name=None):
    """A trimesh with the texture in a PBR material (glTF), or, given a name, in a plain white-diffuse material
    whose image file takes that name (OBJ: `<name>.png`, so two meshes in one folder never share it)."""
    import trimesh
    from PIL import Image

    vertices = mesh.vertices if rotation is None else mesh.vertices @ rotation.T
    if mesh.texture is None:
        rgba = np.full((len(mesh.vertices), 4), 255, np.uint8)
        rgba[:, :3] = np.round(srgb_to_linear(mesh.colors) * 255.0)  # glTF vertex colours are linear
        return trimesh.Trimesh(vertices, mesh.faces, vertex_colors=rgba, process=False)
    vertex_index, uv, faces = split_at_seams(mesh)
    image = Image.fromarray(mesh.texture)
    if name is None:
        material = trimesh.visual.material.PBRMaterial(
            name="texture", baseColorTexture=image, metallicFactor=0.0, roughnessFactor=ROUGHNESS)
    else:
        material = trimesh.visual.material.SimpleMaterial(
            name=name, image=image, diffuse=(255, 255, 255, 255), ambient=(255, 255, 255, 255),
            specular=(0, 0, 0, 255))
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices[vertex_index], faces, visual=visual, process=False)


def srgb_to_linear(colors: np.ndarray) -> np.ndarray:
    colors = np.clip(colors, 0.0, 1.0)
    return np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)

