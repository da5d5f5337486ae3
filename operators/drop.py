"""Image files dropped on the 3D viewport: Generate 3D for each, with the panel's settings (Blender 4.1+)."""

import bpy

from .image_source import IMAGE_SUFFIXES


class IMAGE_TO_MESH_FH_images(bpy.types.FileHandler):
    bl_idname = "IMAGE_TO_MESH_FH_images"
    bl_label = "Generate 3D (Image to Mesh)"
    bl_import_operator = "image_to_mesh.generate_files"
    bl_file_extensions = ";".join(sorted(IMAGE_SUFFIXES))

    @classmethod
    def poll_drop(cls, context):
        return context.area is not None and context.area.type == "VIEW_3D"
