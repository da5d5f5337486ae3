"""The network is touched only to download a model that is not cached yet: a model already in a real
huggingface_hub cache loads through the worker without one connection to the hub, even with downloads allowed."""

import shutil
from pathlib import Path

import pytest

from core.errors import ModelError
from core.pipeline import GenerateSettings
from core.worker import ModelSpec, WorkerClient
from tests.hub import CountingServer, add_to_hub_cache, tiny_hub_files

REPO_ID = "tester/tiny-triposr"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(monkeypatch):
    server = CountingServer()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")  # the worker inherits it
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


def hub_cache(root: Path, model_dir: Path) -> Path:
    add_to_hub_cache(root, REPO_ID, REVISION, tiny_hub_files(model_dir))
    return root


@pytest.mark.parametrize("revision", [None, REVISION])  # "main" through refs/, or a pinned commit
def test_cached_hub_model_loads_without_contacting_the_hub(hub, tmp_path, tiny_model_dir, revision):
    cache = hub_cache(tmp_path / "cache", tiny_model_dir)
    spec = ModelSpec(source=REPO_ID, revision=revision, device="cpu", cache_dir=str(cache), allow_download=True)
    client = WorkerClient()
    try:
        mesh = client.run(tiny_model_dir / "input.png", GenerateSettings(resolution=32), spec)
    finally:
        client.close()
    assert len(mesh.vertices) == 11627  # the fixture model, found in the cache
    assert hub.connections == 0


def test_not_cached_and_downloads_off_is_the_offline_paragraph_without_a_connection(hub, tmp_path, tiny_model_dir):
    spec = ModelSpec(source=REPO_ID, device="cpu", cache_dir=str(tmp_path / "empty"), allow_download=False)
    client = WorkerClient()
    try:
        with pytest.raises(ModelError) as raised:
            client.run(tiny_model_dir / "input.png", GenerateSettings(resolution=32), spec)
    finally:
        client.close()
    message = str(raised.value)
    assert "not in the local cache" in message and "downloads are not allowed" in message
    assert "local folder" in message or "folder" in message
    assert hub.connections == 0


def test_a_damaged_cached_file_is_fetched_again_not_used(hub, tmp_path, tiny_model_dir):
    cache = hub_cache(tmp_path / "cache", tiny_model_dir)
    checkpoint = next((cache / f"models--{REPO_ID.replace('/', '--')}" / "blobs").glob("????????????????" * 4))
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])  # truncated: its hash no longer matches its name
    spec = ModelSpec(source=REPO_ID, device="cpu", cache_dir=str(cache), allow_download=True)
    client = WorkerClient()
    try:
        with pytest.raises(ModelError, match="could not be reached|failed"):
            client.run(tiny_model_dir / "input.png", GenerateSettings(resolution=32), spec)
    finally:
        client.close()
    assert not checkpoint.exists()  # deleted, never loaded
    assert hub.connections >= 1  # it tried to fetch it again: only now is the network used
    shutil.rmtree(cache)
