"""The worker process, `python -m core.worker_process` (started by core.worker.WorkerClient).

It reads requests on a thread of its own (so a cancel arrives while a job runs), runs jobs on the main thread,
keeps the model between jobs, answers with progress / result / error messages on its stdout (worker_protocol)
and writes its log to stderr. It ends when its stdin closes: its parent closed it or died.
"""

import ctypes
import dataclasses
import gc
import os
import queue
import sys
import threading
import time
import traceback

from .errors import Cancelled, ImageToMeshError, ModelError, WorkerError
from .scene_cache import SceneCodeCache, scene_key
from .torch_support import torch_problem
from .worker_protocol import read_message, write_message

LOG_PREFIX = "[image-to-mesh worker "
LOADING_STAGES = ("Loading model", "Downloading model")
REUSE_STAGE = "Re-using encoded image"  # reported instead of preparing and encoding when the scene code is kept
PROGRESS_INTERVAL = 0.1  # seconds between progress messages of one stage
ORPHAN_EXIT_DELAY = 5.0  # seconds a worker whose parent is gone waits for its job to stop before it exits


class _Server:
    """The worker process: reads requests on one thread (so a cancel arrives while a job runs) and runs them on
    the main thread, keeping the model between jobs."""

    def __init__(self, requests_in, messages_out):
        self.output = messages_out
        self.requests = queue.Queue()
        self.cancelled_job = None
        self.parent_gone = threading.Event()
        self.model = None
        self.model_spec = None
        self.scene_codes = SceneCodeCache()
        self.unusable = None  # why this interpreter cannot run jobs (e.g. its PyTorch is too old), found at start
        threading.Thread(target=self._read_requests, args=(requests_in,), daemon=True).start()

    def serve(self):
        while (request := self.requests.get()) is not None:
            # Tells the client this process took the job: one that dies before saying so never saw it.
            write_message(self.output, {"type": "accepted", "job": request[0]["job"]})
            self._generate(*request)

    def _read_requests(self, stream):
        try:
            while (message := read_message(stream)) is not None:
                header, _ = message
                if header["type"] == "cancel":
                    self.cancelled_job = header["job"]
                else:
                    self.requests.put(message)
        except WorkerError as error:
            _log(f"stopping: {error}")
        self.parent_gone.set()
        self.requests.put(None)
        time.sleep(ORPHAN_EXIT_DELAY)
        os._exit(0)  # the job did not reach a cancel point in time

    def _generate(self, header: dict, arrays: dict):
        reply = self._answer(header, arrays)
        del arrays  # the image
        _release_free_memory()  # before answering, so that the parent sees the worker's idle footprint
        write_message(self.output, *reply)

    def _answer(self, header: dict, arrays: dict) -> tuple[dict, dict]:
        job = header["job"]
        if self.unusable is not None:
            return _error_reply(job, WorkerError(self.unusable))
        try:
            progress = self._progress_callback(job)
            model = self._load(header["model"], progress)
            if header["type"] == "colors":
                reply, arrays = {}, {"colors": self._colors(model, arrays, progress)}
            else:
                image = arrays.pop("image") if "image" in arrays else header["image_path"]
                mesh, reused, scene_code = self._run_pipeline(model, image, header, progress)
                reply = {"reused_encoding": reused}
                arrays = {field.name: getattr(mesh, field.name) for field in dataclasses.fields(mesh)
                          if getattr(mesh, field.name) is not None}
                arrays["scene_code"] = scene_code
        except ImageToMeshError as error:
            _log(f"job {job}: {type(error).__name__}: {error}")
            if error.__cause__ is not None:  # what went wrong underneath, for the log
                traceback.print_exception(error)
            return _error_reply(job, error)
        except ImportError as error:
            traceback.print_exc()
            return _error_reply(job, WorkerError(
                f"The worker's Python ({sys.executable}) cannot load what the model needs ({error}). Install "
                "PyTorch and the add-on's other requirements in that environment, or use Blender's own Python."))
        except Exception as error:
            traceback.print_exc()
            text = f"{type(error).__name__}: {error}"[:300]
            return _error_reply(job, WorkerError(f"Generating failed with an unexpected error in the worker ({text}). "
                                                 "This is a bug in Image to Mesh; the worker's log has the details."))
        return {"type": "result", "job": job, **reply}, arrays

    def _progress_callback(self, job: int):
        last = {"stage": None, "time": 0.0}

        def progress(stage: str, fraction: float, detail: str = ""):
            if self.cancelled_job == job or self.parent_gone.is_set():
                raise Cancelled("Cancelled.")
            now = time.monotonic()
            if stage != last["stage"] or fraction >= 1.0 or now - last["time"] >= PROGRESS_INTERVAL:
                last.update(stage=stage, time=now)
                write_message(self.output, {"type": "progress", "job": job, "stage": stage,
                                            "fraction": float(fraction), "detail": detail})
        return progress

    def _load(self, spec: dict, progress):
        """The model for this spec (core.weights.load_model's arguments), loaded once and kept."""
        if self.model is not None and spec == self.model_spec:
            return self.model
        self.model = self.model_spec = None
        gc.collect()
        loading, downloading = LOADING_STAGES
        progress(loading, 0.0)
        from .weights import load_model
        import torch

        def on_download(status):  # every chunk: a cancel is seen at once, and the client hears the download advance
            progress(downloading, status.fraction, f"{status.filename}: {status.text()}")

        try:
            self.model = load_model(**spec, on_download=on_download)
        except torch.cuda.OutOfMemoryError as error:  # torch.OutOfMemoryError (2.5+) is its alias
            raise ModelError("The GPU does not have enough free memory for the model. Close other programs "
                             "that use the GPU, or choose the CPU device.") from error
        self.model_spec = spec
        _log(f"loaded {spec['source']} on {self.model.device}")
        progress(loading, 1.0)
        return self.model

    def _run_pipeline(self, model, image, header: dict, progress):
        """(mesh, whether a kept scene code stood in for preparing and encoding the image, that scene code as
        float32 numpy: the field the mesh came from, for re-baking)."""
        from .pipeline import PREPROCESS_FIELDS, generate
        from .settings import GenerateSettings

        settings = GenerateSettings(**header["settings"])
        try:
            key = scene_key(image, dataclasses.asdict(settings), header["model"], PREPROCESS_FIELDS)
        except OSError:  # an unreadable file: the pipeline says so
            key = None
        scene_code = self.scene_codes.get(key) if key is not None else None
        if scene_code is not None:
            progress(REUSE_STAGE, 1.0)
        used = [scene_code]

        def on_encoded(code):
            used.append(code)
            if key is not None:
                self.scene_codes.put(key, code)

        mesh = generate(model, image, settings, progress=progress, scene_code=scene_code, on_encoded=on_encoded)
        return mesh, scene_code is not None, used[-1].detach().float().cpu().numpy()

    def _colors(self, model, arrays: dict, progress):
        from .pipeline import colors_from_field

        return colors_from_field(model, arrays["scene_code"], arrays["points"], progress=progress)


def _error_reply(job: int, error: ImageToMeshError) -> tuple[dict, dict]:
    return {"type": "error", "job": job, "error": type(error).__name__, "message": str(error)}, {}


def _release_free_memory():
    """Give the job's freed memory back to the system, so an idle worker holds only the model (glibc keeps freed
    blocks of its per-thread arenas otherwise)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass


def _log(text: str):
    print(f"{LOG_PREFIX}{os.getpid()}] {text}", file=sys.stderr, flush=True)


def main():
    """Entry point of `python -m core.worker_process`: keep the protocol on the original stdin/stdout, send every stray
    print to stderr (the log), and read nothing else from stdin."""
    sys.stdout.flush()
    messages_out = os.fdopen(os.dup(1), "wb")
    requests_in = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(os.devnull, "rb") as devnull:
        os.dup2(devnull.fileno(), 0)
    _log(f"started with Python {sys.version.split()[0]} at {sys.executable}")
    server = _Server(requests_in, messages_out)  # reads requests from now on, so the parent never waits to send
    # Import torch now, before a job waits for it, so that loading a model later is quick and cancellable.
    server.unusable = torch_problem()
    if server.unusable is not None:
        _log(server.unusable)  # every job is answered with it
    else:
        try:
            from . import pipeline, weights  # noqa: F401
        except ImportError:
            pass  # the first job reports it with a clear message
    server.serve()
    _log("stopping: the parent closed the connection")


if __name__ == "__main__":
    main()
