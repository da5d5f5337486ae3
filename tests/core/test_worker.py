"""The worker process with real processes and real signals: results, errors, cancel, crash, hang, exit."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import Cancelled, InputError, ModelError, WorkerError
from core.pipeline import GenerateSettings, generate
from core.weights import load_model
from core.worker import Failure, ModelSpec, Progress, Result, Timeouts, WorkerClient
from tests.hub import add_to_hub_cache, tiny_hub_files
from tests.procfs import linux_only, posix_only, process_gone

ROOT = Path(__file__).resolve().parents[2]
SMALL = GenerateSettings(resolution=32)
SLOW = GenerateSettings(resolution=128)  # long enough to act while the mesh is being extracted


@pytest.fixture(scope="module")
def spec(tiny_model_dir):
    return ModelSpec(source=str(tiny_model_dir), device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def image(tiny_model_dir):
    return tiny_model_dir / "input.png"


@pytest.fixture(scope="module")
def shared_client():
    """One worker for the tests that leave it usable (saves a process start per test)."""
    client = WorkerClient()
    yield client
    client.close()


@pytest.fixture
def client(shared_client):
    assert not shared_client.busy
    return shared_client


@pytest.fixture
def own_client():
    """A worker of its own, for tests that kill or replace it."""
    client = WorkerClient()
    yield client
    client.close()


def wait_for_end(client, timeout=120.0, on_progress=None):
    """Poll like a modal operator's timer until the job ends; returns (progress events, final event)."""
    progress = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.poll():
            if isinstance(event, Progress):
                progress.append(event)
                if on_progress is not None:
                    on_progress(event)
            else:
                assert not client.busy
                return progress, event
        time.sleep(0.02)
    raise AssertionError(f"the job did not end within {timeout} s")


def wait_until(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_mesh_from_the_worker_equals_the_in_process_pipeline(own_client, spec, image, tiny_model_dir):
    own_client.submit(image, SMALL, spec)
    progress, end = wait_for_end(own_client)
    assert isinstance(end, Result), end
    stages = list(dict.fromkeys(event.stage for event in progress))
    assert stages == ["Loading model", "Preparing image", "Encoding image", "Extracting mesh"]
    assert all(0.0 <= event.fraction <= 1.0 for event in progress)

    expected = generate(load_model(str(tiny_model_dir), device="cpu", allow_download=False), image, SMALL)
    np.testing.assert_array_equal(end.mesh.vertices, expected.vertices)
    np.testing.assert_array_equal(end.mesh.faces, expected.faces)
    np.testing.assert_array_equal(end.mesh.colors, expected.colors)
    assert len(end.mesh.vertices) == 11627  # the fixture's 32³ reference mesh


def test_pixels_as_float_rgba_array_and_model_kept_between_jobs(client, spec, image):
    pixels = np.asarray(Image.open(image).convert("RGBA"), dtype=np.float32) / 255.0  # like Blender's pixels
    from_path = client.run(image, SMALL, spec)
    pid = client.pid
    progress = []
    from_pixels = client.run(pixels, SMALL, spec, progress=lambda stage, fraction: progress.append(stage))
    assert client.pid == pid and client.alive
    assert "Loading model" not in progress  # the loaded model was reused
    assert len(from_pixels.vertices) > 1000
    assert abs(len(from_pixels.vertices) - len(from_path.vertices)) < 0.05 * len(from_path.vertices)


def test_another_model_spec_reloads(client, spec, image, tiny_model_dir, tmp_path):
    client.run(image, SMALL, spec)
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("config.yaml", "vit_config.json", "model.ckpt"):
        (copy / name).write_bytes((tiny_model_dir / name).read_bytes())
    stages = []
    client.run(image, SMALL, ModelSpec(source=str(copy), device="cpu", allow_download=False),
               progress=lambda stage, fraction: stages.append(stage))
    assert stages[0] == "Loading model"
    assert f"loaded {copy}" in client.log_tail()


def test_second_submit_while_busy_is_refused(client, spec, image):
    client.submit(image, SMALL, spec)
    with pytest.raises(WorkerError, match="already running"):
        client.submit(image, SMALL, spec)
    _, end = wait_for_end(client)
    assert isinstance(end, Result)


def test_errors_come_back_as_our_types(client, spec, image, tmp_path):
    with pytest.raises(ModelError):
        client.run(image, SMALL, ModelSpec(source=str(tmp_path / "missing"), device="cpu", allow_download=False))
    pid = client.pid
    with pytest.raises(InputError, match="Resolution"):
        client.run(image, GenerateSettings(resolution=3), spec)
    with pytest.raises(InputError):
        client.run(tmp_path / "no such image.png", SMALL, spec)
    with pytest.raises(InputError, match="numpy array"):
        client.submit([[1, 2], [3, 4]], SMALL, spec)
    assert client.pid == pid and not client.busy  # errors do not cost the process
    assert isinstance(client.run(image, SMALL, spec).vertices, np.ndarray)


def test_unexpected_error_in_the_worker_is_a_worker_error_without_traceback(client, spec, image, caplog):
    with pytest.raises(WorkerError) as caught:
        client.run(image, {"resolution": 32, "no_such_setting": 1}, spec)
    message = str(caught.value)
    assert "unexpected error" in message and "no_such_setting" in message
    assert "Traceback" not in message
    assert "Traceback (most recent call last)" in client.log_tail(50)
    assert "Traceback (most recent call last)" in caplog.text  # the console gets the details


def test_cancel_right_after_submit_is_cooperative(client, spec, image):
    client.run(image, SMALL, spec)
    pid = client.pid
    client.submit(image, SLOW, spec)
    client.cancel()
    _, end = wait_for_end(client)
    assert isinstance(end, Failure) and isinstance(end.error, Cancelled)
    assert client.pid == pid and client.alive  # the worker honoured it, no kill
    assert len(client.run(image, SMALL, spec).vertices) == 11627


STAGES = ["Loading model", "Preparing image", "Encoding image", "Extracting mesh"]


@pytest.mark.parametrize("stage", STAGES)
def test_cancel_at_a_stage(own_client, spec, image, stage):
    own_client.submit(image, SLOW, spec)
    seen = []

    def cancel_at_stage(event):
        seen.append(event.stage)
        if event.stage == stage:
            own_client.cancel()

    progress, end = wait_for_end(own_client, on_progress=cancel_at_stage)
    assert stage in seen
    assert isinstance(end, Failure) and isinstance(end.error, Cancelled)
    # The worker stops within the stage it was in when the cancel reached it: the one we saw, or, as the tiny
    # model runs a short stage in milliseconds, the next one (its events were already on the way).
    allowed = set(STAGES[STAGES.index(stage):STAGES.index(stage) + 2])
    assert {event.stage for event in progress[seen.index(stage):]} <= allowed
    assert own_client.alive
    assert len(own_client.run(image, SMALL, spec).vertices) == 11627


def test_run_cancels_when_progress_raises_cancelled(client, spec, image):
    def progress(stage, fraction):
        if stage == "Extracting mesh":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        client.run(image, SLOW, spec, progress=progress)
    assert not client.busy and client.alive


@linux_only
def test_cancel_of_a_worker_that_does_not_answer_ends_it(spec, image):
    client = WorkerClient(timeouts=Timeouts(grace=1.0))
    try:
        client.run(image, SMALL, spec)
        pid = client.pid
        client.submit(image, SLOW, spec)
        os.kill(pid, signal.SIGSTOP)
        client.cancel()
        _, end = wait_for_end(client, timeout=30)
        assert isinstance(end, Failure) and isinstance(end.error, Cancelled)
        assert process_gone(pid) and client.pid is None
        assert len(client.run(image, SMALL, spec).vertices) == 11627
        assert client.pid != pid
    finally:
        client.close()


@linux_only
def test_worker_killed_mid_job_is_a_clear_error_and_the_next_job_works(own_client, spec, image):
    own_client.run(image, SMALL, spec)
    pid = own_client.pid
    own_client.submit(image, SLOW, spec)
    killed = []

    def kill_while_extracting(event):
        if event.stage == "Extracting mesh" and not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(True)

    _, end = wait_for_end(own_client, on_progress=kill_while_extracting)
    assert killed
    assert isinstance(end, Failure) and isinstance(end.error, WorkerError)
    assert "stopped unexpectedly" in str(end.error) and "SIGKILL" in str(end.error)
    assert "said" not in str(end.error)  # its log holds nothing about why it died
    assert process_gone(pid)
    assert len(own_client.run(image, SMALL, spec).vertices) == 11627
    assert own_client.pid != pid


@linux_only
def test_worker_killed_while_idle_is_replaced_silently(own_client, spec, image):
    own_client.run(image, SMALL, spec)
    pid = own_client.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not own_client.alive)
    assert len(own_client.run(image, SMALL, spec).vertices) == 11627
    assert own_client.pid != pid and process_gone(pid)


@linux_only
@pytest.mark.parametrize("round_", range(3))  # a race: several tries make a missed one unlikely
def test_job_sent_the_instant_after_an_idle_worker_was_killed_works(own_client, spec, image, round_):
    own_client.run(image, SMALL, spec)
    pid = own_client.pid
    os.kill(pid, signal.SIGKILL)  # no wait: the client may still see the process alive when it sends the job
    assert len(own_client.run(image, SMALL, spec).vertices) == 11627
    assert own_client.pid != pid and process_gone(pid)


@linux_only
def test_hung_worker_is_ended_after_the_timeout(spec, image):
    client = WorkerClient()
    try:
        client.run(image, SMALL, spec)
        pid = client.pid
        client.timeouts = Timeouts(loading=2.0, silence=2.0)
        client.submit(image, SLOW, spec)
        os.kill(pid, signal.SIGSTOP)
        _, end = wait_for_end(client, timeout=60)
        assert isinstance(end, Failure) and isinstance(end.error, WorkerError)
        assert "stopped responding" in str(end.error) and "2 s" in str(end.error)
        assert process_gone(pid)
        client.timeouts = Timeouts()
        assert len(client.run(image, SMALL, spec).vertices) == 11627
    finally:
        client.close()


@posix_only
def test_blocking_run_also_detects_a_hang(spec, image):
    client = WorkerClient(timeouts=Timeouts(loading=2.0, silence=2.0))
    try:
        client.start()
        os.kill(client.pid, signal.SIGSTOP)
        with pytest.raises(WorkerError, match="stopped responding while starting"):
            client.run(image, SMALL, spec)
    finally:
        client.close()


@linux_only
def test_close_ends_the_process_and_the_client_can_start_again(spec, image):
    client = WorkerClient()
    client.run(image, SMALL, spec)
    pid = client.pid
    client.close()
    assert process_gone(pid) and client.pid is None and not client.alive
    client.close()  # twice is fine
    assert len(client.run(image, SMALL, spec).vertices) == 11627
    client.close()


@linux_only
def test_close_during_a_job_ends_it(spec, image):
    client = WorkerClient()
    client.submit(image, SLOW, spec)
    wait_until(lambda: any(isinstance(event, Progress) for event in client.poll()), timeout=60)
    pid = client.pid
    client.close()
    assert process_gone(pid) and not client.busy


@posix_only
def test_no_temporary_files_are_left(spec, image, tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the worker inherits it
    client = WorkerClient()
    try:
        client.run(image, SMALL, spec)
        client.submit(image, SLOW, spec)
        os.kill(client.pid, signal.SIGKILL)
        wait_for_end(client)
        client.run(image, SMALL, spec)
    finally:
        client.close()
    # torch itself makes an empty, shared cache folder (torchinductor_<user>) on import; nothing else may appear.
    assert [path.name for path in temp.iterdir() if not path.name.startswith("torchinductor_")] == []
    assert [path for path in temp.rglob("*") if not path.is_dir()] == []


def _parent_script(ending: str) -> str:
    return textwrap.dedent(f"""
        import sys
        from core.worker import WorkerClient
        client = WorkerClient()
        client.start()
        print(client.pid, flush=True)
        {ending}
    """)


@linux_only
def test_worker_ends_when_its_parent_exits_without_closing(tmp_path):
    parent = subprocess.run([sys.executable, "-c", _parent_script("pass")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    pid = int(parent.stdout.split()[0])
    assert wait_until(lambda: process_gone(pid), timeout=10)  # atexit closed it


@linux_only
def test_worker_ends_when_its_parent_is_killed(spec):
    parent = subprocess.Popen([sys.executable, "-c", _parent_script("sys.stdin.read()")], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert not process_gone(pid)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: process_gone(pid), timeout=15)  # stdin closed → the worker exits by itself
    finally:
        parent.kill()
        parent.stdin.close()
        parent.stdout.close()
        parent.wait()


@linux_only  # Windows puts the worker in a process group of its own with CREATE_NEW_PROCESS_GROUP, untested here
def test_ctrl_c_in_the_parents_console_does_not_reach_the_worker(spec, image):
    """A terminal sends Ctrl+C's SIGINT to its whole foreground process group: Blender's, not the worker's."""
    script = _parent_script(textwrap.dedent("""
        import signal
        signal.signal(signal.SIGINT, lambda *_: print("parent got SIGINT", flush=True))
        print("handler set", flush=True)
        sys.stdin.readline()
        print(client.alive, flush=True)
    """).replace("\n", "\n        "))
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # like a console's group
    try:
        pid = int(parent.stdout.readline())
        assert parent.stdout.readline() == "handler set\n"  # a SIGINT before it would end the parent itself
        os.killpg(parent.pid, signal.SIGINT)
        assert parent.stdout.readline() == "parent got SIGINT\n"
        time.sleep(1.0)  # a worker that got it would be ending now
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "True\n"
        assert not process_gone(pid)
    finally:
        parent.kill()
        parent.stdin.close()
        parent.stdout.close()
        parent.wait()


def test_the_client_does_not_import_torch():
    """Blender's process imports the client: torch (hundreds of MB) must load only in the worker."""
    code = "import sys, core.worker; core.worker.WorkerClient(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_missing_interpreter_is_a_worker_error(spec, image, tmp_path):
    client = WorkerClient(python=str(tmp_path / "no-python"))
    with pytest.raises(WorkerError, match="Could not start the worker .*no-python"):
        client.run(image, SMALL, spec)
    assert not client.busy


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    """A new virtual environment without packages: its python is a link to this one's base interpreter."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def test_external_interpreter_does_not_borrow_our_packages(bare_venv, spec, image):
    """An environment without numpy fails saying what is missing, though its python links to the same binary."""
    client = WorkerClient(python=str(bare_venv))
    try:
        with pytest.raises(WorkerError, match="stopped unexpectedly.*It said: ModuleNotFoundError: No module named 'numpy'$"):
            client.run(image, SMALL, spec)
    finally:
        client.close()


def test_external_interpreter_with_extra_paths_works(bare_venv, spec, image):
    ours = next(path for path in sys.path if path.endswith("site-packages") and Path(path, "torch").is_dir())
    client = WorkerClient(python=str(bare_venv), extra_paths=[ours])
    try:
        mesh = client.run(image, SMALL, spec)
        assert len(mesh.vertices) == 11627
        assert f"at {bare_venv}" in client.log_tail()
    finally:
        client.close()


def _site_packages() -> str:
    return next(path for path in sys.path if path.endswith("site-packages") and Path(path, "torch").is_dir())


def test_external_interpreter_with_too_old_torch_is_refused_at_start(bare_venv, spec, image, tmp_path):
    """A real interpreter importing a real (if tiny) torch package of an old release, ahead of ours."""
    from core.torch_support import MIN_TORCH

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('__version__ = "2.0.1"\n')
    client = WorkerClient(python=str(bare_venv), extra_paths=[tmp_path, _site_packages()])
    try:
        with pytest.raises(WorkerError) as caught:
            client.run(image, SMALL, spec)
        wanted = ".".join(map(str, MIN_TORCH))
        assert str(caught.value).startswith(f"The Python at {bare_venv} has PyTorch 2.0.1; Image to Mesh needs "
                                            f"{wanted} or newer. Install PyTorch {wanted} or newer there")
        assert "has PyTorch 2.0.1" in client.log_tail()  # said at start, before any job
        assert client.alive  # the worker stays up and answers every job the same way
    finally:
        client.close()


def test_external_interpreter_without_torch_is_refused_at_start(bare_venv, spec, image, tmp_path):
    ours = Path(_site_packages())
    for name in ("numpy", "numpy.libs"):  # what core's protocol needs, and nothing else
        if (ours / name).exists():
            (tmp_path / name).symlink_to(ours / name)
    client = WorkerClient(python=str(bare_venv), extra_paths=[tmp_path])
    try:
        with pytest.raises(WorkerError, match=f"^The Python at {bare_venv} has no usable PyTorch "
                                              r"\(No module named 'torch'\)\. Install PyTorch"):
            client.run(image, SMALL, spec)
    finally:
        client.close()


@pytest.mark.skipif(os.name != "posix", reason="limits the worker's address space with the POSIX shell's ulimit")
def test_a_model_error_keeps_its_cause_in_the_worker_log(spec, image, tmp_path):
    """A worker that may use 2.4 GB of address space runs out of memory on a 1024³ grid (4.3 GB): the user sees
    the clear message, the log the whole traceback down to the MemoryError."""
    python = tmp_path / "python-with-less-memory"
    python.write_text(f'#!/bin/sh\nulimit -v 2500000\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    client = WorkerClient(python=str(python))
    try:
        with pytest.raises(ModelError, match="^The computer ran out of memory while extracting mesh"):
            client.run(image, GenerateSettings(resolution=1024), spec)
        log = client.log_tail(200)
        assert "MemoryError: Unable to allocate 4.00 GiB for an array with shape (1024, 1024, 1024)" in log
        assert "The above exception was the direct cause of the following exception" in log
    finally:
        client.close()


# Paths with spaces and non-ASCII characters (as in many users' home folders) for the image, a local model folder
# and the model cache, end to end through the worker process.
ODD = "Ordner mit Leerzeichen – Müller 画像 é"
REPO_ID = "tester/tiny-triposr"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def odd_image(tmp_path, tiny_model_dir):
    folder = tmp_path / ODD / "Bilder"
    folder.mkdir(parents=True)
    return shutil.copy(tiny_model_dir / "input.png", folder / "mein Bild – ß.png")


def test_image_and_model_folder_with_spaces_and_non_ascii(client, tmp_path, tiny_model_dir, odd_image):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / ODD / "Modèle TripoSR")
    spec = ModelSpec(source=str(model_dir), device="cpu", allow_download=False)
    mesh = client.run(odd_image, GenerateSettings(resolution=32), spec)
    assert len(mesh.vertices) == 11627
    assert f"loaded {model_dir} on cpu" in client.log_tail()


def test_model_cache_folder_with_spaces_and_non_ascii(client, tmp_path, tiny_model_dir, odd_image, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the worker inherits it: the cache alone must serve the model
    cache = tmp_path / ODD / "Cache für Modelle"
    add_to_hub_cache(cache, REPO_ID, REVISION, tiny_hub_files(tiny_model_dir))
    spec = ModelSpec(source=REPO_ID, revision=REVISION, device="cpu", cache_dir=str(cache), allow_download=False)
    mesh = client.run(odd_image, GenerateSettings(resolution=32), spec)
    assert len(mesh.vertices) == 11627


def test_saving_the_mesh_under_an_odd_path(tmp_path):
    from core.mesh import Mesh

    mesh = Mesh(vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]]),
                colors=np.full((3, 3), 0.5, np.float32))
    for suffix in (".ply", ".obj"):
        target = tmp_path / ODD / f"Ergebnis – ü{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        mesh.save(target)
        np.testing.assert_array_equal(Mesh.load(target).faces, mesh.faces)
