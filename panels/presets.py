"""The preset button in the Image to Mesh panel's header."""

import bpy
from bl_ui.utils import PresetPanel

from ..operators.presets import PRESET_SUBDIR, preset_directories


class IMAGE_TO_MESH_PT_presets(PresetPanel, bpy.types.Panel):
    bl_label = "Image to Mesh Presets"
    preset_subdir = PRESET_SUBDIR
    preset_operator = "script.execute_preset"
    preset_add_operator = "image_to_mesh.preset_add"

    def draw(self, context):  # PresetPanel.draw lists Blender's preset folders only, not the shipped presets
        layout = self.layout
        layout.emboss = "PULLDOWN_MENU"
        layout.operator_context = "EXEC_DEFAULT"
        self.path_menu(
            preset_directories(), self.preset_operator, filter_ext=lambda ext: ext.lower() == ".py",
            add_operator=self.preset_add_operator,
            display_name=lambda name: bpy.path.display_name(name, title_case=False),
        )
