"""bpy.ops.image_to_mesh.generate: image → worker process → coloured mesh object at the 3D cursor.

Interactive use is modal (a window-manager timer polls the worker, Esc cancels); EXEC_DEFAULT and background
mode run the same job synchronously. The job's steps (start, poll, cancel, finish) live in GenerateJob so that
tests can drive them directly: timers never fire in the bpy module.
"""

import logging
import time
from dataclasses import dataclass

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty

from .. import worker_session
from ..core.errors import Cancelled, ImageToMeshError, InputError, ModelError
from ..core.worker import Failure, ModelSpec, Progress, Result
from ..core.settings import FOREGROUND_RATIO, REMOVE_BACKGROUND, RESOLUTION, THRESHOLD, GenerateSettings
from ..preferences import get_preferences, model_caches, model_source, python_executable
from ..properties import bounds, job_status, scene_settings
from .image_source import checked_file, file_pixels_via_blender, image_pixels, object_name_for
from .scene_object import add_mesh_object

# Formats core's Pillow loader cannot read; Blender reads them, then its datablock is removed again.
BLENDER_ONLY_SUFFIXES = {".exr", ".hdr", ".dpx", ".cin", ".jp2", ".j2c"}
POLL_INTERVAL = 0.1  # seconds between worker polls (timer and synchronous path)

log = logging.getLogger(__name__)

_active_job = None


def active_job():
    return _active_job


@dataclass
class GenerateRequest:
    image: object  # numpy pixels or a file path, as the worker takes them
    name: str  # the new object's name
    settings: dict  # core.settings.GenerateSettings fields
    model: ModelSpec
    at_cursor: bool


class GenerateJob:
    """One Generate: submitted to the session's worker, polled until it ends, then turned into an object."""

    def __init__(self, request: GenerateRequest, python: str | None):
        self.request = request
        self.python = python
        self.stage = "Starting"
        self.progress = 0.0
        self.detail = ""  # e.g. a download's bytes, speed and time left
        self.mesh = None
        self.error: ImageToMeshError | None = None
        self.cancel_requested = False
        self.client = None

    @property
    def done(self) -> bool:
        return self.mesh is not None or self.error is not None

    def start(self):
        global _active_job
        if _active_job is not None and _active_job is not self:
            raise InputError("A Generate 3D is already running: wait for it to finish or cancel it.")
        self.client = worker_session.get_client(self.python)
        self.client.submit(self.request.image, self.request.settings, self.request.model)
        _active_job = self

    def poll(self) -> bool:
        """Handle the worker's news; True once the job has a result or an error."""
        if self.cancel_requested:
            self.client.cancel()
        for event in self.client.poll():
            self._handle(event)
        if not self.done and not self.client.busy:  # the worker was closed under the job (exit, disable)
            self.error = Cancelled("Cancelled: the worker was closed.")
        if self.done:
            self._release()
        return self.done

    def wait(self):
        """Block until the job ends (the synchronous path)."""
        while not self.poll():
            time.sleep(POLL_INTERVAL)

    def request_cancel(self):
        self.cancel_requested = True

    def cancel(self):
        """Stop now; the worker stays alive (with its model) for the next Generate unless it has to be killed."""
        self.cancel_requested = True
        if not self.done:
            self.client.cancel()
            while not self.poll():
                time.sleep(0.02)
        self._release()

    def finish(self, context) -> bpy.types.Object:
        return add_mesh_object(context, self.mesh, self.request.name, at_cursor=self.request.at_cursor)

    def abandon(self):
        """End the job after an unexpected error: the worker's state is unknown, so it is closed."""
        self._release()
        try:
            worker_session.close()
        except Exception:  # noqa: BLE001 - already failing; the session holds no client any more either way
            log.exception("closing the worker after an unexpected error failed")

    def _handle(self, event):
        if isinstance(event, Progress):
            self.stage, self.progress, self.detail = event.stage, float(event.fraction), event.detail
        elif isinstance(event, Result):
            self.mesh = event.mesh
        elif isinstance(event, Failure):
            self.error = event.error

    def _release(self):
        global _active_job
        if _active_job is self:
            _active_job = None


def build_request(context, *, image="", filepath="", **overrides) -> GenerateRequest:
    """The job a Generate asks for: explicit arguments first, then the scene's settings.

    Raises InputError when no usable image is given."""
    settings = scene_settings(context)
    options = {
        name: overrides.get(name) if overrides.get(name) is not None else getattr(settings, name)
        for name in ("remove_background", "foreground_ratio", "resolution", "threshold")
    }
    options["resolution"] = int(options["resolution"])
    # Blender keeps floats in single precision: 0.85 would arrive as 0.8500000238 and shift the image framing.
    options["foreground_ratio"] = round(float(options["foreground_ratio"]), 6)
    options["threshold"] = round(float(options["threshold"]), 6)
    GenerateSettings(**options).validate()
    at_cursor = overrides.get("place_at_cursor")
    at_cursor = settings.place_at_cursor if at_cursor is None else at_cursor

    if image:
        if image not in bpy.data.images:
            raise InputError(f"There is no image named '{image}' in this file.")
        source, name = image_pixels(bpy.data.images[image]), object_name_for(image)
    elif filepath:
        source, name = _file_source(filepath)
    elif settings.image is not None:
        source, name = image_pixels(settings.image), object_name_for(settings.image.name)
    elif settings.filepath.strip():
        source, name = _file_source(settings.filepath)
    else:
        raise InputError("No image chosen: pick or open an image in the Image to Mesh panel, or pass image= or "
                         "filepath= to bpy.ops.image_to_mesh.generate.")

    preferences = get_preferences(context)
    model = ModelSpec(
        source=model_source(preferences),
        device=preferences.device,
        **model_caches(),
        allow_download=bpy.app.online_access,
    )
    return GenerateRequest(source, name, options, model, at_cursor)


def has_scene_image(context) -> bool:
    settings = scene_settings(context)
    return settings.image is not None or bool(settings.filepath.strip())


def _file_source(filepath: str):
    path = checked_file(filepath)
    if path.suffix.lower() in BLENDER_ONLY_SUFFIXES:
        return file_pixels_via_blender(path), object_name_for(path.name)
    return str(path), object_name_for(path.name)


def explain(error: ImageToMeshError) -> str:
    """The message a user sees, with Blender's side of the story where core cannot know it."""
    message = str(error)
    if isinstance(error, ModelError) and not bpy.app.online_access and "online access" not in message.lower():
        message += (" Blender's online access is off (Preferences > System > Network), so the model cannot be "
                    "downloaded: turn it on, or set the add-on's Model preference to a local folder holding "
                    "config.yaml and model.ckpt.")
    return message


def show_status(context, job: GenerateJob | None, *, error: str = "", result: str = ""):
    status = job_status(context)
    status.running = job is not None and not job.done
    status.stage = job.stage if job is not None else ""
    status.progress = job.progress if job is not None else 0.0
    status.detail = job.detail if status.running else ""
    status.error = error
    status.result = result
    workspace = context.workspace
    if workspace is not None:
        text = f"Image to Mesh: {status.stage} {status.progress:.0%} {status.detail}  (Esc to cancel)"
        workspace.status_text_set(text if status.running else None)
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def end_job(context, job: GenerateJob, report) -> set[str]:
    """The operator's result for a job that has ended: its object added, or its error shown.
    report is the operator's report()."""
    if isinstance(job.error, Cancelled):
        show_status(context, None)
        report({"INFO"}, "Generate 3D cancelled; nothing was added.")
        return {"CANCELLED"}
    if job.error is not None:
        fail(context, job.error, report)
        return {"CANCELLED"}
    try:
        obj = job.finish(context)
    except ImageToMeshError as error:
        fail(context, error, report)
        return {"CANCELLED"}
    summary = f"Added '{obj.name}': {len(obj.data.vertices):,} vertices, {len(obj.data.polygons):,} faces."
    show_status(context, None, result=summary)
    report({"INFO"}, summary)
    return {"FINISHED"}


def fail(context, error: ImageToMeshError, report):
    message = explain(error)
    show_status(context, None, error=message)
    report({"ERROR"}, message)


class ModalGenerate:
    """A running interactive Generate: the window-manager timer and the modal steps. Operator instances exist only
    while Blender runs them (and timers never fire in the bpy module), so tests call modal() here directly."""

    def __init__(self, context, job: GenerateJob, report):
        self.job, self.report = job, report
        self.timer = context.window_manager.event_timer_add(POLL_INTERVAL, window=context.window)

    def modal(self, context, event) -> set[str]:
        try:
            if event.type == "ESC" and event.value == "PRESS":
                self.job.request_cancel()
            if event.type != "TIMER" and not self.job.cancel_requested:
                return {"PASS_THROUGH"}
            if not self.job.poll():
                show_status(context, self.job)
                return {"RUNNING_MODAL"}
            self.stop(context)
            return end_job(context, self.job, self.report)
        except Exception as error:  # a bug or a broken reply: the job must still end and free the Generate button
            log.exception("Generate 3D failed")
            self.job.abandon()  # first: it cannot fail, and it frees the Generate button
            self.stop(context)
            fail(context, ImageToMeshError(
                f"Generate 3D failed with an unexpected error ({type(error).__name__}: {error}). This is a bug in "
                "Image to Mesh; the system console has the details. The next Generate starts a new worker."),
                self.report)
            return {"CANCELLED"}

    def cancel(self, context):
        """Blender ends the operator (file loaded, window closed)."""
        self.stop(context)
        self.job.cancel()
        show_status(context, None)

    def stop(self, context):
        timer, self.timer = self.timer, None
        if timer is not None:
            context.window_manager.event_timer_remove(timer)


class IMAGE_TO_MESH_OT_generate(bpy.types.Operator):
    """Turn the chosen image into a coloured 3D mesh at the 3D cursor"""

    bl_idname = "image_to_mesh.generate"
    bl_label = "Generate 3D"
    bl_options = {"REGISTER", "UNDO"}

    image: StringProperty(name="Image", description="Name of a Blender image (default: the panel's image)")
    filepath: StringProperty(name="File", description="An image file to use instead", subtype="FILE_PATH")
    # No hard min/max: Blender would clamp a script's out-of-range value silently; build_request refuses it.
    resolution: IntProperty(name="Resolution", description="Marching-cubes grid size", **bounds(RESOLUTION, hard=False))
    remove_background: BoolProperty(name="Remove Background", default=REMOVE_BACKGROUND)
    foreground_ratio: FloatProperty(name="Foreground Ratio", subtype="FACTOR", **bounds(FOREGROUND_RATIO, hard=False))
    threshold: FloatProperty(name="Density Threshold", **bounds(THRESHOLD, hard=False))

    _run: ModalGenerate | None = None

    @classmethod
    def poll(cls, context):
        if _active_job is not None:
            cls.poll_message_set("A mesh is being generated: wait for it or cancel it")
            return False
        if context.scene is None:
            cls.poll_message_set("No scene to add the mesh to")
            return False
        # Only the 3D viewport's own UI (the panel's button, F3 search there) is refused without an image: poll
        # cannot see a script's image= / filepath= arguments, and scripts run from other areas or none.
        area = context.area
        if area is not None and area.type == "VIEW_3D" and not has_scene_image(context):
            cls.poll_message_set("Choose or open an image in the Image to Mesh panel first")
            return False
        return True

    def draw(self, context):  # the Adjust Last Operation panel: only settings that redo can change
        layout = self.layout
        layout.use_property_split = True
        for name in ("resolution", "remove_background", "foreground_ratio", "threshold"):
            layout.prop(self, name)

    def execute(self, context):
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        try:
            job.wait()
        except BaseException:  # e.g. KeyboardInterrupt in a script: leave no job running
            job.cancel()
            show_status(context, None)
            raise
        return end_job(context, job, self.report)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        self._run = ModalGenerate(context, job, self.report)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        return self._run.modal(context, event)

    def cancel(self, context):
        if self._run is not None:
            self._run.cancel(context)

    def _start(self, context) -> GenerateJob | None:
        overrides = {
            name: getattr(self, name) if self.properties.is_property_set(name) else None
            for name in ("resolution", "remove_background", "foreground_ratio", "threshold")
        }
        preferences = get_preferences(context)
        try:
            request = build_request(context, image=self.image, filepath=self.filepath, **overrides)
            job = GenerateJob(request, python_executable(preferences))
            job.start()
        except ImageToMeshError as error:
            fail(context, error, self.report)
            return None
        # Remember the choices, so redo (Adjust Last Operation) repeats the same job.
        for name, value in request.settings.items():
            setattr(self, name, value)
        show_status(context, job)
        return job
