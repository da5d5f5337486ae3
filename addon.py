"""Registration of the extension's classes, properties and handlers (see __init__.py)."""

import bpy

from . import operators, panels, worker_session
from .operators import generate
from .preferences import ImageToMeshPreferences
from .properties import ImageToMeshJobStatus, ImageToMeshSettings, register_pointers, unregister_pointers

classes = (
    ImageToMeshPreferences,
    ImageToMeshSettings,
    ImageToMeshJobStatus,
    *operators.classes,
    *panels.classes,
)


@bpy.app.handlers.persistent
def _end_job_before_load(*_args):
    """Another file is being opened: a running job's object would land in the wrong file."""
    job = generate.active_job()
    if job is not None:
        job.cancel()


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    register_pointers()
    bpy.app.handlers.load_pre.append(_end_job_before_load)


def unregister():
    if _end_job_before_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_end_job_before_load)
    job = generate.active_job()
    if job is not None:
        job.cancel()
    worker_session.close()
    unregister_pointers()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
