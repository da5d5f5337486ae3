"""What tests of Hugging Face hub files share."""

import hashlib
import io
import os
import random
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TINY_MODEL_FILES = ("config.yaml", "vit_config.json", "model.ckpt")


def git_blob_sha1(data: bytes) -> str:
    """Git's blob hash: the hub's ETag for a small (non-LFS) file, and its blob name in the hub cache."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_name(name: str, data: bytes) -> str:
    """The hub's name for a file's content: sha256 for the checkpoint (a Git LFS file), git's blob sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if name.endswith(".ckpt") else git_blob_sha1(data)


def add_to_hub_cache(cache: Path, repo_id: str, revision: str, files: dict, ref: str = "main") -> Path:
    """Lay out files as huggingface_hub stores them: blobs named by sha256 (LFS) or git sha1, snapshot symlinks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    for name, (data, blob_name) in files.items():
        blob = repo / "blobs" / blob_name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / revision / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo / "snapshots" / revision


def tiny_hub_files(tiny_model_dir, corrupt_checkpoint=False) -> dict:
    """The tiny fixture's files for add_to_hub_cache: {name: (bytes, blob name)}; a corrupt checkpoint keeps the
    blob name of the good one, as a damaged download would."""
    files = {}
    for name in TINY_MODEL_FILES:
        data = (tiny_model_dir / name).read_bytes()
        blob = blob_name(name, data)
        if corrupt_checkpoint and name == "model.ckpt":
            data = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
        files[name] = (data, blob)
    return files


def padded_checkpoint(checkpoint: bytes, extra_bytes: int) -> bytes:
    """The checkpoint with an unused record of random bytes added to its zip archive: it loads as before but takes
    longer to download."""
    buffer = io.BytesIO(checkpoint)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/padding", random.Random(0).randbytes(extra_bytes))
    return buffer.getvalue()


class FakeHub(ThreadingHTTPServer):
    """A loopback server speaking the part of the Hugging Face hub protocol that huggingface_hub uses to download
    (HEAD for the metadata, GET with Range for the bytes) for one repo at one commit, also reachable as "main".

    `rate` throttles every GET to that many bytes per second; `drop_after[name]` bytes are sent before the first
    GET of a file is cut off; the first `corrupt[name]` GETs of a file send one flipped byte. Every GET is logged
    in `gets` with its Range header, every HEAD in `heads`."""

    daemon_threads = True

    def __init__(self, repo_id: str, revision: str, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repo_id, self.revision, self.files = repo_id, revision, files
        self.rate: float | None = None
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.gets: list[tuple[str, str | None]] = []
        self.heads: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):
        pass

    def _file(self):
        hub = self.server
        for revision in (hub.revision, "main"):
            prefix = f"/{hub.repo_id}/resolve/{revision}/"
            if self.path.startswith(prefix) and self.path[len(prefix):] in hub.files:
                name = self.path[len(prefix):]
                return name, hub.files[name]
        self.send_error(404)
        return None, None

    def _send_headers(self, name, data, status=200, start=0):
        self.send_response(status)
        self.send_header("X-Repo-Commit", self.server.revision)
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
        self.server.heads.append(self.path)
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
        end = hub.drop_after[name] if first_get and name in hub.drop_after else len(body)
        try:
            self._send(body[start:end])
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a cancel)
            return
        if end < len(body):
            self.close_connection = True  # the peer sees the connection close before Content-Length bytes

    def _send(self, data: bytes):
        rate = self.server.rate
        if rate is None:
            self.wfile.write(data)
            return
        step = max(int(rate / 20), 1)  # 20 writes a second
        started = time.monotonic()
        for offset in range(0, len(data), step):
            self.wfile.write(data[offset:offset + step])
            self.wfile.flush()
            time.sleep(max(0.0, started + (offset + step) / rate - time.monotonic()))


class CountingServer:
    """A loopback port that accepts and counts every connection (a closed port would hide a contact: the hub
    client falls back to its cache silently)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        self.socket.close()
