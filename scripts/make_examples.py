"""Regenerate the example input images in examples/ (run: make examples).

Each is a small scene of coloured primitives rendered with Cycles on the CPU in the bpy module, on a
transparent background (RGBA PNG), so the images are the project's own work.
"""

import math
import os
import sys
import tempfile
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
SIZE = 512
SAMPLES = 64


def main() -> int:
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="image_to_mesh_examples_"))
    import bpy

    for name, build in (("mushroom", build_mushroom), ("robot", build_robot), ("teapot", build_teapot)):
        bpy.ops.wm.read_homefile(use_empty=True)
        build(bpy)
        path = EXAMPLES_DIR / f"{name}.png"
        render(bpy, path)
        print(f"wrote {path}")
    return 0


def material(bpy, name, rgb, roughness=0.5):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def add(bpy, primitive, mat, **kwargs):
    getattr(bpy.ops.mesh, f"primitive_{primitive}_add")(**kwargs)
    obj = bpy.context.active_object
    obj.data.materials.append(mat)
    if primitive in {"uv_sphere", "cylinder", "cone", "torus"}:
        bpy.ops.object.shade_smooth()
    return obj


def build_mushroom(bpy):
    stem = material(bpy, "stem", (0.85, 0.8, 0.65))
    cap = material(bpy, "cap", (0.7, 0.05, 0.03), roughness=0.35)
    dots = material(bpy, "dots", (0.95, 0.95, 0.92))
    add(bpy, "cylinder", stem, radius=0.32, depth=1.0, location=(0, 0, 0.5), vertices=48)
    cap_obj = add(bpy, "uv_sphere", cap, radius=0.9, location=(0, 0, 1.0), segments=64, ring_count=32)
    cap_obj.scale = (1.0, 1.0, 0.6)
    for angle, height in ((0.3, 1.4), (1.4, 1.25), (2.6, 1.45), (-0.8, 1.3), (3.8, 1.2)):
        x, y = 0.62 * math.cos(angle), 0.62 * math.sin(angle)
        add(bpy, "uv_sphere", dots, radius=0.11, location=(x, y, height), segments=24, ring_count=12)


def build_robot(bpy):
    body = material(bpy, "body", (0.1, 0.35, 0.8))
    head = material(bpy, "head", (0.9, 0.75, 0.1))
    limbs = material(bpy, "limbs", (0.2, 0.2, 0.22))
    eyes = material(bpy, "eyes", (0.9, 0.1, 0.1), roughness=0.2)
    add(bpy, "cube", body, size=1.0, location=(0, 0, 1.0)).scale = (0.8, 0.5, 0.9)
    add(bpy, "cube", head, size=0.6, location=(0, 0, 1.8))
    for y in (-0.14, 0.14):
        add(bpy, "uv_sphere", eyes, radius=0.07, location=(0.3, y, 1.85), segments=16, ring_count=8)
    for x in (-0.25, 0.25):
        add(bpy, "cylinder", limbs, radius=0.12, depth=0.6, location=(0, x, 0.3), vertices=24)
    for y in (-0.55, 0.55):
        add(bpy, "cylinder", limbs, radius=0.1, depth=0.8, location=(0, y, 1.05), vertices=24)
    add(bpy, "cone", head, radius1=0.05, radius2=0.0, depth=0.3, location=(0, 0, 2.25), vertices=16)


def build_teapot(bpy):
    glaze = material(bpy, "glaze", (0.05, 0.5, 0.45), roughness=0.25)
    rim = material(bpy, "rim", (0.95, 0.6, 0.2), roughness=0.3)
    pot = add(bpy, "uv_sphere", glaze, radius=0.8, location=(0, 0, 0.8), segments=64, ring_count=32)
    pot.scale = (1.0, 1.0, 0.85)
    add(bpy, "cylinder", glaze, radius=0.35, depth=0.5, location=(0, 0, 1.5), vertices=48)
    add(bpy, "torus", rim, major_radius=0.36, minor_radius=0.07, location=(0, 0, 1.75))
    handle = add(bpy, "torus", rim, major_radius=0.4, minor_radius=0.08, location=(0, 0.85, 0.95))
    handle.rotation_euler = (math.pi / 2, 0, 0)
    spout = add(bpy, "cone", glaze, radius1=0.2, radius2=0.07, depth=0.9, location=(0, -0.85, 1.1), vertices=32)
    spout.rotation_euler = (math.radians(55), 0, 0)


def render(bpy, path: Path):
    scene = bpy.context.scene
    bpy.ops.object.camera_add(location=(5.0, -2.6, 2.7))
    camera = bpy.context.active_object
    camera.data.lens = 50
    look_at(camera, (0.0, 0.0, 0.95))
    scene.camera = camera
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(40), math.radians(10), math.radians(-30)))
    bpy.context.active_object.data.energy = 3.0
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.6, 0.6, 0.6, 1.0)
    scene.world = world

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = SAMPLES
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def look_at(obj, target):
    from mathutils import Vector

    direction = Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


if __name__ == "__main__":
    sys.exit(main())
