"""The Output options in real Blender: a texture from the field with a face budget, save/reload, undo, re-bake
after a hand edit, watertight, floaters, quads, and the command line's .glb imported into Blender."""

import os
import subprocess
import sys

import bmesh
import bpy
import numpy as np
import pytest
import torch
from PIL import Image

from core.pipeline import GenerateSettings, field_colors, generate
from core.texture import texel_samples
from core.weights import load_model
from tests.blender import crafted_model as shape
from tests.blender.support import FIXTURE_DIR, INPUT_PNG, REPO_ROOT, data_names, undo_context
from tests.blender.test_orientation_and_render import render_front
from tests.fidelity import colour_errors, sample_texture, surface_samples

CHECKER_PLANE_SIZE = 16  # 32 texels a side: the checker has 11 cells across the body, 26 across the volume


@pytest.fixture(scope="module")
def checker_dir(tmp_path_factory):
    return shape.write_crafted_model(FIXTURE_DIR, tmp_path_factory.mktemp("checker_model"), checker=True,
                                     plane_size=CHECKER_PLANE_SIZE)


@pytest.fixture(scope="module")
def checker_model(checker_dir):
    return load_model(str(checker_dir), device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def checker_blend(ext, checker_dir, tmp_path_factory):
    """A .blend with one object generated at texture 1024 and face limit 20,000, and what it held before saving."""
    with pytest.MonkeyPatch.context() as env:  # module scope: set up before, and outliving, each test's own env
        env.setenv("IMAGE_TO_MESH_MODEL", str(checker_dir))
        bpy.ops.wm.read_homefile(use_empty=True)
        assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=160, texture_size=1024,
                                              face_limit=20000) == {"FINISHED"}
        obj = bpy.context.active_object
        before = snapshot(ext, obj)
        path = tmp_path_factory.mktemp("checker_blend") / "checker.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path, before


def open_blend(path):
    bpy.ops.wm.open_mainfile(filepath=str(path))
    obj = bpy.data.objects[0]
    bpy.context.view_layer.objects.active = obj
    return obj


def mesh_arrays(ext, mesh):
    """Local vertex positions (N, 3), triangles (T, 3) and their corner UVs (T, 3, 2)."""
    triangles, corner_uvs = ext.bake.triangles_and_uvs(mesh)
    return ext.bake.local_vertices(mesh), triangles, corner_uvs


def base_color_image(obj):
    material = obj.data.materials[0]
    principled = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    link = principled.inputs["Base Color"].links[0]
    assert link.from_node.type == "TEX_IMAGE"
    return link.from_node.image


def image_texture(image) -> np.ndarray:
    """The image as uint8 (H, W, 3), row 0 at the top (core.texture's layout)."""
    pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(pixels)
    rgba = pixels.reshape(image.size[1], image.size[0], 4)[::-1]
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def snapshot(ext, obj) -> dict:
    vertices, triangles, corner_uvs = mesh_arrays(ext, obj.data)
    image = base_color_image(obj)
    return dict(vertices=vertices, triangles=triangles, corner_uvs=corner_uvs, texture=image_texture(image),
                image=image.name, field=obj["image_to_mesh_field"], uv_maps=len(obj.data.uv_layers))


def stored_field(ext, obj):
    return np.load(ext.fields.field_path(obj["image_to_mesh_field"]))


def fidelity(ext, obj, model):
    """(vertex-colour error, texture error) at 10,000 random surface points, against the object's own field.
    The vertex colours are the field's own colours at the mesh's vertices (the best vertex colours can do)."""
    vertices, triangles, corner_uvs = mesh_arrays(ext, obj.data)
    vertices = ext.scene_object.to_triposr_frame(vertices)
    color_fn = field_colors(model, torch.from_numpy(stored_field(ext, obj)))
    return colour_errors(vertices, triangles, color_fn(vertices), color_fn, corner_uvs,
                         image_texture(base_color_image(obj)))


def edge_counts(obj) -> tuple[int, int]:
    """(boundary edges, non-manifold edges) as bmesh sees them."""
    mesh = bmesh.new()
    try:
        mesh.from_mesh(obj.data)
        boundary = sum(edge.is_boundary for edge in mesh.edges)
        non_manifold = sum(not (edge.is_manifold and edge.is_contiguous) and not edge.is_boundary
                           for edge in mesh.edges)
        return boundary, non_manifold
    finally:
        mesh.free()


def test_textured_generate_within_the_face_limit_survives_save_and_reload(ext, checker_blend, output_dir):
    path, before = checker_blend
    obj = open_blend(path)
    assert [o.name for o in bpy.data.objects] == [obj.name]
    assert 15000 < len(obj.data.polygons) <= 20000  # the raw surface has 55,612 faces
    assert len(obj.data.uv_layers) == 1
    image = base_color_image(obj)
    assert tuple(image.size) == (1024, 1024) and image.packed_file is not None
    after = snapshot(ext, obj)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)

    # UV islands do not overlap: no texel centre lies strictly inside two triangles.
    rows, columns, _, weights = texel_samples(after["corner_uvs"], 1024)
    strictly = (weights > 1e-6).all(axis=1)
    counts = np.bincount(rows[strictly] * 1024 + columns[strictly], minlength=1024 * 1024)
    assert counts.max() == 1 and counts.sum() > 0.4 * 1024 * 1024

    exported = path.with_suffix(".glb")  # Blender's own glTF exporter takes the texture along
    bpy.ops.export_scene.gltf(filepath=str(exported), use_selection=False)
    import trimesh

    loaded = trimesh.load(exported, force="mesh", process=False)
    assert loaded.visual.material.baseColorTexture.size == (1024, 1024)

    pixels = render_front(obj, output_dir / "checker_textured_front.png", size=(160, 120))
    covered = pixels[pixels[..., 3] > 0.99][:, :3]
    red = (covered[:, 0] > 0.5) & (covered[:, 2] < 0.2)
    cyan = (covered[:, 1] > 0.5) & (covered[:, 2] > 0.5) & (covered[:, 0] < 0.2)
    assert red.mean() > 0.25 and cyan.mean() > 0.25  # the checker's two colours, from the texture


def test_one_undo_step_removes_a_textured_result():
    with undo_context():
        bpy.ops.ed.undo_push(message="before")
        assert bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", True, filepath=str(INPUT_PNG), resolution=32,
                                              texture_size=64, face_limit=2000) == {"FINISHED"}
        assert len(bpy.data.images) == 1 and len(bpy.data.objects[0].data.polygons) <= 2000
        bpy.ops.ed.undo()
    assert data_names() == {"objects": [], "meshes": [], "materials": [], "images": []}


def test_texture_beats_vertex_colours_and_rebakes_after_a_hand_decimation(ext, checker_blend, checker_dir,
                                                                        checker_model, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(checker_dir))
    obj = open_blend(checker_blend[0])
    vertex_error, texture_error = fidelity(ext, obj, checker_model)
    print(f"\ngenerated, {len(obj.data.polygons)} faces: vertex colours {vertex_error:.4f}, texture {texture_error:.4f}")
    assert texture_error <= vertex_error / 3

    modifier = obj.modifiers.new("Decimate", "DECIMATE")
    modifier.ratio = 0.5
    with bpy.context.temp_override(object=obj, active_object=obj):
        bpy.ops.object.modifier_apply(modifier=modifier.name)
    edited = tmp_path / "edited.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(edited))
    obj = open_blend(edited)
    assert len(obj.data.polygons) <= 10000
    assert bpy.ops.image_to_mesh.bake_texture(texture_size=1024) == {"FINISHED"}
    vertex_error, texture_error = fidelity(ext, obj, checker_model)
    print(f"decimated by hand to {len(obj.data.polygons)} faces, re-baked: vertex colours {vertex_error:.4f}, "
          f"texture {texture_error:.4f}")
    assert texture_error <= vertex_error / 3


def test_rebake_without_the_field_or_with_another_model_changes_nothing(ext, checker_blend, checker_dir,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(checker_dir))
    obj = open_blend(checker_blend[0])
    before = snapshot(ext, obj)
    field = ext.fields.field_path(obj["image_to_mesh_field"])
    kept = tmp_path / field.name
    field.rename(kept)
    try:
        with pytest.raises(RuntimeError, match="is not on this computer"):
            bpy.ops.image_to_mesh.bake_texture(texture_size=512)
    finally:
        kept.rename(field)
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(FIXTURE_DIR))
    with pytest.raises(RuntimeError, match="was made with the model"):
        bpy.ops.image_to_mesh.bake_texture(texture_size=512)
    after = snapshot(ext, obj)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert len(bpy.data.images) == 1


def test_watertight_closes_the_fixture_and_a_field_cut_open(tmp_path, monkeypatch):
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32, watertight=True) == {"FINISHED"}
    assert edge_counts(bpy.context.active_object) == (0, 0)

    open_arm = shape.write_crafted_model(FIXTURE_DIR, tmp_path / "open_arm", arm_tip=1.0)  # past the volume
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(open_arm))
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=64) == {"FINISHED"}
    boundary, _ = edge_counts(bpy.context.active_object)
    assert boundary > 0  # the arm is cut open where the volume ends
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=64, watertight=True) == {"FINISHED"}
    assert edge_counts(bpy.context.active_object) == (0, 0)


def test_a_small_separate_blob_is_removed(ext, tmp_path, monkeypatch):
    blob = shape.write_crafted_model(FIXTURE_DIR, tmp_path / "blob", blob=True, plane_size=16)
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(blob))
    near_blob = {}
    for remove in (False, True):
        assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=128,
                                              remove_floaters=remove) == {"FINISHED"}
        vertices = ext.scene_object.to_triposr_frame(ext.bake.local_vertices(bpy.context.active_object.data))
        near_blob[remove] = int((np.abs(vertices - shape.BLOB_CENTRE).max(axis=1) < 0.15).sum())
    assert near_blob[False] > 20 and near_blob[True] == 0


def test_quads_option_gives_quads_with_a_texture():
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=48, quads=True, face_limit=1000,
                                          texture_size=64) == {"FINISHED"}
    obj = bpy.context.active_object
    sides = np.empty(len(obj.data.polygons), np.int32)
    obj.data.polygons.foreach_get("loop_total", sides)
    assert (sides == 4).mean() >= 0.9 and 500 < len(sides) < 2000
    assert len(obj.data.uv_layers) == 1 and tuple(base_color_image(obj).size) == (64, 64)
    assert "Color" in obj.data.color_attributes


def test_the_default_output_is_a_textured_asset():
    settings = bpy.context.scene.image_to_mesh
    for name in ("texture_size", "face_limit", "remove_floaters"):
        settings.property_unset(name)  # the conftest turns them off for the other tests
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=64) == {"FINISHED"}
    obj = bpy.context.active_object
    assert len(obj.data.polygons) <= 20000 and tuple(base_color_image(obj).size) == (1024, 1024)


def test_cli_glb_imports_into_blender_with_uvs_and_texture(ext, tmp_path, checker_dir, checker_model):
    result = subprocess.run(
        [sys.executable, "-m", "core", str(INPUT_PNG), "-o", str(tmp_path), "--model", str(checker_dir),
         "--resolution", "64", "--format", "glb", "--texture-size", "256", "--face-limit", "2000", "--device", "cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    bpy.ops.import_scene.gltf(filepath=str(tmp_path / "input.glb"))
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    assert len(obj.data.uv_layers) == 1 and len(obj.data.polygons) <= 2000
    image = base_color_image(obj)
    assert tuple(image.size) == (256, 256)
    # Read back through its UVs, the texture holds the checker field's colours at the surface: the file's frame
    # (Blender's importer turns glTF's Y up back to TripoSR's Z up), UVs and image line up.
    vertices, triangles, corner_uvs = mesh_arrays(ext, obj.data)
    face, weights, points = surface_samples(vertices, triangles, 2000)
    uv = np.einsum("kc,kcx->kx", weights, corner_uvs[face])
    codes = []
    generate(checker_model, INPUT_PNG, GenerateSettings(resolution=32), on_encoded=codes.append)
    truth = field_colors(checker_model, codes[0])(points.astype(np.float32))
    error = np.abs(sample_texture(image_texture(image), uv) - truth).mean()
    shuffled = np.abs(sample_texture(image_texture(image), uv[::-1]) - truth).mean()
    print(f"\ntexture vs field at the glb's surface: {error:.4f} (shuffled UVs: {shuffled:.4f})")
    assert error < 0.1 and error < shuffled / 4


def test_a_vertex_coloured_object_gets_unwrapped_and_baked_later(ext):
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32, face_limit=3000) == {"FINISHED"}
    obj = bpy.context.active_object
    assert len(obj.data.uv_layers) == 0 and len(bpy.data.images) == 0
    other = bpy.data.images.new("artist's image", 4, 4)
    obj.data.materials[0].node_tree.nodes.new("ShaderNodeTexImage").image = other  # never painted over
    assert bpy.ops.image_to_mesh.bake_texture(texture_size=64) == {"FINISHED"}
    assert [layer.name for layer in obj.data.uv_layers] == ["UVMap"]  # Smart UV Project
    image = base_color_image(obj)
    assert image is not other and tuple(image.size) == (64, 64) and image.packed_file is not None
    assert tuple(other.size) == (4, 4) and "Color" in obj.data.color_attributes
    texture = image_texture(image)
    assert bpy.ops.image_to_mesh.bake_texture(texture_size=64) == {"FINISHED"}  # the same image, painted again
    assert base_color_image(obj) == image and len(bpy.data.images) == 2
    np.testing.assert_array_equal(image_texture(image), texture)


def test_the_fields_folder_keeps_the_most_recently_used_within_its_budget(ext, tmp_path):
    for age, name in enumerate("abcd"):  # a oldest … d newest, one second apart
        np.save(tmp_path / f"{name}.npy", np.zeros(1000, np.float32))
        seconds = 1_000_000_000 + age
        os.utime(tmp_path / f"{name}.npy", (seconds, seconds))
    size = (tmp_path / "a.npy").stat().st_size
    os.utime(tmp_path / "b.npy")  # b used just now: the newest
    removed = ext.fields.prune(tmp_path, 2 * size, spare=tmp_path / "a.npy")
    assert [path.name for path in removed] == ["c.npy", "d.npy"]  # oldest first; a is the one being stored
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.npy", "b.npy"]


def test_storing_a_field_over_the_budget_drops_the_oldest_and_its_rebake_says_so(ext, tmp_path, monkeypatch):
    folder = tmp_path / "fields"
    folder.mkdir()
    monkeypatch.setattr(ext.fields, "user_folder", lambda name: str(folder))
    other = tmp_path / "other.png"
    with Image.open(INPUT_PNG) as image:
        image.transpose(Image.FLIP_LEFT_RIGHT).save(other)
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32) == {"FINISHED"}
    first = bpy.context.view_layer.objects.active
    first_field = ext.fields.field_path(first["image_to_mesh_field"])
    monkeypatch.setattr(ext.fields, "FIELDS_BUDGET_BYTES", first_field.stat().st_size)  # room for one field
    assert bpy.ops.image_to_mesh.generate(filepath=str(other), resolution=32) == {"FINISHED"}
    second = bpy.context.view_layer.objects.active
    assert [path.name for path in folder.iterdir()] == [second["image_to_mesh_field"] + ".npy"]
    assert bpy.ops.image_to_mesh.bake_texture(texture_size=64) == {"FINISHED"}
    bpy.context.view_layer.objects.active = first
    with pytest.raises(RuntimeError, match="is not on this computer"):
        bpy.ops.image_to_mesh.bake_texture(texture_size=64)


def test_a_texture_without_a_face_limit_is_refused_before_anything_is_made():
    with pytest.raises(RuntimeError, match="A texture needs a face limit from 4 to 100,000 faces"):
        bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32, texture_size=1024, face_limit=0)
    assert data_names() == {"objects": [], "meshes": [], "materials": [], "images": []}
