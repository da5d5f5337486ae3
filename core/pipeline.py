"""One image → one coloured mesh with a loaded model: prepare the image, encode it, extract the surface."""

import gc

import torch

from .errors import ModelError
from .model import TripoSR
from .settings import GenerateSettings


# The settings the scene code depends on; every other one (resolution, threshold, output options) acts only after
# encoding, so changing it can re-use the image's scene code (core.scene_cache).
PREPROCESS_FIELDS = ("remove_background", "foreground_ratio")
STAGES = ("Preparing image", "Encoding image", "Extracting mesh")
OOM_RETRIES = 2  # extraction out of GPU memory: retries, each with 4× smaller query chunks
MIN_QUERY_CHUNK = 1024


def generate(model: TripoSR, image, settings: GenerateSettings | None = None, progress=None, *, scene_code=None,
             on_encoded=None):
    """Image (anything prepare_image accepts) → core.mesh.Mesh in TripoSR's native frame.

    progress(stage, fraction) is called as each stage advances; it may raise core.errors.Cancelled to stop the
    job, which then propagates with nothing left behind. scene_code: (3, C, H, W), what this model made of this
    image with the same PREPROCESS_FIELDS before: the image is then neither prepared nor encoded again.
    on_encoded(scene_code) receives a newly made scene code."""
    from .preprocess import prepare_image

    settings = settings or GenerateSettings()
    settings.validate()
    report = progress or (lambda stage, fraction: None)
    stage = STAGES[0]
    try:
        if scene_code is None:
            report(STAGES[0], 0.0)
            pixels = prepare_image(
                image, remove_background=settings.remove_background, foreground_ratio=settings.foreground_ratio
            )
            report(STAGES[0], 1.0)
            stage = STAGES[1]
            report(STAGES[1], 0.0)
            images = torch.from_numpy(pixels).unsqueeze(0)
            scene_code = model.encode(images, progress=lambda fraction: report(STAGES[1], fraction))[0]
            if on_encoded is not None:
                on_encoded(scene_code)
        else:
            scene_code = scene_code.to(model.device)
        stage = STAGES[2]
        report(STAGES[2], 0.0)
        mesh = _extract_with_retries(model, scene_code, settings, lambda fraction: report(STAGES[2], fraction))
        report(STAGES[2], 1.0)
        return mesh
    except torch.cuda.OutOfMemoryError as error:  # torch.OutOfMemoryError (2.5+) is its alias
        retried = ", even with smaller batches" if stage == STAGES[2] else ""  # only the extraction is retried
        raise ModelError(
            f"Out of memory on {model.device} while {stage.lower()}{retried}. Lower the resolution, close other "
            "programs using the GPU, or use the CPU."
        ) from error
    except MemoryError as error:
        raise ModelError(_out_of_memory_message(stage)) from error
    except RuntimeError as error:  # a torch failure we did not foresee (unsupported op on a backend, ...)
        if "can't allocate memory" in str(error) or "not enough memory" in str(error):  # torch's CPU allocator
            raise ModelError(_out_of_memory_message(stage)) from error
        raise ModelError(f"The model failed while {stage.lower()} on {model.device}: {error}") from error
    finally:
        if model.device.type == "cuda":
            torch.cuda.empty_cache()


def _extract_with_retries(model: TripoSR, scene_code, settings: GenerateSettings, progress):
    """model.extract_mesh; when the GPU runs out of memory, again with smaller query chunks (the scene code is
    kept: only the extraction runs again)."""
    chunk_size = model.query_chunk_size
    try:
        for attempt in range(OOM_RETRIES + 1):
            try:
                return model.extract_mesh(scene_code, resolution=settings.resolution, threshold=settings.threshold,
                                          progress=progress)
            except torch.cuda.OutOfMemoryError:
                if attempt == OOM_RETRIES or model.query_chunk_size <= MIN_QUERY_CHUNK:
                    raise
            # Outside the except block, so the failed attempt's tensors are already released.
            gc.collect()
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            model.query_chunk_size = max(MIN_QUERY_CHUNK, model.query_chunk_size // 4)
    finally:
        model.query_chunk_size = chunk_size


def _out_of_memory_message(stage: str) -> str:
    return (f"The computer ran out of memory while {stage.lower()}. Lower the mesh resolution, or close other "
            "programs and try again.")
