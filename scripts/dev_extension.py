"""Load this repository checkout as the extension `bl_ext.user_default.image_to_mesh` inside the `bpy` module.

Set BLENDER_USER_RESOURCES to a scratch folder *before* `import bpy` (so nothing touches a real Blender profile),
then call enable_from_checkout(repo_root). Used by tests/blender/conftest.py and the demo script.
"""

import os
from pathlib import Path

EXTENSION_ID = "image_to_mesh"
REPO_MODULE = "user_default"


def enable_from_checkout(repo_root) -> str:
    """Symlink repo_root into the user_default extensions repository and enable it; returns the module name."""
    if not os.environ.get("BLENDER_USER_RESOURCES"):
        raise RuntimeError("Set BLENDER_USER_RESOURCES to a scratch folder before importing bpy.")
    import addon_utils
    import bpy

    repo_root = Path(repo_root).resolve()
    repo_dir = Path(bpy.utils.user_resource("EXTENSIONS", path=REPO_MODULE, create=True))
    link = repo_dir / EXTENSION_ID
    if link.is_symlink() and link.resolve() != repo_root:
        link.unlink()
    if not link.exists():
        link.symlink_to(repo_root, target_is_directory=True)

    module_name = f"bl_ext.{REPO_MODULE}.{EXTENSION_ID}"
    addon_utils.extensions_refresh(ensure_wheels=False)
    module = addon_utils.enable(module_name, default_set=True, handle_error=_raise)
    if module is None:
        raise RuntimeError(f"Blender could not enable {module_name} from {repo_root}.")
    return module_name


def _raise(error):
    raise error
