""".glb and textured .obj files (core.export through trimesh), read back with trimesh."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from core.errors import InputError
from core.export import srgb_to_linear
from core.mesh import Mesh


def textured_quad() -> Mesh:
    """Two triangles sharing an edge, with a UV seam along it (the second triangle's UVs are elsewhere)."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]], [[0.6, 0.6], [0.9, 0.9], [0.6, 0.9]]], np.float32)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)  # top half red, bottom half blue
    texture[4:] = (0, 0, 255)
    return Mesh(vertices, faces, np.full((4, 3), 0.5), uvs=uvs, texture=texture)


def test_glb_carries_uvs_and_texture_in_a_y_up_frame(tmp_path):
    mesh = textured_quad()
    mesh.save(tmp_path / "quad.glb")
    loaded = trimesh.load(tmp_path / "quad.glb", force="mesh", process=False)
    assert len(loaded.faces) == 2 and len(loaded.vertices) == 6  # the two vertices on the seam are split
    x, y, z = mesh.vertices.T
    expected = np.stack([x, z, -y], axis=1)  # Z up → glTF's Y up
    corners = loaded.vertices[loaded.faces].reshape(-1, 3)
    np.testing.assert_allclose(corners, expected[mesh.faces.reshape(-1)], atol=1e-6)
    # trimesh reports UVs with v up, as we store them
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces].reshape(-1, 2), mesh.uvs.reshape(-1, 2), atol=1e-6)
    image = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(image, mesh.texture)


def test_untextured_glb_has_linear_vertex_colours(tmp_path):
    mesh = Mesh(textured_quad().vertices, [[0, 1, 2], [0, 2, 3]], [[0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0.2, 0.2, 1]])
    mesh.save(tmp_path / "quad.glb")
    loaded = trimesh.load(tmp_path / "quad.glb", force="mesh", process=False)
    expected = np.round(srgb_to_linear(mesh.colors) * 255)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], expected)
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.21404, abs=1e-5)


def test_textured_obj_writes_its_material_and_an_image_named_after_it(tmp_path):
    textured_quad().save(tmp_path / "a.obj")
    textured_quad().save(tmp_path / "b.obj")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "a.mtl", "a.obj", "a_texture.png", "b.mtl", "b.obj", "b_texture.png"]
    assert "map_Kd a_texture.png" in (tmp_path / "a.mtl").read_text()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a_texture.png")), textured_quad().texture)
    loaded = trimesh.load(tmp_path / "a.obj", force="mesh", process=False)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces].reshape(-1, 2), textured_quad().uvs.reshape(-1, 2),
                               atol=1e-6)


def test_a_texture_needs_its_uvs():
    mesh = textured_quad()
    with pytest.raises(InputError, match="both its UVs and its texture"):
        Mesh(mesh.vertices, mesh.faces, mesh.colors, texture=mesh.texture)
    with pytest.raises(InputError, match="one \\(u, v\\) per face corner"):
        Mesh(mesh.vertices, mesh.faces, mesh.colors, uvs=mesh.uvs[:1], texture=mesh.texture)
