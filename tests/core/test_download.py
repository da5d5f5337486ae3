"""Downloads from a hub that misbehaves (tests.hub.FakeHub, driven by the real huggingface_hub): dropped
connections, corrupt bytes, a slow line, a cancel, and the caches a model may already be in."""

import json
import os
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from core.download import DownloadProgress
from core.errors import Cancelled, ModelError
from core.weights import find_model_files, load_model
from tests.hub import TINY_MODEL_FILES, FakeHub, add_to_hub_cache, blob_name, padded_checkpoint, tiny_hub_files

REPO_ID = "tester/tiny-triposr"
REVISION = "89abcdef0123456789abcdef0123456789abcdef"
RATE = 1_000_000  # bytes per second of the throttled hub


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    server = FakeHub(REPO_ID, REVISION, {name: (tiny_model_dir / name).read_bytes() for name in TINY_MODEL_FILES})
    # What HF_ENDPOINT sets, after the import that read it.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)  # for the worker and the command line
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


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


def test_progress_text_says_bytes_speed_and_time_left():
    status = DownloadProgress("model.ckpt", done=312_000_000, total=1_700_000_000, rate=4_200_000)
    assert status.text() == "312MB of 1.70GB, 4.20MB/s, 05:30 left"
    assert status.fraction == pytest.approx(312 / 1700)
    assert DownloadProgress("model.ckpt", done=312_000_000, total=None, rate=0.0).text() == "312MB"


def slow_checkpoint(hub) -> bytes:
    """A ~3.4 MB checkpoint behind a ~1 MB/s line: a few seconds of download."""
    hub.files["model.ckpt"] = padded_checkpoint(hub.files["model.ckpt"], 2_000_000)
    hub.rate = RATE
    return hub.files["model.ckpt"]


def partial_files(cache: Path) -> list[Path]:
    return list(cache.rglob("*.incomplete"))


def test_a_slow_download_reports_its_bytes_and_speed(hub, tiny_model_dir, tmp_path):
    checkpoint = slow_checkpoint(hub)
    statuses = []
    model = load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path, on_download=statuses.append)
    of_checkpoint = [status for status in statuses if status.filename == "model.ckpt"]
    done = [status.done for status in of_checkpoint]
    assert len(done) > 20 and done == sorted(set(done)) and done[-1] == len(checkpoint)
    assert {status.total for status in of_checkpoint} == {len(checkpoint)}
    assert 0.5 * RATE < of_checkpoint[-1].rate < 1.5 * RATE  # the speed of the whole download: about the line's
    reference = load_model(tiny_model_dir, device="cpu")
    assert torch.equal(fixture_density(model, tiny_model_dir), fixture_density(reference, tiny_model_dir))


def test_a_cancelled_download_keeps_its_bytes_and_the_next_try_resumes_them(hub, tiny_model_dir, tmp_path):
    checkpoint = slow_checkpoint(hub)
    received = []

    def cancel_after_a_third(status):
        received.append(status.done)
        if status.filename == "model.ckpt" and status.done > len(checkpoint) // 3:
            raise Cancelled("Cancelled.")

    with pytest.raises(Cancelled):
        load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path, on_download=cancel_after_a_third)
    [partial] = partial_files(tmp_path)
    assert partial.name == blob_name("model.ckpt", checkpoint) + ".incomplete"
    assert partial.stat().st_size == received[-1]
    assert partial.read_bytes() == checkpoint[:received[-1]]

    hub.rate = None
    model = load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path)
    assert [byte_range for name, byte_range in hub.gets if name == "model.ckpt"] == [None, f"bytes={received[-1]}-"]
    assert not partial_files(tmp_path)
    reference = load_model(tiny_model_dir, device="cpu")
    assert torch.equal(fixture_density(model, tiny_model_dir), fixture_density(reference, tiny_model_dir))


def test_a_copy_in_another_cache_is_used_and_not_downloaded_again(hub, tiny_model_dir, tmp_path):
    add_to_hub_cache(tmp_path / "extension", REPO_ID, REVISION, tiny_hub_files(tiny_model_dir))
    config, checkpoint = find_model_files(REPO_ID, revision=REVISION, cache_dir=tmp_path / "hf",
                                          search_dirs=[tmp_path / "extension"])
    assert tmp_path / "extension" in checkpoint.parents and tmp_path / "extension" in config.parents
    assert hub.heads == [] and hub.gets == []
    assert not (tmp_path / "hf").exists()


def checkpoint_data_offset(checkpoint: Path) -> int:
    """A byte inside the largest tensor's data (the archive stores records uncompressed)."""
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    return record.header_offset + 30 + len(record.filename) + len(record.extra) + 100


def test_the_checkpoint_is_hashed_once_until_it_changes(tiny_model_dir, tmp_path):
    snapshot = add_to_hub_cache(tmp_path, REPO_ID, REVISION, tiny_hub_files(tiny_model_dir))
    blob = (snapshot / "model.ckpt").resolve()
    load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path, allow_download=False)
    record = json.loads(blob.with_name(blob.name + ".verified.json").read_text())
    assert record["digest"] == blob.name and record["identity"]["size"] == blob.stat().st_size

    # A changed byte behind an unchanged size, modification time and inode is not seen: the file is not read.
    stat = blob.stat()
    with open(blob, "r+b") as file:
        file.seek(checkpoint_data_offset(blob))
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert blob.stat().st_ino == stat.st_ino
    load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path, allow_download=False)

    # A new modification time: hashed again, found damaged, deleted.
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelError, match="damaged .* has been deleted"):
        load_model(REPO_ID, revision=REVISION, device="cpu", cache_dir=tmp_path, allow_download=False)
    assert not blob.exists() and not blob.with_name(blob.name + ".verified.json").exists()


def test_through_the_worker_a_slow_download_is_no_hang_and_a_cancelled_one_resumes(hub, tiny_model_dir, tmp_path):
    from core.pipeline import GenerateSettings
    from core.worker import Failure, ModelSpec, Progress, Result, WorkerClient

    checkpoint = slow_checkpoint(hub)
    image, settings = tiny_model_dir / "input.png", GenerateSettings(resolution=32)
    spec = ModelSpec(source=REPO_ID, revision=REVISION, device="cpu", cache_dir=str(tmp_path))
    client = WorkerClient()

    def events_until_the_end(cancel_at=None):
        events = []
        while not events or not isinstance(events[-1], (Result, Failure)):
            events += client.poll()
            downloaded = [e for e in events if isinstance(e, Progress) and e.detail.startswith("model.ckpt")]
            if cancel_at is not None and downloaded and downloaded[-1].fraction > cancel_at:
                client.cancel()
            time.sleep(0.02)
        return events

    try:
        client.run(image, settings, ModelSpec(source=str(tiny_model_dir), device="cpu"))  # the worker is up
        # The download takes about 3.4 s; the worker would be taken for hung after 1 s without news.
        client.timeouts.loading = 1.0
        client.submit(image, settings, spec)
        events = events_until_the_end(cancel_at=1 / 3)
        assert isinstance(events[-1], Failure) and type(events[-1].error) is Cancelled
        [partial] = partial_files(tmp_path)
        kept = partial.stat().st_size
        assert len(checkpoint) // 3 < kept < len(checkpoint)

        client.submit(image, settings, spec)
        events = events_until_the_end()
    finally:
        client.close()
    assert isinstance(events[-1], Result) and len(events[-1].mesh.vertices) == 11627
    assert [byte_range for name, byte_range in hub.gets if name == "model.ckpt"] == [None, f"bytes={kept}-"]
    shown = [e for e in events if isinstance(e, Progress) and e.detail.startswith("model.ckpt")]
    assert len(shown) > 10 and {e.stage for e in shown} == {"Downloading model"}
    assert kept / len(checkpoint) <= shown[0].fraction and shown[-1].fraction == 1.0
    assert shown[-1].detail.startswith("model.ckpt: 3.41MB of 3.41MB, ") and "B/s" in shown[-1].detail


def test_the_command_line_shows_the_download(hub, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    checkpoint = slow_checkpoint(hub)
    result = subprocess.run(
        [sys.executable, "-m", "core", tiny_model_dir / "input.png", "-o", tmp_path / "out", "--model", REPO_ID,
         "--resolution", "32", "--device", "cpu"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub")))
    assert result.returncode == 0, result.stderr
    assert "model.ckpt: 100%" in result.stderr and "3.41M/3.41M" in result.stderr and "MB/s]" in result.stderr
    blobs = tmp_path / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "blobs"
    assert (blobs / blob_name("model.ckpt", checkpoint)).is_file()  # in the standard cache, shared with the add-on
