"""Image to Mesh core: a TripoSR-compatible image → mesh engine in plain PyTorch. Knows nothing of Blender."""

from .errors import Cancelled, ImageToMeshError, InputError, ModelError, WorkerError

__all__ = ["Cancelled", "ImageToMeshError", "InputError", "ModelError", "WorkerError"]
