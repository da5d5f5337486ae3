"""Paths and helpers shared by the Blender tests (import as tests.blender.support)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "triposr_tiny"
INPUT_PNG = FIXTURE_DIR / "input.png"
DATA_KINDS = ("objects", "meshes", "materials", "images")


def data_names() -> dict:
    """The names of every object, mesh, material and image in the open file."""
    import bpy

    return {kind: sorted(item.name for item in getattr(bpy.data, kind)) for kind in DATA_KINDS}


def undo_context():
    """Undo needs a window in the bpy module; background mode also starts without an undo stack."""
    import bpy

    return bpy.context.temp_override(window=bpy.context.window_manager.windows[0])
