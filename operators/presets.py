"""Presets of the panel's settings: Blender's preset menu (AddPresetBase), the shipped presets and the user's own
(saved in Blender's preset folder, scripts/presets/image_to_mesh)."""

from pathlib import Path

import bpy
from bl_operators.presets import AddPresetBase

PRESET_SUBDIR = "image_to_mesh"
SHIPPED_PRESETS = Path(__file__).resolve().parent.parent / "presets"


def preset_directories() -> list[str]:
    """The shipped presets, then the user's (Blender's preset folders, where Add Preset saves)."""
    return [str(SHIPPED_PRESETS), *bpy.utils.preset_paths(PRESET_SUBDIR)]


def preset_files() -> dict[str, Path]:
    """Each preset's name as the menu shows it → its file; a user's preset hides a shipped one of the same name."""
    found = {}
    for folder in preset_directories():
        for path in sorted(Path(folder).glob("*.py")):
            found[bpy.path.display_name(path.name, title_case=False)] = path
    return found


class IMAGE_TO_MESH_OT_preset_add(AddPresetBase, bpy.types.Operator):
    """Save the panel's settings as a preset, or remove the chosen preset"""

    bl_idname = "image_to_mesh.preset_add"
    bl_label = "Add Image to Mesh Preset"
    preset_menu = "IMAGE_TO_MESH_PT_presets"
    preset_subdir = PRESET_SUBDIR
    preset_defines = ["settings = bpy.context.scene.image_to_mesh"]
    preset_values = [
        "settings.remove_background",
        "settings.foreground_ratio",
        "settings.resolution",
        "settings.threshold",
        "settings.texture_size",
        "settings.face_limit",
        "settings.remove_floaters",
        "settings.watertight",
        "settings.quads",
    ]
