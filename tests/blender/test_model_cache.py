"""The add-on's way to a hub model: a copy in the shared Hugging Face cache is used without the network, and a
download shows its bytes, speed and time left in the panel's status."""

import time

import bpy
import pytest

from tests.blender.support import INPUT_PNG, start_job
from tests.hub import TINY_MODEL_FILES, CountingServer, FakeHub, add_to_hub_cache, padded_checkpoint, tiny_hub_files

REPO_ID = "tester/tiny-triposr"
REVISION = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hub_model(ext, monkeypatch, tmp_path):
    """The model preference names a hub repo; the Hugging Face cache is an empty folder; online access is on. The
    worker is started afresh so that it sees these environment variables."""
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", REPO_ID)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "huggingface"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    system = bpy.context.preferences.system
    online = system.use_online_access
    system.use_online_access = True
    ext.worker_session.close()
    yield tmp_path / "huggingface"
    ext.worker_session.close()
    system.use_online_access = online


def test_a_model_in_the_hugging_face_cache_is_used_without_the_network(hub_model, monkeypatch, tiny_model_dir):
    add_to_hub_cache(hub_model, REPO_ID, REVISION, tiny_hub_files(tiny_model_dir))
    server = CountingServer()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    try:
        result = bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", filepath=str(INPUT_PNG), resolution=32)
    finally:
        server.close()
    assert result == {"FINISHED"}
    assert len(bpy.context.active_object.data.vertices) == 11627
    assert server.connections == 0


def test_a_download_shows_bytes_speed_and_time_left(ext, hub_model, monkeypatch, tiny_model_dir):
    files = {name: (tiny_model_dir / name).read_bytes() for name in TINY_MODEL_FILES}
    files["model.ckpt"] = padded_checkpoint(files["model.ckpt"], 2_000_000)
    hub = FakeHub(REPO_ID, REVISION, files)
    hub.rate = 1_000_000
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    status = ext.properties.job_status(bpy.context)
    shown = []
    try:
        job = start_job(ext)
        deadline = time.monotonic() + 300
        while not job.poll() and time.monotonic() < deadline:
            ext.generate.show_status(bpy.context, job)
            shown.append((status.stage, status.detail))
            time.sleep(0.05)
    finally:
        hub.close()
    assert job.mesh is not None and len(job.mesh.vertices) == 11627
    downloading = [detail for stage, detail in shown if stage == "Downloading model" and detail.startswith("model")]
    assert len(downloading) > 10
    assert all(detail.startswith("model.ckpt: ") and " of 3.41MB" in detail for detail in downloading)
    assert any("B/s, " in detail and detail.endswith(" left") for detail in downloading)
    ext.generate.show_status(bpy.context, None)
    assert status.detail == ""
