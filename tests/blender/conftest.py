"""Blender tests run in the PyPI bpy module with a scratch user profile and the checkout loaded as the
extension bl_ext.user_default.image_to_mesh. The model is the tiny parity fixture (a local folder)."""

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest


if "bpy" not in sys.modules:
    # Spaces and non-ASCII, as in many users' home folders: the extension, its worker and its cache live under it.
    _PROFILE = tempfile.mkdtemp(prefix="image-to-mesh Blender – Müller 画像 ")
    os.environ["BLENDER_USER_RESOURCES"] = _PROFILE
elif not os.environ.get("BLENDER_USER_RESOURCES"):
    raise RuntimeError("bpy was imported before BLENDER_USER_RESOURCES was set: the tests would use a real profile.")

import bpy  # noqa: E402  (after BLENDER_USER_RESOURCES)

from scripts.dev_extension import enable_from_checkout  # noqa: E402
from tests.blender.support import FIXTURE_DIR, REPO_ROOT  # noqa: E402


@pytest.fixture(scope="session")
def addon_module() -> str:
    name = enable_from_checkout(REPO_ROOT)
    yield name
    close = getattr(sys.modules.get(name + ".worker_session"), "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="session")
def ext(addon_module):
    """The extension's submodules, e.g. ext.generate, ext.worker_session, ext.scene_object."""

    class Modules:
        def __getattr__(self, short):
            for sub in ("operators." + short, short):
                try:
                    return importlib.import_module(f"{addon_module}.{sub}")
                except ModuleNotFoundError:
                    continue
            raise AttributeError(short)

    return Modules()


@pytest.fixture(autouse=True)
def empty_scene(request, monkeypatch):
    """Every test starts from an empty file with the tiny model chosen, and leaves no job running."""
    if "addon_module" not in request.fixturenames and "ext" not in request.fixturenames:
        request.getfixturevalue("addon_module")
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(FIXTURE_DIR))
    bpy.ops.wm.read_homefile(use_empty=True)
    # The raw surface unless a test asks for the Output options (tests/blender/test_asset.py): comparable with
    # core's own mesh, and quick.
    settings = bpy.context.scene.image_to_mesh
    settings.texture_size, settings.face_limit, settings.remove_floaters = 0, 0, False
    yield
    generate = sys.modules.get(request.getfixturevalue("addon_module") + ".operators.generate")
    if generate is not None and generate.active_job() is not None:
        generate.active_job().cancel()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Renders and other artefacts worth looking at: out/tests/blender (ignored by git)."""
    path = REPO_ROOT / "out" / "tests" / "blender"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def core_model():
    """The tiny model loaded in this process, to compare the extension's result with core's own."""
    from core.weights import load_model

    return load_model(str(FIXTURE_DIR), device="cpu", allow_download=False)


def pytest_sessionfinish(session, exitstatus):
    profile = globals().get("_PROFILE")
    if profile:
        shutil.rmtree(profile, ignore_errors=True)
