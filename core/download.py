"""Hub downloads that survive slow and broken connections: byte progress with speed and ETA, and a partial file
that a later try (after a cancel, a crash or a lost connection) resumes with an HTTP Range request.

huggingface_hub downloads into a file named per process and deletes it when the download fails or is
interrupted, so a cancelled 1.7 GB download would start again from zero. Here the bytes go to
`blobs/<etag>.incomplete` in the standard Hugging Face cache (the name its cache tools know for an interrupted
download) and stay there until the file is complete; then it becomes `blobs/<etag>` and hf_hub_download links it
into the snapshot as if it had downloaded it itself. The hub client's own file lock keeps two processes from
writing the same file.

    download_to_cache(repo_id, filename, revision, cache_dir=None, on_progress=None) -> Path of the cached file
        on_progress(DownloadProgress) is called for every received chunk; it may raise (e.g. Cancelled) to stop,
        which keeps the partial file.
"""

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ModelError

RETRIES = 5  # consecutive failed attempts (no byte received) before giving up
RATE_WINDOW = 5.0  # seconds of history behind the speed shown


@dataclass(frozen=True)
class DownloadProgress:
    filename: str
    done: int  # bytes on disk, including those of an earlier, resumed try
    total: int | None  # None when the server does not say
    rate: float  # bytes per second over the last RATE_WINDOW seconds

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed."""
        if not self.total or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate

    def text(self) -> str:
        """e.g. '312MB of 1.70GB, 4.20MB/s, 05:22 left'."""
        from tqdm import tqdm

        size = tqdm.format_sizeof
        parts = [f"{size(self.done)}B" + (f" of {size(self.total)}B" if self.total else "")]
        if self.rate > 0:
            parts.append(f"{size(self.rate)}B/s")
        if self.eta is not None:
            parts.append(f"{tqdm.format_interval(self.eta)} left")
        return ", ".join(parts)


def hub_cache_dir() -> str:
    """The standard Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def download_to_cache(repo_id: str, filename: str, revision: str, cache_dir=None, on_progress=None) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    cache = Path(cache_dir or hub_cache_dir())
    url = hf_hub_url(repo_id, filename, revision=revision)
    metadata = get_hf_file_metadata(url)
    if metadata.etag is None or metadata.commit_hash is None:
        raise ModelError(f"{url} did not answer like the Hugging Face hub (no ETag or commit); check HF_ENDPOINT "
                         "and any proxy.")
    repo_folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    blob = cache / repo_folder / "blobs" / metadata.etag
    if not blob.exists():
        headers = build_hf_headers()
        if urlsplit(metadata.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a signed CDN address: the token stays with the hub
        lock = cache / ".locks" / repo_folder / f"{metadata.etag}.lock"  # the one hf_hub_download takes
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            if not blob.exists():
                partial = blob.with_name(blob.name + ".incomplete")
                _fetch(metadata.location, headers, partial, metadata.size, filename, on_progress)
                os.replace(partial, blob)
    # The blob is in place: this only links it into the snapshot and records the revision's commit.
    return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))


def _fetch(url: str, headers: dict, partial: Path, size: int | None, filename: str, on_progress):
    """Append the rest of the file to `partial`, resuming at its current length."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session, hf_raise_for_status

    failures = 0
    while True:
        done = partial.stat().st_size if partial.exists() else 0
        if size is not None and done == size:
            return
        if size is not None and done > size:  # not a prefix of this file
            partial.unlink()
            done = 0
        meter = _Meter(done)
        received = 0
        try:
            request_headers = dict(headers, **({"Range": f"bytes={done}-"} if done else {}))
            with get_session().stream("GET", url, headers=request_headers,
                                      timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
                hf_raise_for_status(response)
                # 206: the rest of the file; 200: the server ignored the Range and sends it all again.
                with open(partial, "ab" if response.status_code == 206 else "wb") as file:
                    done = file.tell()
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                        done += len(chunk)
                        received += len(chunk)
                        if on_progress is not None:
                            on_progress(DownloadProgress(filename, done, size, meter.rate(done)))
        except httpx2.TransportError as error:  # a dropped or stalled connection: resume where it stopped
            problem = f"{type(error).__name__}: {error}"
        else:
            if size is None or done == size:
                return
            problem = f"the server stopped at {done} of {size} bytes"
        failures = 0 if received else failures + 1
        if failures >= RETRIES:
            raise ModelError(f"Downloading {filename} failed {RETRIES} times in a row ({problem}). What arrived is "
                             "kept: the next try resumes from there.")
        if not received:
            time.sleep(1.0)


class _Meter:
    """Download speed over the last RATE_WINDOW seconds."""

    def __init__(self, done: int):
        self.samples = deque([(time.monotonic(), done)])

    def rate(self, done: int) -> float:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        then, before = self.samples[0]
        return (done - before) / (now - then) if now > then else 0.0


def terminal_progress(stream=None):
    """An on_progress for terminals: one tqdm bar per file, on stderr."""
    import sys

    from tqdm import tqdm

    bars = {}

    def show(status: DownloadProgress):
        bar = bars.get(status.filename)
        if bar is None:
            bar = bars[status.filename] = tqdm(desc=status.filename, total=status.total, initial=status.done,
                                               unit="B", unit_scale=True, unit_divisor=1000,
                                               file=stream or sys.stderr)
        bar.update(status.done - bar.n)
        if status.total is not None and status.done >= status.total:
            bar.close()
    return show
