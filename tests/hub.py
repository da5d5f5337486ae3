"""What tests of Hugging Face hub files share."""

import hashlib
import os
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
