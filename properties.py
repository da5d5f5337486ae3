"""Per-scene settings of the Generate 3D panel, and the window manager's job status (not saved, not undone)."""

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .core.asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE, FLOATER_AREA_FRACTION

RESOLUTION = dict(min=32, soft_min=128, max=512, default=256)
THRESHOLD_DEFAULT = 25.0
TEXTURE_SIZE = dict(min=0, soft_min=512, max=4096, default=DEFAULT_TEXTURE_SIZE)  # 0: vertex colours only
FACE_LIMIT = dict(min=0, soft_max=200_000, default=DEFAULT_FACE_LIMIT)  # 0: no limit


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
    texture_size: IntProperty(
        name="Texture Size",
        description="Bake a texture of this many pixels a side from the model's colour field; 0 keeps vertex "
        "colours only",
        **TEXTURE_SIZE,
    )
    face_limit: IntProperty(
        name="Face Limit",
        description="Simplify the mesh to at most this many faces, keeping its shape (the texture keeps the "
        "detail); 0 for no limit",
        **FACE_LIMIT,
    )
    remove_floaters: BoolProperty(
        name="Remove Floaters",
        description=f"Delete separate pieces with less than {FLOATER_AREA_FRACTION * 100:g}% of the largest piece's "
        "surface area",
        default=True,
    )
    watertight: BoolProperty(
        name="Watertight",
        description="Close every hole and mend non-manifold edges: a closed mesh, e.g. for 3D printing",
        default=False,
    )
    quads: BoolProperty(
        name="Quads",
        description="Remesh into quads with Blender's QuadriFlow (about Face Limit faces), then bake the texture",
        default=False,
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
