"""Turn a core Mesh into a Blender object: foreach_set geometry, sRGB vertex colours, a material that shows them."""

import bpy
import numpy as np

from ..core.errors import InputError

COLOR_ATTRIBUTE = "Color"

# TripoSR looks from +X with image-right +Y; Blender's Front view looks from -Y with image-right +X.
# A -90 degree turn about Z maps (x, y, z) to (y, -x, z).
TRIPOSR_TO_BLENDER = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def to_blender_frame(vertices: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vertices @ TRIPOSR_TO_BLENDER.T, dtype=np.float32)


def build_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> bpy.types.Mesh:
    """vertices (N,3) in Blender's frame, faces (M,3) int, colors (N,3) sRGB in [0, 1]."""
    vertex_count, face_count = len(vertices), len(faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(vertex_count)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * face_count)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(face_count)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * face_count, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(face_count, 3, dtype=np.int32))

    rgba = np.ones((vertex_count, 4), dtype=np.float32)
    rgba[:, :3] = np.clip(colors, 0.0, 1.0)
    attribute = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    # Blender stores linear colours; color_srgb converts the core's sRGB values on the way in.
    attribute.data.foreach_set("color_srgb", rgba.ravel())
    mesh.color_attributes.active_color = attribute
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index

    mesh.update()
    mesh.validate()
    mesh.shade_smooth()  # marching-cubes facets are sampling artefacts, not the shape
    return mesh


def build_material(name: str) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # node trees are always on from 5.0, where the flag is deprecated
        material.use_nodes = True
    nodes = material.node_tree.nodes
    principled = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    principled.inputs["Roughness"].default_value = 0.8
    color = nodes.new("ShaderNodeVertexColor")
    color.layer_name = COLOR_ATTRIBUTE
    color.location = (principled.location.x - 300, principled.location.y)
    material.node_tree.links.new(color.outputs["Color"], principled.inputs["Base Color"])
    return material


def add_mesh_object(context, mesh_data, name: str, *, at_cursor: bool = True) -> bpy.types.Object:
    """Adds the result to the active collection, selected and active. Names are made unique by Blender.

    All or nothing: if a step fails, the mesh, material and object made so far are removed again. Raises
    InputError when the active collection cannot take the object (e.g. it is linked from another file)."""
    made = []  # (bpy.data collection, datablock), removed in reverse order on failure
    try:
        mesh = build_mesh(name, to_blender_frame(mesh_data.vertices), mesh_data.faces, mesh_data.colors)
        made.append((bpy.data.meshes, mesh))
        material = build_material(name)
        made.append((bpy.data.materials, material))
        mesh.materials.append(material)
        obj = bpy.data.objects.new(name, mesh)
        made.append((bpy.data.objects, obj))
        if at_cursor:
            obj.location = context.scene.cursor.location
        collection = context.collection
        try:
            collection.objects.link(obj)
        except RuntimeError as error:
            reason = str(error).removeprefix("Error: ").strip()
            raise InputError(f"The new object cannot be added to the active collection '{collection.name}' "
                             f"({reason}). Make a collection of this file active in the Outliner and generate "
                             "again.") from error
    except BaseException:
        for data, block in reversed(made):
            data.remove(block)
        raise
    for other in context.view_layer.objects.selected:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


ROW_GAP = 0.2  # space between neighbours in a row, as a fraction of their mean width


def place_beside(obj: bpy.types.Object, previous: bpy.types.Object):
    """Put obj to the +X side of previous (same Y and Z), their bounding boxes ROW_GAP apart."""
    (this_min, this_max), (before_min, before_max) = _x_extent(obj), _x_extent(previous)
    gap = ROW_GAP * ((this_max - this_min) + (before_max - before_min)) / 2
    obj.location = previous.location
    obj.location.x = previous.location.x + before_max + gap - this_min


def _x_extent(obj: bpy.types.Object) -> tuple[float, float]:
    """The object's smallest and largest X, from its vertices (objects made here are neither scaled nor rotated)."""
    coordinates = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", coordinates)
    x = coordinates[0::3]
    return (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
