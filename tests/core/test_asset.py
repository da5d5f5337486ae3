"""From a marching-cubes surface to an asset (core.cleanup, core.asset, core.texture), on analytic fields."""

import numpy as np
import pytest
from skimage.measure import marching_cubes

from core import cleanup
from core.asset import FLOATER_AREA_FRACTION, AssetSettings, decimate, finish_mesh
from core.errors import InputError
from core.mesh import Mesh
from core.texture import bake, fill_uncovered, padding_for, texel_samples, unwrap
from tests.fidelity import colour_errors

RADIUS = 0.87


def surface(density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of density > 0 on TripoSR's grid, faces wound outward (as core.extract makes them)."""
    resolution = density.shape[0]
    vertices, faces, _, _ = marching_cubes(density, 0.0)
    return (vertices / (resolution - 1) * 2 * RADIUS - RADIUS).astype(np.float32), faces[:, ::-1].astype(np.int64)


def grid(resolution: int):
    axis = np.linspace(-RADIUS, RADIUS, resolution)
    return np.meshgrid(axis, axis, axis, indexing="ij")


def sphere(resolution=64, radius=0.5, centre=(0.0, 0.0, 0.0)):
    x, y, z = grid(resolution)
    return radius - np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)


def checker(cells_across: int = 8, width: float = 1.0):
    """A colour field with sharp detail: a 3D checker of red and blue cells, `cells_across` over `width`."""
    def color_fn(points):
        parity = np.floor(np.asarray(points) * cells_across / width).astype(np.int64).sum(axis=1) % 2
        return np.where(parity[:, None] == 1, [0.9, 0.15, 0.1], [0.1, 0.2, 0.85]).astype(np.float32)
    return color_fn


def edge_report(faces: np.ndarray, vertex_count: int) -> tuple[int, int]:
    """(boundary edges, non-manifold edges): edges with one face, and edges with more than two faces or two
    faces running the same way."""
    _, counts, _ = cleanup.edge_counts(faces, vertex_count)
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    _, directed = np.unique(start * vertex_count + end, return_counts=True)
    return int((counts == 1).sum()), int((counts > 2).sum() + (directed > 1).sum())


def signed_volume(vertices, faces) -> float:
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def cube(side=1.0, offset=(0.0, 0.0, 0.0)):
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32) * side + offset
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int64)
    return corners, faces


def test_duplicate_vertices_merge_and_collapsed_faces_go():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 3, 4], [0, 2, 1], [1, 3, 2]])
    merged, merged_faces, kept = cleanup.merge_duplicate_vertices(vertices, faces)
    np.testing.assert_array_equal(kept, [0, 1, 2, 4])
    # [0, 2, 1] repeats [0, 1, 2] with other winding (a second copy), [1, 3, 2] collapses onto vertex 1 twice
    np.testing.assert_array_equal(merged_faces, [[0, 1, 2], [0, 1, 3]])
    np.testing.assert_array_equal(merged, vertices[[0, 1, 2, 4]])


@pytest.mark.parametrize("fraction, kept", [(0.019, False), (0.021, True)])
def test_floaters_below_two_percent_of_the_largest_piece_are_removed(fraction, kept):
    big_vertices, big_faces = cube(1.0)
    small_vertices, small_faces = cube(np.sqrt(fraction), offset=(3.0, 0.0, 0.0))  # area = fraction × the big one's
    vertices = np.concatenate([big_vertices, small_vertices])
    faces = np.concatenate([big_faces, small_faces + 8])
    out_vertices, out_faces, out_kept = cleanup.remove_floaters(vertices, faces, FLOATER_AREA_FRACTION)
    assert len(out_faces) == (24 if kept else 12)
    np.testing.assert_array_equal(out_kept, np.arange(16 if kept else 8))


def test_a_small_separate_blob_is_removed_from_a_field():
    x, y, z = grid(64)
    field = np.maximum(sphere(64), 0.06 - np.sqrt((x - 0.72) ** 2 + y ** 2 + z ** 2))
    vertices, faces = surface(field)
    assert len(np.unique(cleanup.piece_labels(faces, len(vertices)))) == 2
    out_vertices, out_faces, _ = cleanup.remove_floaters(vertices, faces, FLOATER_AREA_FRACTION)
    assert len(np.unique(cleanup.piece_labels(out_faces, len(out_vertices)))) == 1
    assert out_vertices[:, 0].max() < 0.51  # only the sphere of radius 0.5 is left


def test_watertight_closes_a_surface_cut_open_by_the_grid():
    x, y, z = grid(48)
    field = 0.3 - np.sqrt(y ** 2 + z ** 2)  # a cylinder along x through the whole volume: open at both ends
    vertices, faces = surface(field)
    assert edge_report(faces, len(vertices))[0] > 0
    closed_vertices, closed_faces = cleanup.make_watertight(vertices, faces)
    assert edge_report(closed_faces, len(closed_vertices)) == (0, 0)
    assert len(closed_vertices) == len(vertices) + 2  # one fan centre per hole
    assert signed_volume(closed_vertices, closed_faces) == pytest.approx(np.pi * 0.3 ** 2 * 2 * RADIUS, rel=0.02)


def test_watertight_mends_non_manifold_edges_and_pinched_holes():
    vertices, faces = cube(1.0)
    fin = np.concatenate([vertices, [[0.5, -1.0, 0.0]]]).astype(np.float32)  # a third face on edge 0-1 ...
    faces = np.concatenate([np.delete(faces, 2, axis=0), [[0, 1, 8]]])  # ... and a hole where face 2 was
    assert edge_report(faces, len(fin)) == (5, 2)  # edge 0-1: three faces, two of them running 0 → 1
    closed_vertices, closed_faces = cleanup.make_watertight(fin, faces)
    assert edge_report(closed_faces, len(closed_vertices)) == (0, 0)


def test_decimation_respects_the_limit_and_keeps_the_shape():
    vertices, faces = surface(sphere(96))
    assert len(faces) > 25_000
    small_vertices, small_faces = decimate(vertices, faces, 2000)
    assert 1900 <= len(small_faces) <= 2000
    distance = np.linalg.norm(small_vertices, axis=1)
    assert np.abs(distance - 0.5).max() < 0.01  # within 2 % of the radius
    assert edge_report(small_faces, len(small_vertices)) == (0, 0)  # closed, every edge wound both ways
    assert signed_volume(small_vertices, small_faces) == pytest.approx(4 / 3 * np.pi * 0.5 ** 3, rel=0.02)  # outward


def test_every_texel_inside_a_uv_triangle_is_covered_and_islands_do_not_overlap():
    vertices, faces = surface(sphere(24))
    size = 64
    uvs = unwrap(vertices, faces, size)
    rows, columns, face, weights = texel_samples(uvs, size)
    covered = np.zeros((size, size), bool)
    covered[rows, columns] = True

    # Brute force: every texel centre against every triangle.
    centres_v, centres_u = np.mgrid[0:size, 0:size]
    u, v = (centres_u.reshape(-1) + 0.5) / size, 1 - (centres_v.reshape(-1) + 0.5) / size
    a, b, c = uvs[:, 0].astype(np.float64), uvs[:, 1].astype(np.float64), uvs[:, 2].astype(np.float64)

    def cross(p, q, pu, pv):
        return (q[:, 0] - p[:, 0])[:, None] * (pv[None] - p[:, 1][:, None]) \
            - (q[:, 1] - p[:, 1])[:, None] * (pu[None] - p[:, 0][:, None])

    d1, d2, d3 = cross(a, b, u, v), cross(b, c, u, v), cross(c, a, u, v)
    strictly = ((d1 > 1e-9) & (d2 > 1e-9) & (d3 > 1e-9)) | ((d1 < -1e-9) & (d2 < -1e-9) & (d3 < -1e-9))
    assert strictly.any(axis=0).sum() > 0.3 * size * size
    np.testing.assert_array_equal(covered.reshape(-1)[strictly.any(axis=0)], True)
    assert strictly.sum(axis=0).max() == 1  # no texel centre lies strictly inside two triangles: no overlap
    assert (weights >= -1e-6).all() and np.allclose(weights.sum(axis=1), 1.0)


def test_the_padding_takes_the_nearest_covered_texels_colour():
    covered = np.zeros((6, 6), bool)
    covered[1, 1] = covered[4, 5] = True
    image = np.zeros((6, 6, 3), np.float32)
    image[1, 1], image[4, 5] = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    filled = fill_uncovered(image, covered)
    assert (filled[:3, :3] == (1.0, 0.0, 0.0)).all() and (filled[3:, 4:] == (0.0, 0.0, 1.0)).all()
    assert (filled.sum(axis=2) == 1.0).all()  # nothing is left black: no filter or mip level can read a hole


def test_a_bake_fills_islands_and_the_padding_between_them():
    vertices, faces = surface(sphere(32))
    size = 128
    uvs = unwrap(vertices, faces, size)
    texture = bake(vertices, faces, uvs, size, checker(4))
    rows, columns, _, _ = texel_samples(uvs, size)
    covered = np.zeros((size, size), bool)
    covered[rows, columns] = True
    assert 0.3 < covered.mean() < 0.95  # islands and padding both exist
    palette = (np.round(np.array([[0.9, 0.15, 0.1], [0.1, 0.2, 0.85]]) * 255)).astype(np.uint8)
    is_palette = (texture[:, :, None, :] == palette[None, None]).all(axis=3).any(axis=2)
    assert is_palette.all()  # covered texels hold the field's colours, padding texels a neighbour's
    assert padding_for(1024) == 4 and padding_for(128) == 2


def test_finish_mesh_settings_are_checked():
    with pytest.raises(InputError, match="Texture size"):
        AssetSettings(texture_size=8).validate()
    with pytest.raises(InputError, match="Face limit"):
        AssetSettings(face_limit=2).validate()
    for face_limit in (0, 100_001):  # no limit, or more than UV unwrapping does in reasonable time
        with pytest.raises(InputError, match="A texture needs a face limit from 4 to 100,000 faces"):
            AssetSettings(texture_size=1024, face_limit=face_limit).validate()
    AssetSettings(texture_size=1024, face_limit=100_000).validate()
    AssetSettings(texture_size=0, face_limit=0).validate()


def test_texture_beats_vertex_colours_at_the_same_face_count():
    """The field's own colour at 10,000 random points of the 20k-face mesh: a 1024² texture from the field against
    vertex colours (figures printed for the README)."""
    vertices, faces = surface(sphere(160, radius=0.6))
    color_fn = checker(8, width=1.2)  # 8 cells across the sphere
    mesh = Mesh(vertices, faces, color_fn(vertices))
    textured = finish_mesh(mesh, color_fn, AssetSettings(texture_size=1024, face_limit=20000))
    assert len(textured.faces) <= 20000 and textured.texture.shape == (1024, 1024, 3)
    vertex_error, texture_error = colour_errors(textured.vertices, textured.faces, textured.colors, color_fn,
                                               textured.uvs, textured.texture)
    print(f"\nmean colour error at 10,000 points, 20k faces: vertex colours {vertex_error:.4f}, "
          f"1024² texture {texture_error:.4f} ({texture_error / vertex_error:.2f}×)")
    assert texture_error <= vertex_error / 3
