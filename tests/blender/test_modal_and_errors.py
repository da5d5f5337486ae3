"""The modal path's steps (timers never fire in the bpy module, so they are called directly), and failures:
each ends in a clear message with the file exactly as it was."""

import time

import bpy
import pytest

from tests.blender.support import INPUT_PNG, data_names, poll_until, start_job

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
