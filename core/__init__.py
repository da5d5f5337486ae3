"""Image to Mesh core: a TripoSR-compatible image → mesh engine in plain PyTorch. Knows nothing of Blender."""

from .errors import Cancelled, ImageToMeshError, InputError, ModelError, WorkerError
from .mesh import Mesh

# Names whose modules import torch, Pillow or scipy load on first use: Blender's process imports core (the errors,
# the settings, the worker client) without them.
_LAZY = {"prepare_image": ".preprocess", "load_model": ".weights", "GenerateSettings": ".settings", "generate": ".pipeline",
         "ModelSpec": ".worker", "WorkerClient": ".worker"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Cancelled", "ImageToMeshError", "InputError", "Mesh", "ModelError", "WorkerError", "prepare_image"]
__all__ += ["GenerateSettings", "generate", "load_model", "ModelSpec", "WorkerClient"]
