"""Image to Mesh core: a TripoSR-compatible image → mesh engine in plain PyTorch. Knows nothing of Blender."""

from .errors import Cancelled, ImageToMeshError, InputError, ModelError, WorkerError
from .mesh import Mesh
from .preprocess import prepare_image

__all__ = ["Cancelled", "ImageToMeshError", "InputError", "Mesh", "ModelError", "WorkerError", "prepare_image"]
