"""examples/folder_to_meshes.py, the README's `blender -b -P` recipe, run in the bpy module."""

import importlib.util
import shutil

import bpy

from tests.blender.support import INPUT_PNG, REPO_ROOT


def load_recipe():
    spec = importlib.util.spec_from_file_location("folder_to_meshes", REPO_ROOT / "examples" / "folder_to_meshes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_becomes_glb_files_and_one_blend(addon_module, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for name in ("chair.png", "lamp.png"):
        shutil.copy(INPUT_PNG, images / name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")

    assert load_recipe().main([str(images), str(out), "--glb", "--blend", "--resolution", "32"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["chair.glb", "lamp.glb", "meshes.blend"]
    for name in ("chair.glb", "lamp.glb"):
        assert (out / name).read_bytes()[:4] == b"glTF"
    bpy.ops.wm.open_mainfile(filepath=str(out / "meshes.blend"))
    assert sorted(obj.name for obj in bpy.data.objects) == ["chair", "lamp"]
    assert bpy.data.objects["lamp"].location.x > bpy.data.objects["chair"].location.x


def test_a_folder_without_usable_images_fails_with_the_reason(addon_module, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a PNG")
    assert load_recipe().main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
