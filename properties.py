"""Per-scene settings of the Generate 3D panel, and the window manager's job status (not saved, not undone)."""

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

RESOLUTION = dict(min=32, soft_min=128, max=512, default=256)
THRESHOLD_DEFAULT = 25.0


class ImageToMeshSettings(bpy.types.PropertyGroup):
    image: PointerProperty(name="Image", type=bpy.types.Image, description="The picture to turn into a mesh")
    filepath: StringProperty(
        name="File",
        description="An image file to use when no Blender image is chosen",
        subtype="FILE_PATH",
    )
    remove_background: BoolProperty(
        name="Remove Background",
        description="Cut the object out of its background (skipped when the image already has transparency)",
        default=True,
    )
    foreground_ratio: FloatProperty(
        name="Foreground Ratio",
        description="How much of the model's view the object fills",
        min=0.5, max=1.0, default=0.85, subtype="FACTOR",
    )
    resolution: IntProperty(
        name="Resolution",
        description="Marching-cubes grid size: higher gives finer detail and more vertices, and takes longer",
        **RESOLUTION,
    )
    threshold: FloatProperty(
        name="Density Threshold",
        description="Density at which the surface is placed: lower makes the object fuller, higher thinner",
        min=0.0, soft_max=100.0, default=THRESHOLD_DEFAULT,
    )
    place_at_cursor: BoolProperty(
        name="Place at 3D Cursor", description="Put the new object at the 3D cursor instead of the origin",
        default=True,
    )


class ImageToMeshJobStatus(bpy.types.PropertyGroup):
    running: BoolProperty(name="Running")
    stage: StringProperty(name="Stage")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    detail: StringProperty(name="Detail", description="What the stage is doing, e.g. a download's speed")
    error: StringProperty(name="Last Error")
    result: StringProperty(name="Last Result")


def scene_settings(context) -> ImageToMeshSettings:
    return context.scene.image_to_mesh


def job_status(context) -> ImageToMeshJobStatus:
    return context.window_manager.image_to_mesh_job


def register_pointers():
    bpy.types.Scene.image_to_mesh = PointerProperty(type=ImageToMeshSettings)
    bpy.types.WindowManager.image_to_mesh_job = PointerProperty(type=ImageToMeshJobStatus)


def unregister_pointers():
    del bpy.types.WindowManager.image_to_mesh_job
    del bpy.types.Scene.image_to_mesh
