"""Run by a Python that has Blender's bpy module: install an extension zip with Blender's own extension install
into the user folder BLENDER_USER_RESOURCES names, check that it enabled, generate one mesh, write what happened.

    python scripts/install_and_generate.py ZIP IMAGE OUT.json [--external-python PATH]

OUT.json: Blender's and NumPy's versions, the install's and the generate's results, the mesh's size and where the
extension and the packages it uses were imported from. --external-python sets the add-on's External Python
preference, so the worker runs there (for a zip built without torch). Exits 1 when a step fails.
"""

import argparse
import importlib
import json
import platform
import sys
import traceback

import bpy
import numpy

MODULE = "bl_ext.user_default.image_to_mesh"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("zip")
    parser.add_argument("image")
    parser.add_argument("out")
    parser.add_argument("--external-python")
    args = parser.parse_args()

    result = {"blender": bpy.app.version_string, "python": platform.python_version(), "numpy": numpy.__version__}
    try:
        result["install"] = sorted(bpy.ops.extensions.package_install_files(
            filepath=args.zip, repo="user_default", enable_on_install=True))
        result["enabled"] = MODULE in bpy.context.preferences.addons
        if not result["enabled"]:
            raise RuntimeError("the extension did not enable (Blender's messages above say why)")
        if args.external_python:
            bpy.context.preferences.addons[MODULE].preferences.python_path = args.external_python
        bpy.ops.wm.read_homefile(use_empty=True)
        result["generate"] = sorted(bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", filepath=args.image, resolution=32))
        mesh = bpy.context.active_object.data
        result.update(vertices=len(mesh.vertices), faces=len(mesh.polygons))
        result["files"] = {"extension": sys.modules[MODULE].__file__, **imported_from("torch", "scipy", "skimage", "PIL")}
    except Exception as error:
        traceback.print_exc()
        result["error"] = f"{type(error).__name__}: {error}"
    with open(args.out, "w") as out:
        json.dump(result, out, indent=1)
    return 1 if "error" in result else 0


def imported_from(*names) -> dict:
    """Where Blender's Python finds each package (None: not there), e.g. the extension's bundled wheels."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.import_module(name).__file__
        except ImportError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
