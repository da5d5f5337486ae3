"""Per-scene settings of the Generate 3D panel, and the window manager's job status (not saved, not undone)."""

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .core.asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE, FLOATER_AREA_FRACTION
from .core.settings import FOREGROUND_RATIO, REMOVE_BACKGROUND, RESOLUTION, THRESHOLD, Limits


def bounds(limits: Limits, *, hard: bool = True) -> dict:
    """A number property's default and range from core.settings. hard=False leaves out min/max, which Blender
    would silently clamp to: the operator's values are checked instead, so a script's 5000 is an error."""
    soft_min = limits.minimum if limits.soft_min is None else limits.soft_min
    soft_max = limits.maximum if limits.soft_max is None else limits.soft_max
    found = dict(default=limits.default, soft_min=soft_min)
    if soft_max is not None:
        found["soft_max"] = soft_max
    if hard:
        found["min"] = limits.minimum
        if limits.maximum is not None:
            found["max"] = limits.maximum
    return found


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
        default=REMOVE_BACKGROUND,
    )
    foreground_ratio: FloatProperty(
        name="Foreground Ratio",
        description="How much of the model's view the object fills",
        subtype="FACTOR", **bounds(FOREGROUND_RATIO),
    )
    resolution: IntProperty(
        name="Resolution",
        description="Marching-cubes grid size: higher gives finer detail and more vertices, and takes longer",
        **bounds(RESOLUTION),
    )
    threshold: FloatProperty(
        name="Density Threshold",
        description="Density at which the surface is placed: lower makes the object fuller, higher thinner",
        **bounds(THRESHOLD),
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
