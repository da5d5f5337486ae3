"""Find, verify and load TripoSR weights: a local folder or an HF hub repo (config.yaml + model.ckpt)."""

import hashlib
import json
import os
import pickle
import re
import sys
import warnings
from pathlib import Path

import torch
import yaml

from .config import load_config
from .download import download_to_cache
from .errors import Cancelled, ModelError
from .model import TripoSR

DEFAULT_SOURCE = "stabilityai/TripoSR"
MODEL_ENV_VAR = "IMAGE_TO_MESH_MODEL"
CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.ckpt"
PINNED_REVISIONS = {"stabilityai/TripoSR": "c1cf7716aed5aa6c1c5e174657791ef0e1327bde"}
KNOWN_SHA256 = {
    ("stabilityai/TripoSR", "c1cf7716aed5aa6c1c5e174657791ef0e1327bde", CHECKPOINT_NAME):
        "429e2c6b22a0923967459de24d67f05962b235f79cde6b032aa7ed2ffcd970ee",
}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def default_source() -> str:
    """The model a user gets without choosing: $IMAGE_TO_MESH_MODEL if set, else the official HF repo."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_SOURCE


def load_model(source=DEFAULT_SOURCE, *, revision=None, device="auto", cache_dir=None, search_dirs=(),
               allow_download=True, on_download=None) -> TripoSR:
    """Build TripoSR from a local folder holding config.yaml + model.ckpt, or from an HF hub repo id (found in
    cache_dir or one of search_dirs, else downloaded into cache_dir; None = the standard HF cache). Returns the
    model in eval mode on `device` ("auto": CUDA, MPS, CPU). on_download(core.download.DownloadProgress) follows
    a download and may raise Cancelled."""
    torch_device = resolve_device(device)
    config_path, checkpoint_path = find_model_files(
        source, revision=revision, cache_dir=cache_dir, search_dirs=search_dirs, allow_download=allow_download,
        on_download=on_download,
    )
    config = load_config(config_path)
    with torch.device("meta"):
        model = TripoSR(config)
    state = convert_checkpoint(read_checkpoint(checkpoint_path), model, checkpoint_path)
    model.load_state_dict(state, strict=True, assign=True)
    try:
        model.to(torch_device)
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError is one
        raise ModelError(f"Could not move the model to {torch_device}: {error}. Try device 'cpu'.") from error
    return model.eval().requires_grad_(False)


def resolve_device(device="auto") -> torch.device:
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        torch_device = torch.device(name)
    except RuntimeError:
        raise ModelError(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'.") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available()
        and (torch_device.index is None or torch_device.index < torch.cuda.device_count()),
        "mps": torch.backends.mps.is_available(),
    }.get(torch_device.type, False)
    if not available:
        raise ModelError(
            f"The device {device!r} is not available with this PyTorch ({torch.__version__}). "
            "Use device 'auto' to pick the best available one, or 'cpu'."
        )
    return torch_device


def find_model_files(source, *, revision=None, cache_dir=None, search_dirs=(), allow_download=True,
                     on_download=None) -> tuple[Path, Path]:
    """(config.yaml, model.ckpt) paths for a local folder or an HF repo id (see load_model)."""
    source = str(source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        paths = folder / CONFIG_NAME, folder / CHECKPOINT_NAME
        for path in paths:
            if not path.is_file():
                raise ModelError(
                    f"The model folder {folder} has no {path.name}. A TripoSR model folder holds {CONFIG_NAME} and "
                    f"{CHECKPOINT_NAME} (as in the stabilityai/TripoSR repository on huggingface.co)."
                )
        return paths
    if not _REPO_ID.fullmatch(source) or source.startswith((".", "~")):
        raise ModelError(
            f"The model folder {source} does not exist. Give a folder holding {CONFIG_NAME} and {CHECKPOINT_NAME}, "
            f"or a Hugging Face repo id such as {DEFAULT_SOURCE}."
        )
    revision = revision or PINNED_REVISIONS.get(source, "main")
    caches = [cache_dir, *search_dirs]

    def hub_file(filename):
        return _hub_file(source, filename, revision, caches, allow_download, on_download)

    config_path = hub_file(CONFIG_NAME)
    vit_config = _vit_config_file_name(config_path)
    if vit_config is not None:  # a ViT config .json beside config.yaml (the official file names a built-in ViT)
        hub_file(vit_config)
    return config_path, hub_file(CHECKPOINT_NAME)


def _vit_config_file_name(config_path: Path) -> str | None:
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        name = raw["image_tokenizer"]["pretrained_model_name_or_path"]
    except Exception:  # load_config reports what is wrong with the file
        return None
    return name if isinstance(name, str) and name.endswith(".json") and "/" not in name else None


def _hub_file(repo_id: str, filename: str, revision: str, caches: list, allow_download: bool, on_download) -> Path:
    """Find one file in the caches (the first one, caches[0], receives downloads) or download it, and check its
    integrity; a corrupt cached copy is deleted and fetched again once."""
    for attempt in range(2):
        path = _hf_download(repo_id, filename, revision, caches, allow_download, on_download)
        problem = _integrity_problem(path, KNOWN_SHA256.get((repo_id, revision, filename)))
        if problem is None:
            return path
        _delete_cached(path)
        if not allow_download:
            raise ModelError(
                f"The cached {filename} of {repo_id} was damaged ({problem}) and has been deleted. Allow downloads "
                "to fetch it again, or use a local model folder."
            )
    raise ModelError(
        f"{filename} of {repo_id} (revision {revision}) failed its integrity check twice ({problem}). "
        "The download may be intercepted or the file on the hub changed; use a local model folder instead."
    )


def _hf_download(repo_id, filename, revision, caches, allow_download, on_download) -> Path:
    import httpx2
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub import errors as hub_errors

    # The caches first, read without the hub client's HTTP layer: hf_hub_download contacts the hub even for a
    # cached file (to resolve the revision, and to fetch its user-agent registry even with local_files_only).
    for cache_dir in caches:
        try:
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        except (OSError, ValueError) as error:
            raise ModelError(f"Could not read the cached {filename} of {repo_id}: {error}") from None
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    if not allow_download:
        raise ModelError(_offline_message(repo_id, allow_download, f"{filename} is not cached"))
    try:
        return download_to_cache(repo_id, filename, revision, caches[0], on_progress=on_download)
    except (Cancelled, ModelError):
        raise
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled, httpx2.ConnectError) as error:
        raise ModelError(_offline_message(repo_id, allow_download, error)) from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelError(f"The Hugging Face repository {repo_id} does not exist or is private.") from None
    except hub_errors.RevisionNotFoundError:
        raise ModelError(f"The Hugging Face repository {repo_id} has no revision {revision}.") from None
    except hub_errors.EntryNotFoundError:
        raise ModelError(f"The Hugging Face repository {repo_id} has no file {filename}.") from None
    except hub_errors.HfHubHTTPError as error:
        raise ModelError(f"Downloading {filename} from {repo_id} failed: {error}") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"Could not get {filename} of {repo_id}: {error}") from None
    except Exception as error:  # the hub client's HTTP library raises its own types (a dropped connection, ...)
        raise ModelError(f"Downloading {filename} from {repo_id} failed ({type(error).__name__}: {error}). Check "
                         "the network connection and try again, or use a local model folder.") from None


def _offline_message(repo_id, allow_download, error) -> str:
    why = (
        "downloads are not allowed (Blender's online access is off, or the download option was disabled)"
        if not allow_download
        else "huggingface.co could not be reached (no network, a proxy or firewall, or the hub is down)"
    )
    return (
        f"The model {repo_id} is not in the local cache and {why}. Either allow online access so it can be "
        f"downloaded once (about 1.7 GB), or download {CONFIG_NAME} and {CHECKPOINT_NAME} from "
        f"https://huggingface.co/{repo_id} on another machine, put both in one folder, and point to that folder: "
        f"the add-on's 'Model' preference, the {MODEL_ENV_VAR} environment variable, or "
        f"`python -m core --model PATH` on the command line."
    )


def _integrity_problem(path: Path, expected_sha256: str | None) -> str | None:
    """Check a hub file against the known hash, or against its content-addressed blob name in the HF cache
    (sha256 for large LFS files, git's blob sha1 for small ones). A file that passed once is not read again
    while its size, modification time and inode stay the same (hashing 1.7 GB takes seconds)."""
    blob = Path(os.path.realpath(path))
    if expected_sha256 is None and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        expected_sha256 = blob.name
    if expected_sha256 is not None:
        kind, expected, digest = "sha256", expected_sha256, hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", blob.name):
        kind, expected, digest = "git blob sha1", blob.name, hashlib.sha1(f"blob {blob.stat().st_size}\0".encode())
    else:
        return None
    if _verdict(blob, expected) == _file_identity(blob):
        return None
    actual = _file_digest(blob, digest)
    if actual != expected:
        return f"{kind} {actual}, expected {expected}"
    _remember_verdict(blob, expected)
    return None


def _verdict_path(blob: Path) -> Path:
    return blob.with_name(blob.name + ".verified.json")


def _file_identity(blob: Path) -> dict:
    stat = blob.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _verdict(blob: Path, digest: str) -> dict | None:
    """The identity the file had when it last matched `digest`, if that was recorded."""
    try:
        record = json.loads(_verdict_path(blob).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("identity") if isinstance(record, dict) and record.get("digest") == digest else None


def _remember_verdict(blob: Path, digest: str):
    record, temporary = _verdict_path(blob), blob.with_name(f"{blob.name}.verified.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"digest": digest, "identity": _file_identity(blob)}), encoding="utf-8")
        os.replace(temporary, record)
    except OSError:  # a read-only cache: the file is hashed again next time
        temporary.unlink(missing_ok=True)


def _file_digest(path: Path, digest) -> str:
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _delete_cached(path: Path):
    blob = Path(os.path.realpath(path))
    for item in {path, blob, _verdict_path(blob)}:
        try:
            item.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            raise ModelError(f"The cached file {item} is damaged and could not be deleted: {error}.") from None


def read_checkpoint(path) -> dict:
    """torch.load the state dict with weights_only (a pickle that would run code is refused), memory-mapped
    except on Windows: there a mapped file cannot be replaced or deleted while the worker runs, which would lock
    the shared Hugging Face cache for every other program; the weights are then read into private memory once
    (the same size, but not backed by the file)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=sys.platform != "win32")
            except RuntimeError as error:
                if "mmap can only be used" not in str(error):
                    raise
                # Legacy (non-zip) torch.save format: loadable, but not memory-mappable.
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"The checkpoint {path} does not exist.") from None
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise ModelError(
                f"Refused to load {path}: it is not a plain tensor checkpoint — its pickle asks to run code or "
                "build other objects, which could be malicious. Nothing from it was executed. Use the official "
                "TripoSR model.ckpt."
            ) from None
        raise ModelError(_damaged_message(path, error)) from None
    except Exception as error:  # torch raises many types for damaged files (RuntimeError, EOFError, KeyError...)
        raise ModelError(_damaged_message(path, error)) from None
    if not isinstance(checkpoint, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()
    ):
        raise ModelError(f"{path} is not a TripoSR checkpoint: it does not hold a state dict of named tensors.")
    return checkpoint


def _damaged_message(path, error) -> str:
    return (
        f"The checkpoint {path} is damaged or not a PyTorch checkpoint (truncated download?): "
        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}. "
        "Delete it and download it again."
    )


def checkpoint_key_map(model: TripoSR):
    """Yield (our parameter name, official checkpoint name) for every official key; None for the official keys
    we do not use."""
    config = model.config
    vit, ours = "image_tokenizer.model.", "image_tokenizer."
    yield ours + "cls_token", vit + "embeddings.cls_token"
    yield ours + "position_embeddings", vit + "embeddings.position_embeddings"
    for p in ("weight", "bias"):
        yield ours + f"patch_embed.{p}", vit + f"embeddings.patch_embeddings.projection.{p}"
        for n in range(config.vit.num_hidden_layers):
            src, dst = f"{vit}encoder.layer.{n}.", f"{ours}blocks.{n}."
            if p == "weight" or config.vit.qkv_bias:
                for name in ("query", "key", "value"):
                    yield dst + f"attn.{name}.{p}", src + f"attention.attention.{name}.{p}"
            yield dst + f"attn.out.{p}", src + f"attention.output.dense.{p}"
            yield dst + f"norm1.{p}", src + f"layernorm_before.{p}"
            yield dst + f"norm2.{p}", src + f"layernorm_after.{p}"
            yield dst + f"fc1.{p}", src + f"intermediate.dense.{p}"
            yield dst + f"fc2.{p}", src + f"output.dense.{p}"
        yield ours + f"norm.{p}", vit + f"layernorm.{p}"
        yield None, vit + f"pooler.dense.{p}"  # ViTModel's pooler: in the checkpoint, output never used
    yield "triplane_tokens", "tokenizer.embeddings"
    for p in ("weight", "bias"):
        for name in ("norm", "proj_in", "proj_out"):
            yield f"backbone.{name}.{p}", f"backbone.{name}.{p}"
        for n in range(config.backbone.num_layers):
            src, dst = f"backbone.transformer_blocks.{n}.", f"backbone.blocks.{n}."
            for attn in ("attn1", "attn2"):
                if p == "weight":
                    for name in ("to_q", "to_k", "to_v"):
                        yield dst + f"{attn}.{name}.weight", src + f"{attn}.{name}.weight"
                yield dst + f"{attn}.to_out.{p}", src + f"{attn}.to_out.0.{p}"
            for name in ("norm1", "norm2", "norm3"):
                yield dst + f"{name}.{p}", src + f"{name}.{p}"
            yield dst + f"ff_in.{p}", src + f"ff.net.0.proj.{p}"
            yield dst + f"ff_out.{p}", src + f"ff.net.2.{p}"
        yield f"upsampler.{p}", f"post_processor.upsample.{p}"
        for index in range(len(model.decoder.layers)):
            yield f"decoder.layers.{index}.{p}", f"decoder.layers.{2 * index}.{p}"  # odd indices: SiLU modules


def convert_checkpoint(checkpoint: dict, model: TripoSR, path) -> dict:
    """Official state dict → ours, strictly: every official key must be present with its exact shape, and no other."""
    ours = dict(model.state_dict())
    hidden = model.config.vit.hidden_size
    plan = list(checkpoint_key_map(model))
    expected = {}
    for name, source in plan:
        if name is None:
            expected[source] = torch.Size((hidden, hidden) if source.endswith("weight") else (hidden,))
        else:
            expected[source] = ours.pop(name).shape
    assert not ours, f"parameters without a checkpoint key: {sorted(ours)}"  # a bug here, not in the file

    missing = sorted(k for k in expected if k not in checkpoint)
    unexpected = sorted(k for k in checkpoint if k not in expected)
    misshapen = sorted(
        f"{k} {tuple(checkpoint[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in checkpoint and checkpoint[k].shape != expected[k]
    )
    problems = [
        f"{label}: {_listing(items)}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshapen))
        if items
    ]
    if problems:
        raise ModelError(
            f"The checkpoint {path} does not match its config.yaml — " + "; ".join(problems)
            + ". Use the model.ckpt and config.yaml that belong together."
        )
    bad_dtype = sorted(k for k in expected if not checkpoint[k].is_floating_point())
    if bad_dtype:
        raise ModelError(f"The checkpoint {path} holds non-float tensors: {_listing(bad_dtype)}.")
    # float32 tensors are used as they are: memory-mapped from the file, never copied.
    return {name: checkpoint[source].float() for name, source in plan if name is not None}


def _listing(items, limit=8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def official_state_dict(model: TripoSR) -> dict:
    """Our parameters under the official checkpoint's names (the inverse of convert_checkpoint), e.g. to save a
    checkpoint the reference code can load. Shares the model's tensors; the unused ViT pooler is zeros."""
    ours = model.state_dict()
    hidden = model.config.vit.hidden_size
    return {
        source: ours[name] if name else torch.zeros((hidden, hidden) if source.endswith("weight") else (hidden,))
        for name, source in checkpoint_key_map(model)
    }
