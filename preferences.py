"""Add-on preferences: where the model comes from, which device and Python run it, where models are cached."""

import os
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from .core.errors import ModelError
from .core.sources import DEFAULT_SOURCE, MODEL_ENV_VAR

# The small model shipped inside the add-on (trained on simple synthetic shapes), next to this file in a clone and
# in an installed extension alike.
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "models" / "demo"


class ImageToMeshPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    model: EnumProperty(
        name="Model",
        description=f"Which TripoSR model generates meshes. The environment variable {MODEL_ENV_VAR} overrides it",
        items=(
            ("OFFICIAL", "Official TripoSR", f"The released model, {DEFAULT_SOURCE} on Hugging Face (about 1.7 GB, "
             "downloaded once)"),
            ("DEMO", "Demo model: simple shapes", "The small model bundled with the add-on: trained on simple "
             "synthetic shapes only, for trying the add-on without the download"),
            ("OTHER", "Local folder or other repository", "A folder holding config.yaml and model.ckpt, or the "
             "Hugging Face repository id of another TripoSR model"),
        ),
        default="OFFICIAL",
    )
    model_source: StringProperty(
        name="Folder or Repository",
        description="A local folder holding config.yaml and model.ckpt, or a Hugging Face repository id",
        default="",
    )
    device: EnumProperty(
        name="Device",
        description="Where the model runs",
        items=(
            ("auto", "Auto", "NVIDIA CUDA or Apple MPS when available, else the CPU"),
            ("cuda", "NVIDIA CUDA", "An NVIDIA GPU (needs an external Python with CUDA PyTorch)"),
            ("mps", "Apple MPS", "The GPU of an Apple silicon Mac"),
            ("cpu", "CPU", "The processor: works everywhere, slowest"),
        ),
        default="auto",
    )
    python_path: StringProperty(
        name="External Python",
        description="Optional Python interpreter of an environment with PyTorch (e.g. CUDA PyTorch) that runs the "
        "model instead of Blender's own Python. Leave empty to use the bundled PyTorch",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "model")
        if self.model == "OTHER":
            layout.prop(self, "model_source")
        override = os.environ.get(MODEL_ENV_VAR)
        if override:
            layout.label(text=f"Overridden by {MODEL_ENV_VAR}: {override}", icon="INFO")
        layout.prop(self, "device")
        layout.prop(self, "python_path")
        from .core.download import hub_cache_dir

        column = layout.column()
        column.enabled = False
        column.label(text=f"Downloads go to: {hub_cache_dir()}")
        column.label(text=f"Also searched: {model_cache_dir()}")
        if not bpy.app.online_access:
            layout.label(text="Online access is off: only cached models or local folders can be used.", icon="ERROR")
        layout.operator("image_to_mesh.unload_model", icon="UNLINKED")


def get_preferences(context=None) -> ImageToMeshPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def model_source(preferences) -> str:
    """The environment variable wins over the preference; a local folder is returned as an absolute path.
    Raises ModelError when "Local folder or other repository" is chosen but none is given."""
    source = os.environ.get(MODEL_ENV_VAR) or chosen_model(preferences)
    local = Path(bpy.path.abspath(source)).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return source


def chosen_model(preferences) -> str:
    if preferences.model == "DEMO":
        return str(DEMO_MODEL_DIR)
    if preferences.model == "OFFICIAL":
        return DEFAULT_SOURCE
    source = preferences.model_source.strip()
    if not source:
        raise ModelError("The Model preference is 'Local folder or other repository' but names none: give a folder "
                         "holding config.yaml and model.ckpt or a Hugging Face repository id, or choose another "
                         "model (Edit > Preferences > Add-ons > Image to Mesh).")
    return source


def python_executable(preferences) -> str | None:
    path = preferences.python_path.strip()
    return bpy.path.abspath(path) if path else None


def model_caches() -> dict:
    """Where a hub model is looked for and downloaded (ModelSpec's and load_model's arguments): the shared Hugging
    Face cache, which the command line and other programs use too, and the extension's own folder."""
    return {"cache_dir": None, "search_dirs": (model_cache_dir(),)}


def model_cache_dir() -> str:
    """The extension's own models folder (searched for a copy; downloads go to the shared Hugging Face cache)."""
    return user_folder("models")


def user_folder(name: str) -> str:
    """A folder in the extension's user folder when installed as an extension, else in Blender's user data."""
    if __package__.startswith("bl_ext."):
        return bpy.utils.extension_path_user(__package__, path=name, create=True)
    return bpy.utils.user_resource("DATAFILES", path=f"image_to_mesh/{name}", create=True)
