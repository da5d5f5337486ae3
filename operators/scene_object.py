"""Turn a core Mesh into a Blender object: foreach_set geometry, sRGB vertex colours, a UV map and its texture
packed in the .blend, a material that shows the texture (or the vertex colours when there is none)."""

import bpy
import numpy as np

from ..core.errors import InputError

COLOR_ATTRIBUTE = "Color"
UV_MAP = "UVMap"
TEXTURE_KEY = "image_to_mesh_texture"  # on the images this add-on paints, so a re-bake never touches another

# TripoSR looks from +X with image-right +Y; Blender's Front view looks from -Y with image-right +X.
# A -90 degree turn about Z maps (x, y, z) to (y, -x, z).
TRIPOSR_TO_BLENDER = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def to_blender_frame(vertices: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vertices @ TRIPOSR_TO_BLENDER.T, dtype=np.float32)


def to_triposr_frame(vertices: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vertices @ TRIPOSR_TO_BLENDER, dtype=np.float32)


def build_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
               corner_uvs: np.ndarray | None = None) -> bpy.types.Mesh:
    """vertices (N,3) in Blender's frame, faces (M,3) int, colors (N,3) sRGB in [0, 1], corner_uvs (M,3,2)."""
    vertex_count, face_count = len(vertices), len(faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(vertex_count)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * face_count)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(face_count)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * face_count, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(face_count, 3, dtype=np.int32))

    set_vertex_colors(mesh, colors)
    if corner_uvs is not None:
        mesh.uv_layers.new(name=UV_MAP).uv.foreach_set("vector", np.ascontiguousarray(corner_uvs, np.float32).ravel())

    mesh.update()
    mesh.validate()
    mesh.shade_smooth()  # marching-cubes facets are sampling artefacts, not the shape
    return mesh


def set_vertex_colors(mesh: bpy.types.Mesh, colors: np.ndarray):
    """The colour attribute (replaced if there is one): colors (N, 3) sRGB in [0, 1]."""
    if COLOR_ATTRIBUTE in mesh.color_attributes:
        mesh.color_attributes.remove(mesh.color_attributes[COLOR_ATTRIBUTE])
    rgba = np.ones((len(mesh.vertices), 4), dtype=np.float32)
    rgba[:, :3] = np.clip(colors, 0.0, 1.0)
    attribute = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    # Blender stores linear colours; color_srgb converts the core's sRGB values on the way in.
    attribute.data.foreach_set("color_srgb", rgba.ravel())
    mesh.color_attributes.active_color = attribute
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index


def texture_image(name: str, texture: np.ndarray) -> bpy.types.Image:
    """A new image holding texture (H, W, 3) uint8 sRGB, row 0 at the top, packed into the .blend."""
    image = bpy.data.images.new(name, texture.shape[1], texture.shape[0], alpha=False)
    image[TEXTURE_KEY] = True
    write_texture(image, texture)
    return image


def write_texture(image: bpy.types.Image, texture: np.ndarray):
    """Replace the image's pixels (and size) with texture (H, W, 3) uint8, and pack it as PNG."""
    height, width = texture.shape[:2]
    if tuple(image.size) != (width, height):
        image.scale(width, height)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = texture[::-1] / 255.0  # Blender's rows start at the bottom
    image.pixels.foreach_set(rgba.ravel())
    image.file_format = "PNG"
    image.pack()


def build_material(name: str, image: bpy.types.Image | None = None) -> bpy.types.Material:
    """Principled BSDF whose Base Color is the image, or the vertex colours when there is no image (then the
    colour attribute node is there too, one link away)."""
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # node trees are always on from 5.0, where the flag is deprecated
        material.use_nodes = True
    nodes = material.node_tree.nodes
    principled = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    principled.inputs["Roughness"].default_value = 0.8
    color = nodes.new("ShaderNodeVertexColor")
    color.layer_name = COLOR_ATTRIBUTE
    color.location = (principled.location.x - 300, principled.location.y - 300)
    material.node_tree.links.new(color.outputs["Color"], principled.inputs["Base Color"])
    if image is not None:
        use_texture(material, image)
    return material


def use_texture(material: bpy.types.Material, image: bpy.types.Image) -> bool:
    """Feed the image into the material's Principled BSDF Base Color; False when it has none."""
    nodes = material.node_tree.nodes if material.node_tree else ()
    principled = next((node for node in nodes if node.type == "BSDF_PRINCIPLED"), None)
    if principled is None:
        return False
    node = nodes.new("ShaderNodeTexImage")
    node.image = image
    node.location = (principled.location.x - 300, principled.location.y)
    material.node_tree.links.new(node.outputs["Color"], principled.inputs["Base Color"])
    return True


def texture_node(material: bpy.types.Material | None):
    """The image node holding a texture this add-on painted, if the material has one."""
    if material is None or material.node_tree is None:
        return None
    return next((node for node in material.node_tree.nodes
                 if node.type == "TEX_IMAGE" and node.image is not None and node.image.get(TEXTURE_KEY)), None)


def add_mesh_object(context, mesh_data, name: str, *, at_cursor: bool = True) -> bpy.types.Object:
    """Adds the result to the active collection, selected and active. Names are made unique by Blender.

    All or nothing: if a step fails, the mesh, material and object made so far are removed again. Raises
    InputError when the active collection cannot take the object (e.g. it is linked from another file)."""
    made = []  # (bpy.data collection, datablock), removed in reverse order on failure
    try:
        mesh = build_mesh(name, to_blender_frame(mesh_data.vertices), mesh_data.faces, mesh_data.colors,
                          mesh_data.uvs)
        made.append((bpy.data.meshes, mesh))
        image = None
        if mesh_data.texture is not None:
            image = texture_image(f"{name} texture", mesh_data.texture)
            made.append((bpy.data.images, image))
        material = build_material(name, image)
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


def remove_object(obj: bpy.types.Object):
    """Delete an object this add-on just made, with its mesh, materials and their images."""
    mesh = obj.data
    materials = [material for material in mesh.materials if material is not None]
    images = [node.image for material in materials if (node := texture_node(material)) and node.image]
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)
    for material in materials:
        bpy.data.materials.remove(material)
    for image in images:
        bpy.data.images.remove(image)


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
