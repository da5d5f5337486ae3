"""Several images in one Generate: the queue of sources, one job at a time on the kept worker, each object placed
beside the previous one with an undo step of its own; a failed image is recorded and skipped."""

from pathlib import Path

import bpy

from ..core.errors import ImageToMeshError
from .image_source import IMAGE_SUFFIXES
from .scene_object import place_beside


def batch_files(directory: str, names) -> list[str]:
    """The file-browser convention: `names` in `directory`; no names: every image file in the folder, by name."""
    folder = Path(bpy.path.abspath(directory)).expanduser()
    if names:
        return [str(folder / name) for name in names]
    if not folder.is_dir():
        return [str(folder)]  # the request fails with the usual "does not exist" message
    return sorted(str(path) for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


class Batch:
    """The queue of one Generate. Each source is a dict of build_request's image arguments (image= or filepath=)."""

    def __init__(self, sources: list[dict], make_job):
        self.sources = sources
        self.make_job = make_job  # source → a started GenerateJob; raises ImageToMeshError for an unusable image
        self.index = -1  # the source being made
        self.objects: list[bpy.types.Object] = []
        self.last_source: dict | None = None  # the source of the last object added
        self.failures: list[tuple[str, ImageToMeshError]] = []

    @property
    def total(self) -> int:
        return len(self.sources)

    def next_job(self):
        """Start the next image's job; None when the queue is empty. Images that cannot be read are skipped."""
        while self.index + 1 < self.total:
            self.index += 1
            try:
                return self.make_job(self.sources[self.index])
            except ImageToMeshError as error:
                self.fail(error)
        return None

    def fail(self, error: ImageToMeshError):
        self.failures.append((self.label(), error))

    def add(self, context, job) -> bpy.types.Object:
        """The finished job's object, beside the previous one; the one before it gets its own undo step first."""
        if self.objects and self.total > 1:
            push_undo(f"Generate 3D: {self.objects[-1].name}")
        obj = job.finish(context)
        if self.objects:
            place_beside(obj, self.objects[-1])
        self.objects.append(obj)
        self.last_source = self.sources[self.index]
        return obj

    def label(self) -> str:
        source = self.sources[self.index]
        return Path(source.get("filepath") or source.get("image") or "the panel's image").name

    def stage_text(self, stage: str) -> str:
        return f"{self.index + 1} of {self.total} — {stage}" if self.total > 1 else stage


def push_undo(message: str):
    """An undo step for what was added so far (the operator's own step, at its end, holds the last object)."""
    if bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)
