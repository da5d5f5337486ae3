"""Paths and helpers shared by the Blender tests (import as tests.blender.support)."""

import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "triposr_tiny"
INPUT_PNG = FIXTURE_DIR / "input.png"
DATA_KINDS = ("objects", "meshes", "materials", "images")
# What the extension is: its top-level modules, its packages, its manifest and README; the rest is for development.
EXTENSION_PACKAGES = ("core", "operators", "panels")
EXTENSION_TOP_FILES = ("blender_manifest.toml", "README.md")


def extension_files() -> set[str]:
    """The checkout's tracked files that belong in the extension's zip."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return {name for name in tracked.stdout.split("\0") if name and (
        name.split("/")[0] in EXTENSION_PACKAGES or name in EXTENSION_TOP_FILES
        or ("/" not in name and name.endswith(".py")))}


def data_names() -> dict:
    """The names of every object, mesh, material and image in the open file."""
    import bpy

    return {kind: sorted(item.name for item in getattr(bpy.data, kind)) for kind in DATA_KINDS}


def undo_context():
    """Undo needs a window in the bpy module; background mode also starts without an undo stack."""
    import bpy

    return bpy.context.temp_override(window=bpy.context.window_manager.windows[0])


def start_job(ext, **arguments):
    """A Generate job started through the modal operator's steps (timers never fire in the bpy module)."""
    import bpy

    arguments = dict(filepath=str(INPUT_PNG), resolution=32) | arguments
    job = ext.generate.GenerateJob(ext.generate.build_request(bpy.context, **arguments), python=None)
    job.start()
    return job


def poll_until(job, condition, timeout=120.0, pause=0.02):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        job.poll()
        time.sleep(pause)
    assert condition(), f"timed out at stage {job.stage!r}"


def viewport_override():
    """The context of the 3D viewport's sidebar, where the panel's button and dropped files act."""
    import bpy

    window = bpy.context.window_manager.windows[0]
    area = next(area for area in window.screen.areas if area.type == "VIEW_3D")
    region = next(region for region in area.regions if region.type == "UI")
    return bpy.context.temp_override(window=window, area=area, region=region)
