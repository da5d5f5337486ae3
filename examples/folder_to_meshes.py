"""Headless Blender: every image in a folder → a coloured mesh each, saved as .glb files and/or one .blend.

    blender -b -P examples/folder_to_meshes.py -- IMAGES_FOLDER OUT_FOLDER [--glb] [--blend] [--resolution 256]

Needs the Image to Mesh extension installed and enabled in that Blender; the model comes from its preferences or
the IMAGE_TO_MESH_MODEL environment variable. The objects stand in a row in the .blend (out/meshes.blend); each
.glb holds one object, named after its image. An image that fails is reported and skipped.
"""

import argparse
import sys
from pathlib import Path

import bpy


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="blender -b -P folder_to_meshes.py --", description=__doc__.split("\n")[0])
    parser.add_argument("images", type=Path, help="folder of images (png, jpg, webp, tif, exr, ...)")
    parser.add_argument("out", type=Path, help="folder for the .glb files and meshes.blend")
    parser.add_argument("--glb", action="store_true", help="one .glb file per image (the default)")
    parser.add_argument("--blend", action="store_true", help="one .blend with every object")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes grid size (default 256)")
    args = parser.parse_args(argv)
    if not args.blend:
        args.glb = True
    if not hasattr(bpy.types, "IMAGE_TO_MESH_OT_generate"):
        print("The Image to Mesh extension is not enabled in this Blender: install and enable it first.",
              file=sys.stderr)
        return 1

    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        bpy.ops.image_to_mesh.generate(directory=str(args.images.resolve()), resolution=args.resolution)
    except RuntimeError as error:  # nothing could be made: the operator's message says why
        print(str(error).strip(), file=sys.stderr)
        return 1
    print(bpy.context.window_manager.image_to_mesh_job.result)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.glb:
        import addon_utils

        addon_utils.enable("io_scene_gltf2", default_set=True)  # on by default in Blender; not in a bare profile
        for obj in bpy.context.scene.objects:
            bpy.ops.object.select_all(action="DESELECT")
            obj.select_set(True)
            bpy.ops.export_scene.gltf(filepath=str(args.out / f"{obj.name}.glb"), export_format="GLB",
                                      use_selection=True, export_vertex_color="ACTIVE")
    if args.blend:
        bpy.ops.wm.save_as_mainfile(filepath=str(args.out / "meshes.blend"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []))
