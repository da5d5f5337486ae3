"""bpy.ops.image_to_mesh.bake_texture: paint the object's kept field onto its current geometry, and the Quads
option's remesh. The add-on supplies the geometry and UVs (the artist's own, or Blender's Smart UV Project);
core.texture finds each texel's surface point; the worker answers with the field's colours there."""

import bpy
import numpy as np
from bpy.props import IntProperty

from .. import worker_session
from ..core.asset import TEXTURE_SIZE_LIMITS
from ..core.errors import ImageToMeshError, InputError
from ..core.worker import ModelSpec
from ..preferences import get_preferences, model_caches, model_source, python_executable
from ..properties import TEXTURE_SIZE
from . import fields
from .scene_object import (UV_MAP, build_material, set_vertex_colors, texture_image, texture_node,
                           to_triposr_frame, use_texture, write_texture)


def model_spec(context) -> ModelSpec:
    """The model the preferences choose, as the worker loads it."""
    preferences = get_preferences(context)
    return ModelSpec(source=model_source(preferences), device=preferences.device, **model_caches(),
                     allow_download=bpy.app.online_access)


def field_colors(context, scene_code: np.ndarray):
    """points (K, 3) in TripoSR's frame → the field's sRGB colours (K, 3), from the session's worker."""
    client = worker_session.get_client(python_executable(get_preferences(context)))
    spec = model_spec(context)
    return lambda points: client.colors(scene_code, points, spec)


def local_vertices(mesh: bpy.types.Mesh) -> np.ndarray:
    coordinates = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", coordinates)
    return coordinates.reshape(-1, 3)


def smart_unwrap(context, obj, texture_size: int):
    """Blender's Smart UV Project into a new UV map, islands kept apart by the bake's padding."""
    from ..core.texture import padding_for

    obj.data.uv_layers.new(name=UV_MAP)
    with context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                               selected_editable_objects=[obj]):
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(island_margin=2 * padding_for(texture_size) / texture_size)
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")


def bake_onto(context, obj, scene_code: np.ndarray, texture_size: int) -> bpy.types.Image:
    """The field painted over the object's active UV map (made first when it has none), into the image of its
    material (made when it has none). Raises ImageToMeshError before changing anything when the worker fails."""
    mesh = obj.data
    unwrapped = not mesh.uv_layers
    if unwrapped:
        smart_unwrap(context, obj, texture_size)
    try:
        texture = _texture(context, mesh, scene_code, texture_size)
    except BaseException:
        if unwrapped:  # leave the object as it was
            mesh.uv_layers.remove(mesh.uv_layers[UV_MAP])
        raise

    material = mesh.materials[0] if len(mesh.materials) else None
    node = texture_node(material)
    if node is not None:
        write_texture(node.image, texture)
        return node.image
    image = texture_image(f"{obj.name} texture", texture)
    if material is None:
        mesh.materials.append(build_material(obj.name, image))
    elif not use_texture(material, image):  # a material without a Principled BSDF: a new one in its slot
        mesh.materials[0] = build_material(obj.name, image)
    return image


def triangles_and_uvs(mesh: bpy.types.Mesh):
    """The mesh's polygons as triangles: vertex indices (T, 3) and the active UV map's corner UVs (T, 3, 2)."""
    mesh.calc_loop_triangles()
    loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    corners = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", corners)
    loop_uvs = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.uv.foreach_get("vector", loop_uvs)
    return corners.reshape(-1, 3), loop_uvs.reshape(-1, 2)[loops.reshape(-1, 3)]


def _texture(context, mesh, scene_code: np.ndarray, texture_size: int) -> np.ndarray:
    from ..core.texture import bake

    triangles, corner_uvs = triangles_and_uvs(mesh)
    vertices = to_triposr_frame(local_vertices(mesh))
    try:
        return bake(vertices, triangles, corner_uvs, texture_size, field_colors(context, scene_code))
    except ValueError as error:
        raise InputError(f"Cannot bake: {error} Unwrap the mesh again (UV > Unwrap).") from None


def remesh_to_quads(context, obj, scene_code: np.ndarray, target_faces: int):
    """Blender's QuadriFlow remesh to about target_faces quads, then vertex colours from the field."""
    with context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                               selected_editable_objects=[obj]):
        result = bpy.ops.object.quadriflow_remesh(target_faces=target_faces, mode="FACES", use_mesh_symmetry=False)
    if result != {"FINISHED"} or not len(obj.data.polygons):
        raise InputError("Blender's QuadriFlow remesh failed on this mesh. Turn on Watertight, or turn Quads off.")
    colors = field_colors(context, scene_code)(to_triposr_frame(local_vertices(obj.data)))
    set_vertex_colors(obj.data, colors)


class IMAGE_TO_MESH_OT_bake_texture(bpy.types.Operator):
    """Bake the texture again from the field this object was generated from, onto its current shape and UVs"""

    bl_idname = "image_to_mesh.bake_texture"
    bl_label = "Bake Texture from Field"
    bl_options = {"REGISTER", "UNDO"}

    texture_size: IntProperty(name="Texture Size", description="Width and height of the texture in pixels",
                              **TEXTURE_SIZE | dict(min=TEXTURE_SIZE_LIMITS[0]))

    @classmethod
    def poll(cls, context):
        from .generate import active_job

        if active_job() is not None:
            cls.poll_message_set("A mesh is being generated: wait for it or cancel it")
            return False
        if not fields.is_generated(context.active_object):
            cls.poll_message_set("The active object must be one that Image to Mesh generated")
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        try:
            scene_code = fields.load(obj, model_spec(context).source)
            image = bake_onto(context, obj, scene_code, self.texture_size)
        except ImageToMeshError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Baked {image.size[0]}×{image.size[1]} texture '{image.name}' onto '{obj.name}'.")
        return {"FINISHED"}
