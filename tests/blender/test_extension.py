"""The extension enables, exposes its operator, panel and preferences, and unregisters without leftovers."""

import sys

import addon_utils
import bpy
import pytest
from tests.blender.support import INPUT_PNG, REPO_ROOT


def _raise(error):
    raise error


def test_manifest_is_valid():
    import subprocess

    scripts = bpy.utils.system_resource("SCRIPTS")
    result = subprocess.run(
        [sys.executable, f"{scripts}/addons_core/bl_pkg/cli/blender_ext.py", "validate",
         "--valid-tags", f"{scripts}/modules/_bpy_internal/extensions/tags.py", str(REPO_ROOT)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_a_zip_built_by_blenders_own_tool_holds_exactly_the_extension_files(tmp_path):
    """`blender --command extension build` in the checkout: the manifest's exclusions keep development files out."""
    import subprocess
    import zipfile

    from tests.blender.support import extension_files

    scripts = bpy.utils.system_resource("SCRIPTS")
    result = subprocess.run(
        [sys.executable, f"{scripts}/addons_core/bl_pkg/cli/blender_ext.py", "build", "--source-dir",
         str(REPO_ROOT), "--output-dir", str(tmp_path),
         "--valid-tags", f"{scripts}/modules/_bpy_internal/extensions/tags.py"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = tmp_path.glob("*.zip")
    with zipfile.ZipFile(built) as archive:
        names = {name for name in archive.namelist() if not name.endswith("/")}
    expected = extension_files()
    assert {"__init__.py", "core/worker_process.py", "operators/generate.py", "README.md"} <= expected
    assert names == expected


def test_enabled_with_operator_panel_and_preferences(addon_module):
    assert addon_module == "bl_ext.user_default.image_to_mesh"
    assert addon_module in bpy.context.preferences.addons
    preferences = bpy.context.preferences.addons[addon_module].preferences
    assert preferences.model_source == "stabilityai/TripoSR"
    assert preferences.device == "auto"
    assert preferences.python_path == ""
    assert hasattr(bpy.types, "VIEW3D_PT_image_to_mesh")
    assert bpy.types.VIEW3D_PT_image_to_mesh.bl_category == "Image to Mesh"
    assert bpy.ops.image_to_mesh.generate.poll()
    settings = bpy.context.scene.image_to_mesh
    assert (settings.resolution, settings.threshold, settings.remove_background) == (256, 25.0, True)
    assert settings.image is None


def test_model_cache_is_the_extension_user_folder(ext):
    from pathlib import Path

    cache = Path(ext.preferences.model_cache_dir())
    assert cache.is_dir()
    assert cache.name == "models"
    assert Path(bpy.utils.extension_path_user(ext.preferences.__package__)) in cache.parents


def test_environment_variable_overrides_the_model_preference(ext, monkeypatch, tmp_path):
    preferences = ext.preferences.get_preferences()
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", "someone/other-model")
    assert ext.preferences.model_source(preferences) == "someone/other-model"
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(tmp_path))
    assert ext.preferences.model_source(preferences) == str(tmp_path.resolve())
    monkeypatch.delenv("IMAGE_TO_MESH_MODEL")
    assert ext.preferences.model_source(preferences) == "stabilityai/TripoSR"


def test_unregister_leaves_nothing_and_register_again_works(addon_module, ext):
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32)
    worker = ext.worker_session.current_client()
    assert worker is not None and worker.alive
    handlers_before = len(bpy.app.handlers.load_pre)

    addon_utils.disable(addon_module, default_set=True, handle_error=_raise)
    try:
        assert not worker.alive
        assert ext.worker_session.current_client() is None
        assert not hasattr(bpy.types.Scene, "image_to_mesh")
        assert not hasattr(bpy.types.WindowManager, "image_to_mesh_job")
        for name in ("VIEW3D_PT_image_to_mesh", "VIEW3D_PT_image_to_mesh_advanced", "IMAGE_TO_MESH_OT_generate",
                     "IMAGE_TO_MESH_OT_cancel", "IMAGE_TO_MESH_OT_unload_model"):
            assert not hasattr(bpy.types, name), name
        assert "generate" not in dir(bpy.ops.image_to_mesh)
        assert len(bpy.app.handlers.load_pre) == handlers_before - 1
        assert addon_module not in bpy.context.preferences.addons
    finally:
        addon_utils.enable(addon_module, default_set=True, handle_error=_raise)

    assert hasattr(bpy.types.Scene, "image_to_mesh")
    assert len(bpy.app.handlers.load_pre) == handlers_before
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32) == {"FINISHED"}
    assert len(bpy.data.objects) == 1


def test_unload_model_ends_the_worker(ext):
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=32)
    worker = ext.worker_session.current_client()
    assert worker.alive
    assert bpy.ops.image_to_mesh.unload_model() == {"FINISHED"}
    assert not worker.alive
    assert ext.worker_session.current_client() is None


@pytest.mark.parametrize("panel", ["VIEW3D_PT_image_to_mesh", "VIEW3D_PT_image_to_mesh_advanced"])
def test_panels_are_in_the_sidebar_tab(panel):
    cls = getattr(bpy.types, panel)
    assert (cls.bl_space_type, cls.bl_region_type, cls.bl_category) == ("VIEW_3D", "UI", "Image to Mesh")


ENABLE_AND_LIST_IMPORTS = r"""
import json, os, sys, tempfile
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp()
sys.path.insert(0, sys.argv[1])
import bpy
from scripts.dev_extension import enable_from_checkout
enable_from_checkout(sys.argv[1])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_enabling_the_extension_imports_no_heavy_library():
    """Blender's own process registers the extension without torch, Pillow, scipy or scikit-image (the worker
    process imports them); measured in a fresh process, as this one has long imported them."""
    import json
    import subprocess

    result = subprocess.run([sys.executable, "-c", ENABLE_AND_LIST_IMPORTS, str(REPO_ROOT)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "bl_ext" in imported  # the extension was enabled
    assert imported & {"torch", "PIL", "scipy", "skimage", "huggingface_hub", "yaml"} == set()
