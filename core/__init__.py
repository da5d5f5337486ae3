"""Image to Mesh core: a TripoSR-compatible image → mesh engine in plain PyTorch. Knows nothing of Blender."""

from .errors import Cancelled, ImageToMeshError, InputError, ModelError, WorkerError
from .mesh import Mesh
from .preprocess import prepare_image

# torch-dependent names (and the worker client) load on first use, so `import core` (e.g. for the errors in Blender) does not import torch.
_LAZY = {"load_model": ".weights", "GenerateSettings": ".settings", "generate": ".pipeline",
         "ModelSpec": ".worker", "WorkerClient": ".worker"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Cancelled", "ImageToMeshError", "InputError", "Mesh", "ModelError", "WorkerError", "prepare_image"]
__all__ += ["GenerateSettings", "generate", "load_model", "ModelSpec", "WorkerClient"]
