"""The client that runs core in a separate Python process keeping the model loaded between jobs (worker_process).

Why a process (docs/architecture.md): inference in a thread stalls Blender's UI, a crash or out-of-memory in a child
cannot take Blender down, a child can be ended at any moment, and it can be another interpreter (an
environment with CUDA PyTorch). The child is `<python> -m core.worker_process`, started with a plain subprocess
and spoken to over its stdin/stdout with worker_protocol's messages (JSON + raw numpy arrays, never pickle).
Its stderr is its log. It ends when its stdin closes, so it never outlives its parent.

Client API (the Blender operator's; the client never imports torch):

    client = WorkerClient(python=None, extra_paths=(), timeouts=Timeouts())
        python       interpreter for the worker; None = sys.executable (Blender's own Python, which gets the
                     parent's sys.path so bundled wheels are found). Another path = an external environment
                     (e.g. CUDA PyTorch) that has core's requirements installed; it gets only the add-on's folder.
        extra_paths  more import paths for the worker, after the add-on's folder.
        timeouts     Timeouts(loading=1200, silence=300, grace=5) in seconds: the longest silence allowed
                     while the worker starts and loads the model / while a job runs; how long a cancelled or
                     closing worker may take to stop before it is killed. A download reports every chunk, so
                     it is never silent while bytes arrive, however long it takes.
    client.start()                        start the process now (optional: jobs start it on demand)
    client.submit(image, settings, model) start a job, return at once
        image        numpy array (H, W) or (H, W, C) of pixels (uint8, uint16, float...) or a file path; an array
                     is sent from a background thread: leave it unchanged until the job ends
        settings     core.pipeline.GenerateSettings (or a dict of its fields)
        model        ModelSpec(source, revision, device, cache_dir, search_dirs, allow_download); another spec
                     than the loaded model's reloads it
        Raises WorkerError when a job is already running or the process cannot start, InputError for an image
        that is neither an array nor a path.
    client.poll() -> list of events       non-blocking, for a modal operator's timer. A job ends with exactly
                                          one Result or Failure.
        Progress(stage, fraction, detail)  stage: "Loading model", "Downloading model" (detail: the file, bytes,
                                   speed and time left), "Preparing image", "Encoding image", "Extracting mesh",
                                   "Finishing mesh", "Baking texture"; or "Re-using encoded image" instead of
                                   preparing and encoding (see Result); "Painting colours" (submit_colors)
        Result(mesh, scene_code, reused_encoding)  core.mesh.Mesh; the field it came from, float32 (3, C, H, W);
                                   reused_encoding: the worker kept the scene code of this image (same pixels,
                                   model and preprocessing) and only extracted again
        Failure(error)             an InputError, ModelError, WorkerError or Cancelled: show str(error)
    client.run(image, settings, model, progress=None) -> Mesh
                                          blocking (background mode, scripts). progress(stage, fraction) may
                                          raise Cancelled to cancel the job. Raises the job's error.
    client.submit_colors(scene_code, points, model)
                                          start a job asking a kept field (a Result's scene_code) for its colours
                                          at points (K, 3) in TripoSR's frame (core.pipeline.colors_from_field);
                                          it ends with Result(colors=float32 (K, 3)) or a Failure
    client.colors(scene_code, points, model, progress=None) -> colors   blocking
    client.cancel()                       ask the running job to stop; it ends as Failure(Cancelled), a late
                                          result is dropped. A worker that does not stop within grace is killed.
    client.close()                        end the process and free the model ("Unload model"); the next job
                                          starts a new one. Also done at interpreter exit.
    client.busy, client.alive, client.pid (None when no process), client.log_tail(lines=20) -> str

A crashed, killed or hung worker ends the running job with a WorkerError that says so; the next job starts a
fresh process. A worker that died while idle is replaced without an error, also when the job was sent in the
instant before its death was visible (the worker acknowledges each job; an unacknowledged one is resent once). The client is meant for one thread (Blender's main thread).
"""

import atexit
import collections
import dataclasses
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Cancelled, ImageToMeshError, InputError, ModelError, WorkerError
from .mesh import Mesh
from .sources import DEFAULT_SOURCE
from .worker_process import LOADING_STAGES, LOG_PREFIX
from .worker_protocol import DTYPES, read_message, write_message

log = logging.getLogger(__name__)

LOG_LINES = 200
LOG_LINE_BYTES = 4096
_ERROR_TYPES = {cls.__name__: cls for cls in (ImageToMeshError, InputError, ModelError, WorkerError, Cancelled)}
# A Ctrl+C in Blender's console must not reach the worker (it ends when its stdin closes): a session of its own on
# POSIX; on Windows, where start_new_session does nothing, a process group of its own and no console window.
if os.name == "nt":
    _OWN_PROCESS_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
else:
    _OWN_PROCESS_GROUP = {"start_new_session": True}


@dataclass(frozen=True)
class ModelSpec:
    """Which model the worker loads: the arguments of core.weights.load_model."""

    source: str = DEFAULT_SOURCE  # HF repo id or a local folder with config.yaml + model.ckpt
    revision: str | None = None
    device: str = "auto"
    cache_dir: str | None = None  # where a download goes; None = the standard Hugging Face cache
    search_dirs: tuple = ()  # more caches that may hold a copy already
    allow_download: bool = True

    def to_message(self) -> dict:
        """The spec with local paths made absolute (the worker runs in another folder)."""
        source = os.fspath(self.source)
        cache_dir = None if self.cache_dir is None else os.path.abspath(os.fspath(self.cache_dir))
        return dataclasses.asdict(dataclasses.replace(
            self, source=os.path.abspath(source) if os.path.isdir(source) else source, cache_dir=cache_dir,
            search_dirs=[os.path.abspath(os.fspath(path)) for path in self.search_dirs]))


@dataclass
class Timeouts:
    loading: float = 1200.0  # silence allowed while the worker starts and loads the model (a first download is slow)
    silence: float = 300.0  # silence allowed between the progress messages of a job
    grace: float = 5.0  # time a cancelled or closing worker gets to stop before it is killed


@dataclass
class Progress:
    stage: str
    fraction: float
    detail: str = ""


@dataclass
class Result:
    mesh: Mesh | None = None
    scene_code: np.ndarray | None = None  # the field the mesh came from
    reused_encoding: bool = False  # the worker kept this image's scene code and only extracted the mesh again
    colors: np.ndarray | None = None  # the answer to submit_colors


@dataclass
class Failure:
    error: ImageToMeshError


class _Child:
    """One worker process and the threads that feed and drain its pipes (so the caller never waits on a pipe)."""

    def __init__(self, command: list[str], cwd: Path, env: dict):
        self.messages = queue.Queue()  # ("message", arrival time, header, arrays) | ("broken", error) | ("end",)
        self.outbox = queue.Queue()  # (header, arrays) to send | None: close the worker's stdin
        self.log = collections.deque(maxlen=LOG_LINES)
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
            **_OWN_PROCESS_GROUP)
        self.threads = [threading.Thread(target=target, daemon=True, name=f"image-to-mesh worker {name}")
                        for name, target in (("input", self._write_input), ("output", self._read_output),
                                             ("log", self._read_log))]
        for thread in self.threads:
            thread.start()

    def _write_input(self):
        try:
            while (message := self.outbox.get()) is not None:
                write_message(self.process.stdin, *message)
        except OSError:
            pass  # the worker is gone: the output thread sees its end and that is reported
        finally:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _read_output(self):
        try:
            while (message := read_message(self.process.stdout, on_stray=self._log_text)) is not None:
                self.messages.put(("message", time.monotonic(), *message))
        except WorkerError as error:
            self.messages.put(("broken", error))
        except (OSError, ValueError):  # the pipe was closed under us by stop()
            pass
        self.messages.put(("end",))

    def _read_log(self):
        try:
            for line in iter(lambda: self.process.stderr.readline(LOG_LINE_BYTES), b""):
                self._log_text(line.decode("utf-8", errors="replace"))
        except (OSError, ValueError):
            pass

    def _log_text(self, text: str):
        for line in text.replace("\r", "\n").splitlines():
            if line.strip():
                self.log.append(line)
                log.debug("worker %d: %s", self.process.pid, line)

    def send(self, header: dict, arrays: dict | None = None):
        self.outbox.put((header, arrays))

    def stop(self, grace: float) -> int:
        """End the process (politely: stdin closes, then kill after `grace` seconds), reap it, join the threads."""
        self.outbox.put(None)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for thread in self.threads:
            thread.join(timeout=5.0)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        return self.process.returncode

    def kill(self) -> int:
        self.process.kill()
        return self.stop(grace=5.0)

    def last_lines(self, count: int) -> list[str]:
        return list(self.log)[-count:]


class WorkerClient:
    """Starts and drives the worker process; see the module docstring for the API."""

    def __init__(self, python: str | None = None, extra_paths=(), timeouts: Timeouts | None = None):
        self.python = os.fspath(python) if python else sys.executable
        self.extra_paths = [os.path.abspath(path) for path in extra_paths]
        self.timeouts = timeouts or Timeouts()
        self._child: _Child | None = None
        self._last_log: list[str] = []
        self._job = 0
        self._busy = False
        self._stage: str | None = None
        self._last_heard = 0.0
        self._cancel_deadline: float | None = None
        self._unaccepted = None  # the job's message, until the worker says it took it (resent once if not)
        _clients.add(self)

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The worker's last log lines (of the current process, or the last one that ended)."""
        source = self._child.last_lines(lines) if self._child is not None else self._last_log[-lines:]
        return "\n".join(source)

    def start(self):
        if self.alive:
            return
        if self._child is not None:  # it ended while idle
            self._discard()
        package_dir = Path(__file__).resolve().parent
        try:
            self._child = _Child([self.python, "-m", f"{package_dir.name}.worker_process"], cwd=package_dir.parent,
                                 env=self._environment(package_dir.parent))
        except OSError as error:
            raise WorkerError(
                f"Could not start the worker with the Python interpreter {self.python!r} "
                f"({error.strerror or error}). Check the interpreter path in the add-on's preferences.") from None

    def submit(self, image, settings, model: ModelSpec):
        self._check_idle()
        header, arrays = _image_message(image)
        self._submit(dict(header, type="generate", settings=_settings_dict(settings)), arrays, model)

    def submit_colors(self, scene_code, points, model: ModelSpec):
        self._check_idle()
        arrays = {"scene_code": np.asarray(scene_code, np.float32), "points": np.asarray(points, np.float32)}
        self._submit({"type": "colors"}, arrays, model)

    def _check_idle(self):
        if self._busy:
            raise WorkerError("A job is already running: wait for it to finish or cancel it first.")

    def _submit(self, header: dict, arrays: dict, model: ModelSpec):
        header.update(job=self._job + 1, model=model.to_message())
        reusing = self.alive
        self.start()
        self._child.send(header, arrays)
        self._job += 1
        self._busy, self._stage, self._cancel_deadline = True, None, None
        # An idle worker killed an instant ago can still look alive: if it ends without taking the job, the job
        # goes to a fresh process once (a worker this submit started itself gets no second try).
        self._unaccepted = (header, arrays) if reusing else None
        self._last_heard = time.monotonic()

    def poll(self) -> list:
        return self._events(wait=0.0)

    def run(self, image, settings, model: ModelSpec, progress=None) -> Mesh:
        self.submit(image, settings, model)
        return self._wait(progress).mesh

    def colors(self, scene_code, points, model: ModelSpec, progress=None):
        self.submit_colors(scene_code, points, model)
        return self._wait(progress).colors

    def _wait(self, progress) -> Result:
        try:
            while True:
                for event in self._events(wait=0.1):
                    if isinstance(event, Result):
                        return event
                    if isinstance(event, Failure):
                        raise event.error
                    if progress is not None and self._cancel_deadline is None:
                        try:
                            progress(event.stage, event.fraction)
                        except Cancelled:
                            self.cancel()
        finally:
            if self._busy:  # interrupted by an exception of the progress callback: leave nothing running
                self.close()

    def cancel(self):
        if not self._busy or self._cancel_deadline is not None:
            return
        self._cancel_deadline = time.monotonic() + self.timeouts.grace
        self._child.send({"type": "cancel", "job": self._job})

    def close(self):
        self._busy, self._unaccepted = False, None
        if self._child is not None:
            self._discard()

    # -- internals

    def _environment(self, root: Path) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        paths = [str(root), *self.extra_paths]
        if _same_path(self.python, sys.executable):
            # Bundled wheels live in folders only this interpreter's sys.path knows (Blender extensions).
            paths += [os.path.abspath(path) for path in sys.path if path and os.path.exists(path)]
            env["PYTHONNOUSERSITE"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def _events(self, wait: float) -> list:
        child = self._child
        if child is None:
            return []
        items = []
        try:
            items.append(child.messages.get(timeout=wait) if wait else child.messages.get_nowait())
            while True:
                items.append(child.messages.get_nowait())
        except queue.Empty:
            pass
        events = []
        for item in items:
            events.append(self._handle(item))
            if self._child is not child:
                break
        else:
            if self._busy:
                events.append(self._check_time())
        events = [event for event in events if event is not None]
        if any(isinstance(event, Failure) and isinstance(event.error, WorkerError) for event in events):
            log.warning("the Image to Mesh worker failed; its last log lines:\n%s", self.log_tail())
        return events

    def _handle(self, item):
        if item[0] == "message":
            _, arrival, header, arrays = item
            if not self._busy or header.get("job") != self._job:
                return None
            self._last_heard = arrival
            if header["type"] == "accepted":
                self._unaccepted = None
                return None
            if header["type"] == "progress":
                self._stage = header["stage"]
                if self._cancel_deadline is not None:
                    return None
                return Progress(header["stage"], header["fraction"], header.get("detail", ""))
            self._busy = False
            if self._cancel_deadline is not None:
                return Failure(Cancelled("Cancelled."))
            if header["type"] == "result" and "vertices" in arrays:
                scene_code = arrays.pop("scene_code", None)
                return Result(mesh=Mesh(**arrays), scene_code=scene_code,
                              reused_encoding=bool(header.get("reused_encoding")))
            if header["type"] == "result":
                return Result(colors=arrays["colors"])
            return Failure(_ERROR_TYPES.get(header.get("error"), WorkerError)(header.get("message", "")))
        was_busy, cancelled = self._busy, self._cancel_deadline is not None
        unaccepted, self._unaccepted = self._unaccepted, None
        if was_busy and unaccepted is not None and not cancelled:
            self._discard(kill=True)
            log.info("the idle worker had ended before it took the job; sending the job to a new one")
            try:
                self.start()
            except WorkerError as error:
                self._busy = False
                return Failure(error)
            self._child.send(*unaccepted)
            self._last_heard = time.monotonic()
            return None
        self._busy = False
        if item[0] == "broken":
            self._discard(kill=True)
            error = item[1]
        else:
            error = self._crash_error(self._discard())
        if not was_busy:
            return None
        return Failure(Cancelled("Cancelled.") if cancelled else error)

    def _check_time(self):
        now = time.monotonic()
        if self._cancel_deadline is not None and now > self._cancel_deadline:
            self._busy = False
            self._discard(kill=True)
            log.info("the worker did not stop within %.0f s of a cancel and was ended", self.timeouts.grace)
            return Failure(Cancelled("Cancelled."))
        loading = self._stage in (None, *LOADING_STAGES)
        limit = self.timeouts.loading if loading else self.timeouts.silence
        if now - self._last_heard <= limit:
            return None
        self._busy = False
        self._discard(kill=True)
        doing = "starting and loading the model" if loading else self._stage.lower()
        return Failure(WorkerError(
            f"The worker process stopped responding while {doing} (nothing heard for {limit:.0f} s), so it was "
            "ended. Try again; if it keeps happening, try a lower mesh resolution or another device."))

    def _discard(self, kill: bool = False):
        """Stop the current process; returns its exit status."""
        child, self._child = self._child, None
        status = child.kill() if kill else child.stop(self.timeouts.grace)
        self._last_log = child.last_lines(LOG_LINES)
        return status

    def _crash_error(self, status: int | None) -> WorkerError:
        if status is not None and status < 0:
            name = _signal_name(-status)
            how = f"killed by {name}" + (", often because the system ran out of memory" if name == "SIGKILL" else "")
        else:
            how = f"exit status {status}"
        said = ""
        if status is not None and status > 0:  # it ended itself: its last words, e.g. "ModuleNotFoundError: ..."
            said = next((line for line in reversed(self._last_log) if not line.startswith((" ", "\t", LOG_PREFIX))), "")
            said = f" It said: {said[:300]}" if said else ""
        return WorkerError(f"The worker process stopped unexpectedly ({how}). The next Generate starts a new one.{said}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _same_path(a: str, b: str) -> bool:
    """Compared without resolving links: a venv's python links to its base interpreter but is another environment."""
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _image_message(image) -> tuple[dict, dict]:
    if isinstance(image, (str, os.PathLike)):
        return {"image_path": os.path.abspath(os.fspath(image))}, {}
    if isinstance(image, np.ndarray):
        if image.dtype.newbyteorder("<").str not in DTYPES:
            raise InputError(f"Images of pixel type {image.dtype} cannot be used: pass uint8, uint16 or float pixels.")
        return {}, {"image": image}
    raise InputError(f"The image must be a file path or a numpy array of pixels, not {type(image).__name__}.")


def _settings_dict(settings) -> dict:
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)


_clients = weakref.WeakSet()


@atexit.register
def _close_all():
    for client in list(_clients):
        client.close()
