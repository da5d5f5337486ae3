"""bpy.ops.image_to_mesh.generate: image → worker process → coloured mesh object at the 3D cursor.

Interactive use is modal (a window-manager timer polls the worker, Esc cancels); EXEC_DEFAULT and background
mode run the same job synchronously. The job's steps (start, poll, cancel, finish) live in GenerateJob so that
tests can drive them directly: timers never fire in the bpy module.
"""

import logging
import time
from dataclasses import dataclass

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, StringProperty

from .. import worker_session
from ..core.errors import Cancelled, ImageToMeshError, InputError, ModelError
from ..core.settings import FOREGROUND_RATIO, REMOVE_BACKGROUND, RESOLUTION, THRESHOLD, GenerateSettings
from ..core.worker import Failure, ModelSpec, Progress, Result
from ..preferences import get_preferences, python_executable
from ..properties import FACE_LIMIT, TEXTURE_SIZE, bounds, job_status, scene_settings
from . import fields
from .bake import bake_onto, model_spec, remesh_to_quads
from .batch import Batch, batch_files
from .image_source import checked_file, file_pixels_via_blender, image_pixels, object_name_for
from .scene_object import add_mesh_object, remove_object

# Formats core's Pillow loader cannot read; Blender reads them, then its datablock is removed again.
BLENDER_ONLY_SUFFIXES = {".exr", ".hdr", ".dpx", ".cin", ".jp2", ".j2c"}
POLL_INTERVAL = 0.1  # seconds between worker polls (timer and synchronous path)
IMAGE_SETTINGS = ("resolution", "remove_background", "foreground_ratio", "threshold")
OUTPUT_SETTINGS = ("texture_size", "face_limit", "remove_floaters", "watertight", "quads")
QUADS_INPUT_FACES = 4  # Quads: the worker decimates to this many times the target, QuadriFlow does the rest

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
    output: dict  # OUTPUT_SETTINGS as chosen (the worker's settings hold what the worker does of them)


class GenerateJob:
    """One Generate: submitted to the session's worker, polled until it ends, then turned into an object."""

    def __init__(self, request: GenerateRequest, python: str | None):
        self.request = request
        self.python = python
        self.stage = "Starting"
        self.progress = 0.0
        self.detail = ""  # e.g. a download's bytes, speed and time left
        self.mesh = None
        self.scene_code = None
        self.warning = ""  # something the user should know about a result that was added all the same
        self.error: ImageToMeshError | None = None
        self.cancel_requested = False
        self.reused_encoding = False  # the worker re-used this image's kept scene code
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
        """The object, with its field kept for re-baking; with Quads, remeshed and baked. Raises
        ImageToMeshError with nothing added when the remesh or its bake fails."""
        request = self.request
        obj = add_mesh_object(context, self.mesh, request.name, at_cursor=request.at_cursor)
        try:
            try:
                fields.keep(obj, self.scene_code, request.model.source, dict(request.settings, **request.output))
            except OSError as error:
                self.warning = (f"'{obj.name}' cannot be re-baked later: its field could not be kept "
                                f"({error.strerror or error}).")
            if request.output["quads"]:
                target = request.output["face_limit"] or len(self.mesh.faces) // 2
                remesh_to_quads(context, obj, self.scene_code, target)
                if request.output["texture_size"]:
                    bake_onto(context, obj, self.scene_code, request.output["texture_size"])
        except BaseException:
            remove_object(obj)
            raise
        return obj

    def _handle(self, event):
        if isinstance(event, Progress):
            self.stage, self.progress, self.detail = event.stage, float(event.fraction), event.detail
        elif isinstance(event, Result):
            self.mesh, self.scene_code, self.reused_encoding = event.mesh, event.scene_code, event.reused_encoding
        elif isinstance(event, Failure):
            self.error = event.error

    def abandon(self):
        """End the job after an unexpected error: the worker's state is unknown, so it is closed."""
        self._release()
        try:
            worker_session.close()
        except Exception:  # noqa: BLE001 - already failing; the session holds no client any more either way
            log.exception("closing the worker after an unexpected error failed")

    def _release(self):
        global _active_job
        if _active_job is self:
            _active_job = None


def build_request(context, *, image="", filepath="", **overrides) -> GenerateRequest:
    """The job a Generate asks for: explicit arguments first, then the scene's settings.

    Raises InputError when no usable image is given."""
    settings = scene_settings(context)
    options, output = ({
        name: overrides.get(name) if overrides.get(name) is not None else getattr(settings, name)
        for name in names
    } for names in (IMAGE_SETTINGS, OUTPUT_SETTINGS))
    options["resolution"] = int(options["resolution"])
    # Blender keeps floats in single precision: 0.85 would arrive as 0.8500000238 and shift the image framing.
    options["foreground_ratio"] = round(float(options["foreground_ratio"]), 6)
    options["threshold"] = round(float(options["threshold"]), 6)
    options.update(worker_output(output))
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

    return GenerateRequest(source, name, options, model_spec(context), at_cursor, output)


def worker_output(output: dict) -> dict:
    """What the worker does of the Output settings: with Quads it hands over a closed mesh of a few times the
    target's faces, for QuadriFlow, and no texture (the remeshed object is baked afterwards)."""
    worker = {name: output[name] for name in ("texture_size", "face_limit", "remove_floaters", "watertight")}
    if output["quads"]:
        worker.update(texture_size=0, watertight=True, face_limit=QUADS_INPUT_FACES * output["face_limit"])
    return worker


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
                    "downloaded: turn it on, or in the add-on's Model preference choose the bundled demo model or a "
                    "local folder holding config.yaml and model.ckpt.")
    return message


def show_status(context, job: GenerateJob | None, *, error: str = "", result: str = "", batch=None):
    """batch: the operator's queue, whose place ("3 of 12 — Encoding image") the stage shows."""
    status = job_status(context)
    status.running = job is not None and not job.done
    status.stage = "" if job is None else job.stage if batch is None else batch.stage_text(job.stage)
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


SETTING_NAMES = IMAGE_SETTINGS + OUTPUT_SETTINGS


def fail(context, error: ImageToMeshError, report):
    message = explain(error)
    show_status(context, None, error=message)
    report({"ERROR"}, message)


class QueueRun:
    """One Generate's queue being run: its Batch, the job in progress, the window-manager timer, and how it ends.
    Plain Python, because operator instances exist only while Blender runs them (and timers never fire in the bpy
    module): tests drive its modal steps directly. report is the operator's report()."""

    def __init__(self, batch: Batch, report):
        self.batch, self.report = batch, report
        self.job: GenerateJob | None = None
        self.timer = None
        self.cancelled = False
        self.reused = False  # the last object's job re-used the worker's kept scene code

    @classmethod
    def for_job(cls, context, job: GenerateJob, report) -> "QueueRun":
        """A modal run of one job already started (tests; the operator goes through begin())."""
        run = cls(Batch([{}], lambda source: job), report)
        run.begin(context)
        run.start_timer(context)
        return run

    def begin(self, context) -> bool:
        """Start the queue's first usable image; False (reported) when there is none."""
        self.job = self.batch.next_job()
        if self.job is None:
            self.end(context)
            return False
        show_status(context, self.job, batch=self.batch)
        return True

    def run(self, context) -> set[str]:
        """The synchronous path: every job, one after the other."""
        try:
            while self.job is not None:
                self.job.wait()
                self.job_ended(context)
        except BaseException:  # e.g. KeyboardInterrupt in a script: leave no job running
            if self.job is not None:
                self.job.cancel()
            show_status(context, None)
            raise
        return self.end(context)

    def start_timer(self, context):
        self.timer = context.window_manager.event_timer_add(POLL_INTERVAL, window=context.window)

    def modal(self, context, event) -> set[str]:
        try:
            job = self.job
            if event.type == "ESC" and event.value == "PRESS":
                job.request_cancel()
            if event.type != "TIMER" and not job.cancel_requested:
                return {"PASS_THROUGH"}
            if not job.poll():
                show_status(context, job, batch=self.batch)
                return {"RUNNING_MODAL"}
            self.job_ended(context)
            if self.job is not None:
                show_status(context, self.job, batch=self.batch)
                return {"RUNNING_MODAL"}
            self.stop(context)
            return self.end(context)
        except Exception as error:  # a bug or a broken reply: the queue must still end and free the Generate button
            log.exception("Generate 3D failed")
            if self.job is not None:
                self.job.abandon()  # first: it cannot fail, and it frees the Generate button
                self.job = None
            self.stop(context)
            fail(context, ImageToMeshError(
                f"Generate 3D failed with an unexpected error ({type(error).__name__}: {error}). This is a bug in "
                "Image to Mesh; the system console has the details. The next Generate starts a new worker."),
                self.report)
            return {"CANCELLED"}

    def cancel(self, context):
        """Blender ends the operator (file loaded, window closed)."""
        self.stop(context)
        if self.job is not None:
            self.job.cancel()
        show_status(context, None)

    def stop(self, context):
        timer, self.timer = self.timer, None
        if timer is not None:
            context.window_manager.event_timer_remove(timer)

    def job_ended(self, context):
        job, batch = self.job, self.batch
        self.job = None
        if isinstance(job.error, Cancelled):  # Cancel stops this image and drops the rest
            self.cancelled = True
            return
        if job.error is not None:
            batch.fail(job.error)
        else:
            try:
                batch.add(context, job)
                self.reused = job.reused_encoding
                if job.warning:
                    self.report({"WARNING"}, job.warning)
            except ImageToMeshError as error:  # e.g. the active collection cannot take objects, Quads' remesh failed
                batch.fail(error)
        self.job = batch.next_job()

    def end(self, context) -> set[str]:
        batch = self.batch
        if batch.total == 1 and batch.failures:
            fail(context, batch.failures[0][1], self.report)
            return {"CANCELLED"}
        failed = "; ".join(f"{name}: {explain(error)}" for name, error in batch.failures)
        for name, error in batch.failures:
            self.report({"WARNING"}, f"{name}: {explain(error)}")
        if not batch.objects:
            if self.cancelled:
                show_status(context, None)
                self.report({"INFO"}, "Generate 3D cancelled; nothing was added.")
            else:
                fail(context, InputError(f"No image could be turned into a mesh. {failed}"), self.report)
            return {"CANCELLED"}
        if batch.total == 1:
            obj = batch.objects[0]
            summary = f"Added '{obj.name}': {len(obj.data.vertices):,} vertices, {len(obj.data.polygons):,} faces."
            if self.reused:
                summary += " Re-used the encoded image."
        else:
            summary = f"Added {len(batch.objects)} of {batch.total} objects."
            if self.cancelled:
                summary += " Cancelled: the rest were skipped."
            if batch.failures:
                summary += f" {len(batch.failures)} failed: {failed}"
        show_status(context, None, result=summary)
        self.report({"INFO"}, summary)
        return {"FINISHED"}


class GenerateRun:
    """What both Generate operators do: run the queue of images (one, or several: `directory` + `files`, the file
    browser's and file handlers' convention), modal in the UI, synchronous from scripts and in background mode."""

    image: StringProperty(name="Image", description="Name of a Blender image (default: the panel's image)")
    filepath: StringProperty(name="File", description="An image file to use instead", subtype="FILE_PATH")
    directory: StringProperty(
        name="Folder", description="Folder of the images named in files; without files, every image in it",
        subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    # No hard min/max: Blender would clamp a script's out-of-range value silently; build_request refuses it.
    resolution: IntProperty(name="Resolution", description="Marching-cubes grid size", **bounds(RESOLUTION, hard=False))
    remove_background: BoolProperty(name="Remove Background", default=REMOVE_BACKGROUND)
    foreground_ratio: FloatProperty(name="Foreground Ratio", subtype="FACTOR", **bounds(FOREGROUND_RATIO, hard=False))
    threshold: FloatProperty(name="Density Threshold", **bounds(THRESHOLD, hard=False))
    texture_size: IntProperty(name="Texture Size", description="0: vertex colours only", **TEXTURE_SIZE)
    face_limit: IntProperty(name="Face Limit", description="0: no limit", **FACE_LIMIT)
    remove_floaters: BoolProperty(name="Remove Floaters", default=True)
    watertight: BoolProperty(name="Watertight", default=False)
    quads: BoolProperty(name="Quads", default=False)

    _run: QueueRun | None = None

    def draw(self, context):  # the Adjust Last Operation panel: only settings that redo can change
        layout = self.layout
        layout.use_property_split = True
        for name in SETTING_NAMES:
            layout.prop(self, name)

    def execute(self, context):
        if not self._begin(context):
            return {"CANCELLED"}
        return self._finished(self._run.run(context))

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        return self._run_modal(context)

    def modal(self, context, event):
        return self._finished(self._run.modal(context, event))

    def cancel(self, context):
        if self._run is not None:
            self._run.cancel(context)

    def _run_modal(self, context):
        if not self._begin(context):
            return {"CANCELLED"}
        self._run.start_timer(context)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _begin(self, context) -> bool:
        try:
            sources = self._sources()
        except ImageToMeshError as error:
            fail(context, error, self.report)
            return False
        self._run = QueueRun(Batch(sources, lambda source: self._start_job(context, source)), self.report)
        return self._run.begin(context)

    def _sources(self) -> list[dict]:
        names = [item.name for item in self.files if item.name]
        if not (self.directory or names):
            return [{"image": self.image, "filepath": self.filepath}]
        files = batch_files(self.directory, names)
        if not files:
            raise InputError(f"There are no image files in the folder '{self.directory}'.")
        return [{"filepath": path} for path in files]

    def _start_job(self, context, source: dict) -> GenerateJob:
        overrides = {name: getattr(self, name) if self.properties.is_property_set(name) else None
                     for name in SETTING_NAMES}
        request = build_request(context, **source, **overrides)
        job = GenerateJob(request, python_executable(get_preferences(context)))
        job.start()
        # Remember the choices and the image, so redo (Adjust Last Operation) repeats the last image's job.
        for name, value in {**request.settings, **request.output}.items():
            setattr(self, name, value)
        return job

    def _finished(self, result: set[str]) -> set[str]:
        """After a batch, redo (which undoes the last step) makes the last object again, not the whole queue."""
        batch = self._run.batch
        if result == {"FINISHED"} and batch.total > 1:
            self.filepath, self.image, self.directory = batch.last_source["filepath"], "", ""
            self.files.clear()
        return result


class IMAGE_TO_MESH_OT_generate(GenerateRun, bpy.types.Operator):
    """Turn the chosen image into a coloured 3D mesh at the 3D cursor"""

    bl_idname = "image_to_mesh.generate"
    bl_label = "Generate 3D"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not _can_start(cls, context):
            return False
        # Only the 3D viewport's own UI (the panel's button, F3 search there) is refused without an image: poll
        # cannot see a script's image= / filepath= arguments, and scripts run from other areas or none.
        area = context.area
        if area is not None and area.type == "VIEW_3D" and not has_scene_image(context):
            cls.poll_message_set("Choose or open an image in the Image to Mesh panel first")
            return False
        return True


class IMAGE_TO_MESH_OT_generate_files(GenerateRun, bpy.types.Operator):
    """Turn image files into coloured 3D meshes, one object per image in a row from the 3D cursor, with the
    panel's settings"""

    bl_idname = "image_to_mesh.generate_files"
    bl_label = "Generate from Files"
    bl_options = {"REGISTER", "UNDO"}

    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    _browsing = False

    @classmethod
    def poll(cls, context):
        return _can_start(cls, context)

    def invoke(self, context, event):
        if self.directory or len(self.files):  # dropped files (the file handler) or a script: start at once
            return super().invoke(context, event)
        self._browsing = True
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if self._browsing and not bpy.app.background:  # chosen in the file browser: run without freezing the UI
            self._browsing = False
            return self._run_modal(context)
        return super().execute(context)


def _can_start(cls, context) -> bool:
    if _active_job is not None:
        cls.poll_message_set("A mesh is being generated: wait for it or cancel it")
        return False
    if context.scene is None:
        cls.poll_message_set("No scene to add the mesh to")
        return False
    return True
