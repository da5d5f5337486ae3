"""The 3D viewport sidebar tab "Image to Mesh": pick an image, set options, Generate 3D, watch progress."""

import bpy

from ..core.asset import DEFAULT_TEXTURE_SIZE
from ..operators.fields import is_generated
from ..properties import job_status, scene_settings
from .presets import IMAGE_TO_MESH_PT_presets


class _SidebarPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Image to Mesh"


class VIEW3D_PT_image_to_mesh(_SidebarPanel, bpy.types.Panel):
    bl_label = "Image to Mesh"

    def draw_header_preset(self, context):
        IMAGE_TO_MESH_PT_presets.draw_panel_header(self.layout)

    def draw(self, context):
        layout = self.layout
        settings = scene_settings(context)
        status = job_status(context)

        layout.template_ID_preview(settings, "image", new="image.new", open="image.open", rows=3, cols=6)
        if settings.image is None:
            layout.prop(settings, "filepath", text="or File")

        column = layout.column()
        column.use_property_split = True
        column.use_property_decorate = False
        column.enabled = not status.running
        column.prop(settings, "remove_background")
        column.prop(settings, "foreground_ratio")
        column.prop(settings, "resolution")
        column.prop(settings, "place_at_cursor")

        if status.running:
            layout.progress(factor=status.progress, type="BAR", text=f"{status.stage} {status.progress:.0%}")
            if status.detail:
                layout.label(text=status.detail)
            layout.operator("image_to_mesh.cancel", text="Cancel", icon="CANCEL")
            return

        has_source = settings.image is not None or bool(settings.filepath.strip())
        row = layout.row()
        row.scale_y = 1.6
        row.operator("image_to_mesh.generate", text="Generate 3D", icon="MESH_MONKEY")  # its poll greys it
        layout.operator("image_to_mesh.generate_files", text="Generate from Files…", icon="FILEBROWSER")
        if not has_source:
            layout.label(text="Choose or open an image above.", icon="INFO")
        if status.error:
            box = layout.box()
            box.label(text="Generate failed:", icon="ERROR")
            _wrapped_label(box, status.error, context.region.width if context.region else 300)
        elif status.result:
            layout.label(text=status.result, icon="CHECKMARK")


class VIEW3D_PT_image_to_mesh_output(_SidebarPanel, bpy.types.Panel):
    bl_label = "Output"
    bl_parent_id = "VIEW3D_PT_image_to_mesh"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = scene_settings(context)
        column = layout.column()
        column.enabled = not job_status(context).running
        column.prop(settings, "texture_size")
        column.prop(settings, "face_limit")
        column.prop(settings, "remove_floaters")
        column.prop(settings, "watertight")
        column.prop(settings, "quads")
        if is_generated(context.active_object):
            layout.operator("image_to_mesh.bake_texture", icon="TEXTURE").texture_size = settings.texture_size \
                or DEFAULT_TEXTURE_SIZE


class VIEW3D_PT_image_to_mesh_advanced(_SidebarPanel, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "VIEW3D_PT_image_to_mesh"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = not job_status(context).running
        layout.prop(scene_settings(context), "threshold")
        layout.operator("image_to_mesh.unload_model", icon="UNLINKED")


def _wrapped_label(layout, text: str, width_px: int):
    characters = max(20, int(width_px / 7))
    column = layout.column(align=True)
    for paragraph in text.splitlines():
        words, line = paragraph.split(), ""
        for word in words:
            if line and len(line) + 1 + len(word) > characters:
                column.label(text=line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        column.label(text=line)
