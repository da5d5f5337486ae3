"""Downloads from a hub that misbehaves: a loopback server speaking the part of the Hugging Face hub protocol that
hf_hub_download uses (HEAD for the metadata, GET with Range for the bytes), driven by the real huggingface_hub."""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from core.errors import ModelError
from core.weights import load_model
from tests.hub import TINY_MODEL_FILES, blob_name

REPO_ID = "tester/tiny-triposr"
REVISION = "89abcdef0123456789abcdef0123456789abcdef"


class FakeHub(ThreadingHTTPServer):
    """Serves the fixture's files; `drop_after[name]` bytes are sent before the first GET of a file is cut off,
    and the first `corrupt[name]` GETs of a file send one flipped byte. Every GET is logged with its Range."""

    daemon_threads = True

    def __init__(self, model_dir: Path):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.files = {name: (model_dir / name).read_bytes() for name in TINY_MODEL_FILES}
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.gets: list[tuple[str, str | None]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):
        pass

    def _file(self):
        prefix = f"/{REPO_ID}/resolve/{REVISION}/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if name not in self.server.files:
            self.send_error(404)
            return None, None
        return name, self.server.files[name]

    def _send_headers(self, name, data, status=200, start=0):
        self.send_response(status)
        self.send_header("X-Repo-Commit", REVISION)
        if name.endswith(".ckpt"):  # a Git LFS file
            self.send_header("X-Linked-Etag", f'"{blob_name(name, data)}"')
            self.send_header("X-Linked-Size", str(len(data)))
        else:
            self.send_header("ETag", f'"{blob_name(name, data)}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()

    def do_HEAD(self):
        name, data = self._file()
        if name:
            self._send_headers(name, data)

    def do_GET(self):
        name, data = self._file()
        if not name:
            return
        hub, byte_range = self.server, self.headers.get("Range")
        hub.gets.append((name, byte_range))
        first_get = sum(1 for logged, _ in hub.gets if logged == name) == 1
        start = int(byte_range.removeprefix("bytes=").split("-")[0]) if byte_range else 0
        body = data
        if hub.corrupt.get(name, 0) > 0:
            hub.corrupt[name] -= 1
            body = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        self._send_headers(name, data, 206 if start else 200, start)
        if first_get and name in hub.drop_after:
            self.wfile.write(body[start:hub.drop_after[name]])
            self.close_connection = True  # the peer sees the connection close before Content-Length bytes
            return
        self.wfile.write(body[start:])


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    server = FakeHub(tiny_model_dir)
    # What HF_ENDPOINT sets, after the import that read it.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.shutdown()
    server.server_close()


def fixture_density(model, tiny_model_dir):
    scene_code = torch.from_numpy(np.load(tiny_model_dir / "scene_codes.npy"))[0]
    points = torch.from_numpy(np.load(tiny_model_dir / "query_points.npy"))
    return model.query(scene_code, points)[0]


def cached_files(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.rglob("*") if path.is_file())


def test_download_fills_the_cache_and_loads(hub, tiny_model_dir, tmp_path):
    model = load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)
    expected = torch.from_numpy(np.load(tiny_model_dir / "query_density_act.npy"))[:, 0]
    torch.testing.assert_close(fixture_density(model, tiny_model_dir), expected, rtol=1e-4, atol=0)
    assert sorted(name for name, _ in hub.gets) == sorted(TINY_MODEL_FILES)
    load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)  # from the cache now
    assert len(hub.gets) == len(TINY_MODEL_FILES)


def test_a_connection_dropped_mid_file_resumes_where_it_stopped(hub, tiny_model_dir, tmp_path, monkeypatch):
    # The client writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB) and resumes after the last whole
    # one; a smaller chunk lets this 1.4 MB checkpoint stand in for the 1.7 GB one.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    drop = len(hub.files["model.ckpt"]) // 3
    hub.drop_after["model.ckpt"] = drop
    model = load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)
    first, second = [byte_range for name, byte_range in hub.gets if name == "model.ckpt"]
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and drop - (1 << 16) < resumed_at <= drop  # resumed, not restarted
    reference = load_model(tiny_model_dir, device="cpu")
    assert torch.equal(fixture_density(model, tiny_model_dir), fixture_density(reference, tiny_model_dir))
    assert not [name for name in cached_files(tmp_path) if name.endswith(".incomplete")]


def test_a_corrupted_download_is_detected_and_fetched_again(hub, tiny_model_dir, tmp_path):
    hub.corrupt["model.ckpt"] = 1
    model = load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)
    assert [name for name, _ in hub.gets].count("model.ckpt") == 2
    reference = load_model(tiny_model_dir, device="cpu")
    assert torch.equal(fixture_density(model, tiny_model_dir), fixture_density(reference, tiny_model_dir))


def test_a_download_that_stays_corrupt_is_refused_and_not_kept(hub, tmp_path):
    hub.corrupt["model.ckpt"] = 2
    with pytest.raises(ModelError, match="model.ckpt of tester/tiny-triposr .* failed its integrity check twice"):
        load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)
    checkpoint_blob = blob_name("model.ckpt", hub.files["model.ckpt"])
    assert checkpoint_blob not in cached_files(tmp_path) and "model.ckpt" not in cached_files(tmp_path)
    assert not any(os.path.islink(path) and not path.exists() for path in tmp_path.rglob("model.ckpt"))
