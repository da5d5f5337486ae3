"""The modal path's steps (timers never fire in the bpy module, so they are called directly), and failures:
each ends in a clear message with the file exactly as it was."""

import time

import bpy
import pytest

from tests.blender.support import INPUT_PNG, data_names, poll_until, start_job
from tests.procfs import posix_only

RESOLUTION = 32


def test_modal_steps_start_poll_with_progress_finish(ext):
    before = data_names()
    job = start_job(ext, foreground_ratio=0.8)  # a framing no other test uses: the worker keeps no scene code of it
    assert ext.generate.active_job() is job
    assert not bpy.ops.image_to_mesh.generate.poll()  # a second Generate is refused while one runs

    # One poll handles every event that arrived since the last, so sampling job.stage between polls can miss a
    # stage the tiny model passes in milliseconds: record what each handled event left the job showing.
    handled, handle = [], job._handle
    job._handle = lambda event: (handle(event), handled.append((job.stage, job.progress)))
    while not job.poll():
        ext.generate.show_status(bpy.context, job)
        status = bpy.context.window_manager.image_to_mesh_job
        assert status.running and status.stage == job.stage and status.progress == pytest.approx(job.progress)
        time.sleep(0.01)
    assert data_names() == before  # nothing is added before finish
    stages = [stage for stage, _ in handled]
    for stage in ("Preparing image", "Encoding image", "Extracting mesh"):
        assert stage in stages
    assert stages.index("Preparing image") < stages.index("Encoding image") < stages.index("Extracting mesh")
    assert all(0.0 <= fraction <= 1.0 for _, fraction in handled)

    obj = job.finish(bpy.context)
    ext.generate.show_status(bpy.context, None, result="done")
    assert obj.name == "input" and len(obj.data.vertices) > 1000
    assert ext.generate.active_job() is None
    assert not bpy.context.window_manager.image_to_mesh_job.running
    assert bpy.ops.image_to_mesh.generate.poll()


@pytest.mark.parametrize("stage", ["Starting", "Extracting mesh"])  # the tiny model encodes in milliseconds
def test_cancel_adds_nothing_and_the_next_generate_works(ext, stage):
    bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)  # model loaded, worker warm
    before = data_names()
    worker_pid = ext.worker_session.current_client().pid

    job = start_job(ext, resolution=256)  # slow enough to be caught mid-way
    poll_until(job, lambda: job.stage == stage or job.done)
    assert not job.done
    job.request_cancel()  # what Esc and the Cancel button do; the next poll acts on it
    poll_until(job, lambda: job.done)

    assert type(job.error).__name__ == "Cancelled" and job.mesh is None
    assert data_names() == before
    assert ext.generate.active_job() is None
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION) == {"FINISHED"}
    assert ext.worker_session.current_client().pid == worker_pid  # a cooperative cancel keeps the model


def test_cancel_operator_stops_the_running_job(ext):
    job = start_job(ext)
    assert bpy.ops.image_to_mesh.cancel.poll()
    assert bpy.ops.image_to_mesh.cancel() == {"FINISHED"}
    poll_until(job, lambda: job.done)
    assert type(job.error).__name__ == "Cancelled"
    assert not bpy.ops.image_to_mesh.cancel.poll()


@posix_only
def test_worker_killed_mid_job_is_a_clear_error_and_recovers(ext):
    import os
    import signal

    before = data_names()
    job = start_job(ext, resolution=256)
    poll_until(job, lambda: job.stage == "Extracting mesh" or job.done)
    os.kill(job.client.pid, signal.SIGKILL)
    poll_until(job, lambda: job.done)
    assert type(job.error).__name__ == "WorkerError"
    assert "stopped unexpectedly" in str(job.error)
    assert data_names() == before
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION) == {"FINISHED"}


def test_loading_another_file_cancels_the_running_job(ext):
    job = start_job(ext)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert job.done and ext.generate.active_job() is None
    assert len(bpy.data.objects) == 0


def generate_fails(match, **arguments):
    before = data_names()
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.image_to_mesh.generate(resolution=RESOLUTION, **arguments)
    assert data_names() == before, "a failed generate must leave the file as it was"
    status = bpy.context.window_manager.image_to_mesh_job
    assert not status.running and status.error
    return status.error


def test_missing_file(tmp_path):
    message = generate_fails("does not exist", filepath=str(tmp_path / "nothing.png"))
    assert "nothing.png" in message


def test_corrupt_image_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(INPUT_PNG.read_bytes()[:400])
    message = generate_fails("broken.png", filepath=str(path))
    assert any(words in message for words in ("damaged", "cannot be read", "cannot be decoded"))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    generate_fails("notes.png", filepath=str(path))


def test_unknown_image_name():
    generate_fails("no image named 'Nope'", image="Nope")


def test_no_image_chosen():
    generate_fails("No image chosen")


def test_image_without_pixels(tmp_path):
    image = bpy.data.images.load(str(INPUT_PNG))
    image.filepath = str(tmp_path / "gone.png")
    image.reload()
    generate_fails("has no pixels", image=image.name)


@pytest.mark.parametrize("problem", ["empty folder", "no checkpoint", "garbage checkpoint"])
def test_bad_model_folder(monkeypatch, tmp_path, problem):
    from tests.blender.support import FIXTURE_DIR

    if problem != "empty folder":
        for name in ("config.yaml", "vit_config.json"):
            (tmp_path / name).write_bytes((FIXTURE_DIR / name).read_bytes())
    if problem == "garbage checkpoint":
        (tmp_path / "model.ckpt").write_bytes(b"\x80\x04 not a checkpoint at all")
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(tmp_path))
    message = generate_fails(".", filepath=str(INPUT_PNG))
    assert "Traceback" not in message
    assert str(tmp_path) in message or "model.ckpt" in message or "config.yaml" in message


def test_exr_file_is_read_through_blender_and_leaves_no_image(tmp_path):
    source = bpy.data.images.load(str(INPUT_PNG))
    exr = tmp_path / "cat.exr"
    render = bpy.context.scene.render.image_settings
    render.file_format = "OPEN_EXR"
    source.save_render(str(exr), scene=bpy.context.scene)
    bpy.data.images.remove(source)
    before = data_names()

    assert bpy.ops.image_to_mesh.generate(filepath=str(exr), resolution=RESOLUTION) == {"FINISHED"}
    after = data_names()
    assert after["images"] == before["images"]
    assert [o.name for o in bpy.data.objects] == ["cat"]


class Event:
    """What modal() reads of a window-manager event (bpy.types.Event cannot be made from Python)."""

    def __init__(self, type, value="NOTHING"):
        self.type, self.value = type, value


MALFORMED_WORKER = """#!{python}
import sys
sys.path.insert(0, {root!r})
from core.worker_protocol import read_message, write_message
header, _ = read_message(sys.stdin.buffer)
write_message(sys.stdout.buffer, {{"type": "accepted", "job": header["job"]}})
write_message(sys.stdout.buffer, {{"type": "progress", "job": header["job"]}})  # no stage, no fraction
sys.stdin.buffer.read()
"""


def test_modal_error_ends_the_job_frees_the_button_and_reports(ext, tmp_path):
    """A worker whose reply breaks the protocol makes job.poll() raise inside modal(): the job still ends, the
    timer goes, the error is shown, and the next Generate works."""
    import sys

    from tests.blender.support import REPO_ROOT

    worker = tmp_path / "worker"
    worker.write_text(MALFORMED_WORKER.format(python=sys.executable, root=str(REPO_ROOT)))
    worker.chmod(0o755)
    before = data_names()
    job = ext.generate.GenerateJob(ext.generate.build_request(bpy.context, filepath=str(INPUT_PNG), resolution=32),
                                   python=str(worker))
    job.start()
    reports = []
    run = ext.generate.QueueRun.for_job(bpy.context, job, lambda kind, text: reports.append((kind, text)))
    assert run.modal(bpy.context, Event("MOUSEMOVE")) == {"PASS_THROUGH"}
    deadline = time.monotonic() + 30
    while (result := run.modal(bpy.context, Event("TIMER"))) == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        time.sleep(0.02)

    assert result == {"CANCELLED"}
    assert ext.generate.active_job() is None and run.timer is None
    assert ext.worker_session.current_client() is None  # the worker that broke the protocol was ended
    assert [kind for kind, _ in reports] == [{"ERROR"}]
    assert "unexpected error (KeyError: 'stage')" in reports[0][1]
    status = bpy.context.window_manager.image_to_mesh_job
    assert not status.running and status.error == reports[0][1]
    assert data_names() == before
    assert bpy.ops.image_to_mesh.generate.poll()
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION) == {"FINISHED"}


def test_modal_steps_add_the_object_and_esc_cancels(ext):
    reports = []
    run = ext.generate.QueueRun.for_job(bpy.context, start_job(ext), lambda kind, text: reports.append((kind, text)))
    deadline = time.monotonic() + 60
    while (result := run.modal(bpy.context, Event("TIMER"))) == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result == {"FINISHED"} and run.timer is None
    assert [o.name for o in bpy.data.objects] == ["input"] and reports[0][1].startswith("Added 'input'")

    before = data_names()
    run = ext.generate.QueueRun.for_job(bpy.context, start_job(ext, resolution=256),
                                        lambda *report: reports.append(report))
    assert run.modal(bpy.context, Event("ESC", "PRESS")) == {"RUNNING_MODAL"}
    deadline = time.monotonic() + 60
    while (result := run.modal(bpy.context, Event("TIMER"))) == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result == {"CANCELLED"} and reports[-1] == ({"INFO"}, "Generate 3D cancelled; nothing was added.")
    assert data_names() == before and ext.generate.active_job() is None


def linked_collection_active(tmp_path):
    """Make a collection linked from another .blend the active one (new objects cannot go into it)."""
    library_file = tmp_path / "library.blend"
    props = bpy.data.collections.new("Props")
    bpy.data.libraries.write(str(library_file), {props})
    bpy.data.collections.remove(props)
    with bpy.data.libraries.load(str(library_file), link=True) as (_, linked):
        linked.collections = ["Props"]
    bpy.context.scene.collection.children.link(linked.collections[0])
    view_layer = bpy.context.view_layer
    view_layer.active_layer_collection = view_layer.layer_collection.children["Props"]
    assert bpy.context.collection.library is not None


def test_linked_active_collection_is_a_clear_error_and_leaves_no_orphans(tmp_path):
    linked_collection_active(tmp_path)
    message = generate_fails("cannot be added to the active collection 'Props'", filepath=str(INPUT_PNG))
    assert "is linked" in message and "Outliner" in message
    assert (len(bpy.data.meshes), len(bpy.data.materials), len(bpy.data.objects)) == (0, 0, 0)


@pytest.mark.parametrize("arguments, match", [
    (dict(resolution=5000), r"Resolution must be a whole number from 32 to 1024, not 5000\."),
    (dict(resolution=8), r"Resolution must be a whole number from 32 to 1024, not 8\."),
    (dict(threshold=0.0), r"Threshold must be a number of at least 0.1, not 0.0\."),
    (dict(foreground_ratio=1.5), r"Foreground ratio must be a number from 0.5 to 1, not 1.5\."),
])
def test_out_of_range_settings_from_a_script_are_errors_not_clamped(arguments, match):
    before = data_names()
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), **arguments)
    assert data_names() == before


def test_the_panel_settings_take_their_limits_from_core_settings():
    from core import settings

    properties = bpy.types.Scene.bl_rna.properties["image_to_mesh"].fixed_type.properties
    found = {name: (properties[name].default, properties[name].hard_min, properties[name].hard_max)
             for name in ("resolution", "threshold", "foreground_ratio")}
    assert found["resolution"] == (256, 32, 1024)
    assert found["threshold"][:2] == pytest.approx((25.0, 0.1))  # single precision
    assert found["foreground_ratio"] == pytest.approx((0.85, 0.5, 1.0))
    assert settings.GenerateSettings(threshold=found["threshold"][1]).validate() is None
    bpy.context.scene.image_to_mesh.threshold = 0.0  # the panel cannot hold a value the pipeline refuses
    assert bpy.context.scene.image_to_mesh.threshold == pytest.approx(0.1)
