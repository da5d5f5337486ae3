"""The artist's workflow in Blender: several images in one Generate, dropped files, presets, and the kept field."""

import shutil

import bpy
import numpy as np
import pytest

from tests.blender.support import INPUT_PNG, data_names, undo_context, viewport_override

RESOLUTION = 32


@pytest.fixture
def folder(tmp_path):
    """Three images: a.png, broken.png (not an image), c.png."""
    for name in ("a.png", "c.png"):
        shutil.copy(INPUT_PNG, tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG" * 10)
    return tmp_path


def x_extent(obj):
    coordinates = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", coordinates)
    return coordinates[0::3].min() + obj.location.x, coordinates[0::3].max() + obj.location.x


def test_file_handler_drop_of_two_files_adds_two_objects_side_by_side(folder):
    handler = bpy.types.FileHandler.bl_rna_get_subclass_py("IMAGE_TO_MESH_FH_images")
    assert handler.bl_import_operator == "image_to_mesh.generate_files"
    extensions = set(handler.bl_file_extensions.split(";"))
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".exr", ".bmp"} <= extensions
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    bpy.context.scene.image_to_mesh.resolution = RESOLUTION  # a drop uses the panel's settings
    with viewport_override():
        assert handler.poll_drop(bpy.context)
        # As Blender calls a file handler's operator: invoked, with the folder and the dropped files' names.
        result = bpy.ops.image_to_mesh.generate_files("INVOKE_DEFAULT", directory=str(folder),
                                                      files=[{"name": "a.png"}, {"name": "c.png"}])
    assert result == {"FINISHED"}
    first, second = bpy.data.objects["a"], bpy.data.objects["c"]
    assert tuple(first.location) == (1.0, 2.0, 3.0)
    assert tuple(second.location)[1:] == (2.0, 3.0)  # the row runs along +X from the cursor
    (first_min, first_max), (second_min, second_max) = x_extent(first), x_extent(second)
    width = first_max - first_min
    assert second_min - first_max == pytest.approx(0.2 * width, rel=1e-5)  # same image: gap = 20 % of the width
    assert len(second.data.vertices) == len(first.data.vertices) > 1000


def test_three_images_one_broken_give_two_objects_and_one_reported_failure(folder):
    names = [{"name": name} for name in ("a.png", "broken.png", "c.png")]
    result = bpy.ops.image_to_mesh.generate(directory=str(folder), files=names, resolution=RESOLUTION)
    assert result == {"FINISHED"}
    assert data_names() == {"objects": ["a", "c"], "meshes": ["a", "c"], "materials": ["a", "c"], "images": []}
    status = bpy.context.window_manager.image_to_mesh_job
    assert status.result.startswith("Added 2 of 3 objects. 1 failed: broken.png: ")
    assert "broken.png is not an image file that can be read" in status.result and not status.running


def test_a_folder_without_files_takes_every_image_in_it_by_name(folder):
    (folder / "notes.txt").write_text("not an image")
    assert bpy.ops.image_to_mesh.generate(directory=str(folder), resolution=RESOLUTION) == {"FINISHED"}
    assert [obj.name for obj in sorted(bpy.data.objects, key=lambda obj: obj.location.x)] == ["a", "c"]


def test_cancel_during_the_second_image_keeps_the_first_and_drops_the_rest(ext, folder, monkeypatch):
    shutil.copy(INPUT_PNG, folder / "d.png")
    handle, started = ext.generate.GenerateJob._handle, []

    def handle_and_cancel_the_second(job, event):  # Cancel pressed as the second image's job reports progress
        handle(job, event)
        if job not in started:
            started.append(job)
        if len(started) == 2:
            job.request_cancel()

    monkeypatch.setattr(ext.generate.GenerateJob, "_handle", handle_and_cancel_the_second)
    names = [{"name": name} for name in ("a.png", "c.png", "d.png")]
    result = bpy.ops.image_to_mesh.generate(directory=str(folder), files=names, resolution=RESOLUTION)
    assert result == {"FINISHED"} and len(started) == 2  # the third image never started
    assert data_names() == {"objects": ["a"], "meshes": ["a"], "materials": ["a"], "images": []}
    assert "Cancelled: the rest were skipped" in bpy.context.window_manager.image_to_mesh_job.result
    assert ext.generate.active_job() is None


def test_each_object_of_a_batch_is_its_own_undo_step(folder):
    with undo_context():
        bpy.ops.ed.undo_push(message="before generate")
        result = bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", True, directory=str(folder),
                                                files=[{"name": "a.png"}, {"name": "c.png"}], resolution=RESOLUTION)
        assert result == {"FINISHED"}
        bpy.ops.ed.undo()
        assert [obj.name for obj in bpy.data.objects] == ["a"]
        bpy.ops.ed.undo()
        assert len(bpy.data.objects) == 0
        bpy.ops.ed.redo()
        bpy.ops.ed.redo()
        assert sorted(obj.name for obj in bpy.data.objects) == ["a", "c"]


def test_a_second_generate_changing_only_the_resolution_reuses_the_encoded_image(ext):
    status = bpy.context.window_manager.image_to_mesh_job
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION, foreground_ratio=0.75)
    assert "Re-used" not in status.result
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=40, threshold=20.0, foreground_ratio=0.75)
    assert status.result.endswith("Re-used the encoded image.")
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=40, foreground_ratio=0.7)
    assert "Re-used" not in status.result  # another framing of the image: encoded again


def test_presets_save_list_and_apply(ext):
    settings = bpy.context.scene.image_to_mesh
    presets = ext.presets
    assert {"Draft", "Game asset", "Hero"} <= set(presets.preset_files())

    settings.resolution, settings.threshold, settings.foreground_ratio = 160, 12.5, 0.7
    settings.remove_background = False
    assert bpy.ops.image_to_mesh.preset_add(name="My Turntable") == {"FINISHED"}
    saved = presets.preset_files()["My Turntable"]
    assert saved.parent == presets.Path(bpy.utils.preset_paths(presets.PRESET_SUBDIR)[0])  # the user's folder

    def apply(name):
        result = bpy.ops.script.execute_preset(filepath=str(presets.preset_files()[name]),
                                               menu_idname="IMAGE_TO_MESH_PT_presets")
        assert result == {"FINISHED"}

    apply("Draft")
    assert (settings.resolution, settings.threshold, settings.remove_background) == (128, 25.0, True)
    assert settings.foreground_ratio == pytest.approx(0.85)
    apply("My Turntable")
    assert (settings.resolution, settings.threshold, settings.remove_background) == (160, 12.5, False)
    assert settings.foreground_ratio == pytest.approx(0.7)
    apply("Hero")
    assert settings.resolution == 384
