import os
import stat

import numpy as np
import pytest

from core.errors import InputError
from core.mesh import Mesh


def signed_volume(mesh: Mesh) -> float:
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def tetrahedron() -> Mesh:
    vertices = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    faces = [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]  # counter-clockwise seen from outside
    colors = [[0, 0, 0], [1, 0, 0], [0, 0.5, 0], [0.2, 0.4, 1]]
    return Mesh(vertices, faces, colors)


def random_mesh(n=2000, m=3000, seed=0) -> Mesh:
    rng = np.random.default_rng(seed)
    return Mesh(
        rng.normal(size=(n, 3)).astype(np.float32) * 0.5,
        rng.integers(0, n, size=(m, 3)),
        rng.uniform(size=(n, 3)),
    )


def test_construction_converts_dtypes():
    mesh = tetrahedron()
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape == (4, 3)
    assert mesh.faces.dtype == np.int32 and mesh.faces.shape == (4, 3)
    assert mesh.colors.dtype == np.float32 and mesh.colors.shape == (4, 3)
    assert signed_volume(mesh) == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "vertices, faces, colors, message",
    [
        (np.zeros((4, 2)), [[0, 1, 2]], np.zeros((4, 3)), "shape"),
        (np.zeros((4, 3)), [[0, 1, 4]], np.zeros((4, 3)), "outside"),
        (np.zeros((4, 3)), [[0, 1, -1]], np.zeros((4, 3)), "outside"),
        (np.zeros((4, 3)), [[0, 1, 2]], np.zeros((3, 3)), "one colour per vertex"),
        (np.zeros((4, 3)), [[0, 1, 2]], np.full((4, 3), 1.5), r"\[0, 1\]"),
        (np.full((4, 3), np.nan), [[0, 1, 2]], np.zeros((4, 3)), "NaN"),
        (np.zeros((4, 3)), [["a", "b", "c"]], np.zeros((4, 3)), "numeric"),
    ],
)
def test_invalid_mesh_is_refused(vertices, faces, colors, message):
    with pytest.raises(InputError, match=message):
        Mesh(vertices, faces, colors)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".PLY"])
def test_save_load_round_trip(tmp_path, suffix):
    mesh = random_mesh()
    path = mesh.save(tmp_path / f"mesh{suffix}")
    loaded = Mesh.load(path)
    np.testing.assert_array_equal(loaded.vertices, mesh.vertices)  # float32 stored exactly in both formats
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    colour_tolerance = 0.5 / 255 + 1e-6 if suffix.lower() == ".ply" else 1e-5
    np.testing.assert_allclose(loaded.colors, mesh.colors, atol=colour_tolerance)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_winding_survives_round_trip(tmp_path):
    mesh = tetrahedron()
    for name in ("t.ply", "t.obj"):
        loaded = Mesh.load(mesh.save(tmp_path / name))
        assert signed_volume(loaded) == pytest.approx(1 / 6)


def test_ply_is_binary_little_endian_with_uchar_colours(tmp_path):
    mesh = tetrahedron()
    data = mesh.save(tmp_path / "t.ply").read_bytes()
    header, body = data.split(b"end_header\n")
    assert b"format binary_little_endian 1.0" in header
    assert b"property uchar red" in header and b"property list uchar int vertex_indices" in header
    assert len(body) == 4 * (12 + 3) + 4 * (1 + 12)
    vertex = np.frombuffer(body, np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]), 4)
    np.testing.assert_array_equal(vertex["rgb"][3], [51, 102, 255])  # round(c * 255)
    np.testing.assert_array_equal(vertex["xyz"], mesh.vertices)


def test_obj_lines(tmp_path):
    text = tetrahedron().save(tmp_path / "t.obj").read_text()
    lines = text.splitlines()
    assert "v 0 0 1 0.2 0.4 1" in lines
    assert "f 1 3 2" in lines  # 1-based


def test_obj_from_elsewhere_with_quads_and_slashes(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("# other tool\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1 4//1\n")
    mesh = Mesh.load(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(mesh.colors, np.ones((4, 3)))


def test_empty_mesh_round_trip(tmp_path):
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    for name in ("e.ply", "e.obj"):
        loaded = Mesh.load(empty.save(tmp_path / name))
        assert loaded.vertices.shape == (0, 3) and loaded.faces.shape == (0, 3)


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"\.ply, \.obj or \.glb"):
        tetrahedron().save(tmp_path / "mesh.stl")
    with pytest.raises(InputError, match=r"\.ply or \.obj"):
        Mesh.load(tmp_path / "mesh.glb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, content",
    [
        ("truncated.ply", None),
        ("ascii.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n"),
        ("garbage.ply", b"\x00\x01 not a ply at all"),
        ("badtype.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty quux x\nend_header\n"),
        ("letters.obj", b"v 0 0 zero\nf 1 1 1\n"),
        ("ragged.obj", b"v 0 0 0\nv 1 1\n"),
    ],
)
def test_broken_file_is_refused(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        data = random_mesh().save(tmp_path / "whole.ply").read_bytes()
        content = data[: len(data) - 100]
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a mesh file"):
        Mesh.load(path)


def test_missing_file_and_unwritable_folder(tmp_path):
    with pytest.raises(InputError, match="Cannot read"):
        Mesh.load(tmp_path / "absent.ply")
    with pytest.raises(InputError, match="Cannot write"):
        tetrahedron().save(tmp_path / "no" / "such" / "folder" / "t.ply")


def test_failed_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "mesh.ply"  # a folder in the way: the final rename fails for real
    target.mkdir()
    (target / "keep.txt").write_text("untouched")
    with pytest.raises(InputError, match="Cannot write"):
        random_mesh().save(target)
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left beside it
    assert (target / "keep.txt").read_text() == "untouched"


def test_saved_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = tetrahedron().save(tmp_path / "mesh.obj")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_large_mesh_saves(tmp_path):
    mesh = random_mesh(n=500_000, m=1_000_000)
    loaded = Mesh.load(mesh.save(tmp_path / "big.ply"))
    assert len(loaded.vertices) == 500_000 and len(loaded.faces) == 1_000_000
