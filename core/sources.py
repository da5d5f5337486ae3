"""Which model a user gets without choosing one: the official repo id and the environment variable that overrides
it, defined once here. No torch: Blender's own process reads them."""

import os

DEFAULT_SOURCE = "stabilityai/TripoSR"
MODEL_ENV_VAR = "IMAGE_TO_MESH_MODEL"


def default_source() -> str:
    """$IMAGE_TO_MESH_MODEL if set, else the official Hugging Face repo."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_SOURCE
