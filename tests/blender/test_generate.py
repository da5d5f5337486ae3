"""bpy.ops.image_to_mesh.generate adds exactly core's mesh, turned to face the Front view, coloured, undoable,
saved with the file, and computed in the worker process."""

import os
import signal
import time

import bpy
import numpy as np
import pytest

from tests.blender.support import INPUT_PNG, data_names, undo_context
from tests.procfs import posix_only

RESOLUTION = 32


@pytest.fixture(scope="module")
def core_mesh(core_model):
    """What core computes in this process for the same input and settings."""
    from core.pipeline import GenerateSettings, generate

    return generate(core_model, str(INPUT_PNG), GenerateSettings(resolution=RESOLUTION))


def mesh_arrays(obj):
    mesh = obj.data
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    faces = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", faces)
    colors = np.empty(len(mesh.vertices) * 4, np.float32)
    mesh.color_attributes["Color"].data.foreach_get("color_srgb", colors)
    return vertices.reshape(-1, 3), faces.reshape(-1, 3), colors.reshape(-1, 4)


def assert_matches_core(obj, core_mesh, *, atol=1e-5):
    vertices, faces, colors = mesh_arrays(obj)
    assert len(vertices) == len(core_mesh.vertices) > 1000
    assert len(faces) == len(core_mesh.faces) > 1000
    assert all(len(polygon.vertices) == 3 for polygon in obj.data.polygons[:100])
    x, y, z = core_mesh.vertices.T
    np.testing.assert_allclose(vertices, np.stack([y, -x, z], axis=1), atol=atol)  # -90° about Z
    np.testing.assert_array_equal(faces, core_mesh.faces)
    np.testing.assert_allclose(colors[:, :3], core_mesh.colors, atol=2e-4)  # Blender stores linear floats
    np.testing.assert_array_equal(colors[:, 3], 1.0)
    smooth = np.zeros(len(obj.data.polygons), bool)
    obj.data.polygons.foreach_get("use_smooth", smooth)
    assert smooth.all()  # smooth shading, as marching-cubes meshes are meant to be seen


def test_generate_from_file_adds_cores_mesh(core_mesh):
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    result = bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)

    assert result == {"FINISHED"}
    assert len(bpy.data.objects) == 1 and len(bpy.data.meshes) == 1
    obj = bpy.data.objects[0]
    assert obj.type == "MESH" and obj.name == "input"
    assert tuple(obj.location) == (1.0, 2.0, 3.0)
    assert obj.rotation_euler[:] == (0.0, 0.0, 0.0)
    assert obj.select_get() and bpy.context.view_layer.objects.active == obj
    assert_matches_core(obj, core_mesh)
    assert bpy.context.window_manager.image_to_mesh_job.result.startswith("Added 'input'")


def test_image_and_model_folder_with_spaces_and_non_ascii(ext, core_mesh, tmp_path, monkeypatch):
    """Also the extension, its worker and its cache folder run from such a folder here (tests/blender/conftest.py)."""
    import shutil

    from tests.blender.support import FIXTURE_DIR

    folder = tmp_path / "Mes images – José 画像"
    model = shutil.copytree(FIXTURE_DIR, folder / "Modèle TripoSR")
    image = shutil.copy(INPUT_PNG, folder / "mein Bild ß.png")
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(model))
    assert "Blender – Müller 画像" in ext.preferences.model_cache_dir()  # what the worker gets as its cache folder
    assert bpy.ops.image_to_mesh.generate(filepath=str(image), resolution=RESOLUTION) == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == "mein Bild ß"
    assert_matches_core(obj, core_mesh)


def test_generate_from_blender_image_adds_cores_mesh(core_mesh):
    image = bpy.data.images.load(str(INPUT_PNG))
    image.name = "Cat Photo.png"
    image.pack()  # packed: the file on disk is not needed any more

    assert bpy.ops.image_to_mesh.generate(image=image.name, resolution=RESOLUTION) == {"FINISHED"}
    assert [o.name for o in bpy.data.objects] == ["Cat Photo"]
    assert_matches_core(bpy.data.objects[0], core_mesh, atol=2e-4)


def test_panel_settings_are_used_when_no_arguments_are_given(core_mesh):
    settings = bpy.context.scene.image_to_mesh
    settings.image = bpy.data.images.load(str(INPUT_PNG))
    settings.resolution = RESOLUTION
    assert bpy.ops.image_to_mesh.generate() == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert len(obj.data.vertices) == len(core_mesh.vertices)


def test_material_reads_the_colour_attribute():
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)
    mesh = bpy.data.objects[0].data
    attribute = mesh.color_attributes["Color"]
    assert (attribute.domain, attribute.data_type) == ("POINT", "FLOAT_COLOR")
    assert mesh.color_attributes.active_color.name == "Color"
    assert mesh.color_attributes[mesh.color_attributes.render_color_index].name == "Color"

    material = mesh.materials[0]
    principled = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    links = principled.inputs["Base Color"].links
    assert len(links) == 1
    source = links[0].from_node
    assert source.bl_idname == "ShaderNodeVertexColor" and source.layer_name == "Color"


def test_names_are_unique_and_existing_data_is_untouched():
    existing = bpy.data.objects.new("input", bpy.data.meshes.new("input"))
    bpy.context.collection.objects.link(existing)
    existing_material = bpy.data.materials.new("input")

    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)

    assert len(existing.data.vertices) == 0 and existing.data.name == "input"
    new = bpy.context.view_layer.objects.active
    assert new is not existing and new.name == "input.001"
    assert new.data.materials[0] is not existing_material
    assert not existing.select_get()


def test_one_undo_removes_it_and_redo_brings_it_back():
    before = data_names()
    with undo_context():
        bpy.ops.ed.undo_push(message="before generate")
        result = bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", True, filepath=str(INPUT_PNG), resolution=RESOLUTION)
        assert result == {"FINISHED"}
        assert len(bpy.data.objects) == 1
        bpy.ops.ed.undo()
        assert data_names() == before
        bpy.ops.ed.redo()
        assert [o.name for o in bpy.data.objects] == ["input"]
        assert len(bpy.data.objects[0].data.color_attributes["Color"].data) > 1000


def test_saved_file_keeps_the_object(tmp_path):
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)
    vertices, faces, colors = mesh_arrays(bpy.data.objects[0])
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert len(bpy.data.objects) == 0

    bpy.ops.wm.open_mainfile(filepath=str(path))
    obj = bpy.data.objects["input"]
    for saved, loaded in zip((vertices, faces, colors), mesh_arrays(obj)):
        np.testing.assert_array_equal(saved, loaded)
    assert obj.data.materials[0].node_tree.nodes.get("Color Attribute") is not None


@posix_only
def test_jobs_run_in_one_kept_worker_process_and_a_killed_one_is_replaced(ext):
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)
    worker = ext.worker_session.current_client()
    first_pid = worker.pid
    assert first_pid != os.getpid() and worker.alive

    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)
    assert ext.worker_session.current_client().pid == first_pid

    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker.alive and time.monotonic() < deadline:  # the signal lands asynchronously
        time.sleep(0.05)
    assert not worker.alive
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION) == {"FINISHED"}
    assert ext.worker_session.current_client().pid not in (None, first_pid)
    assert len(bpy.data.objects) == 3
