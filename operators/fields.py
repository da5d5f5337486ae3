"""Each generated object's field (its scene code), kept for re-baking: a .npy file in the extension's user folder,
named by the SHA-256 of its contents, which the object keeps as a custom property with the model and settings
that made it. Custom properties are saved in the .blend; the field itself (about 2 MB at the official size)
stays out of it, so files and undo steps stay small and copies of an object share one file. A .blend opened on
another machine finds no field there, and says so. The folder keeps the most recently used fields within
FIELDS_BUDGET_BYTES: storing a new one removes the least recently used beyond it (a re-bake of such an old object
then says its field is gone)."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..preferences import user_folder

FIELD_KEY = "image_to_mesh_field"
MODEL_KEY = "image_to_mesh_model"
SETTINGS_KEY = "image_to_mesh_settings"
FIELDS_BUDGET_BYTES = 1 << 30  # about 500 fields of the official model's size


def field_path(digest: str) -> Path:
    return Path(user_folder("fields")) / f"{digest}.npy"


def keep(obj, scene_code: np.ndarray, model_source: str, settings: dict) -> Path:
    """Store the field (once per content) and tag the object with it."""
    scene_code = np.ascontiguousarray(scene_code, np.float32)
    digest = hashlib.sha256(repr(scene_code.shape).encode() + scene_code.tobytes()).hexdigest()
    path = field_path(digest)
    if path.exists():
        os.utime(path)
    else:
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, scene_code, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        prune(path.parent, FIELDS_BUDGET_BYTES, spare=path)
    obj[FIELD_KEY] = digest
    obj[MODEL_KEY] = model_source
    obj[SETTINGS_KEY] = json.dumps(settings, sort_keys=True)
    return path


def prune(folder: Path, budget_bytes: int, spare: Path) -> list[Path]:
    """Remove the least recently used fields (oldest modification time; loading a field renews it) until the
    folder's fields fit in budget_bytes; `spare` always stays. → the removed paths"""
    fields = []
    for path in Path(folder).glob("*.npy"):
        try:
            info = path.stat()
        except FileNotFoundError:  # removed meanwhile by another Blender
            continue
        fields.append((info.st_mtime_ns, info.st_size, path))
    total = sum(size for _, size, _ in fields)
    removed = []
    for _, size, path in sorted(fields, key=lambda field: field[0]):
        if total <= budget_bytes:
            break
        if path == spare:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def is_generated(obj) -> bool:
    return obj is not None and obj.type == "MESH" and FIELD_KEY in obj


def load(obj, model_source: str) -> np.ndarray:
    """The object's field; InputError when it is not on this machine or another model made it."""
    if not is_generated(obj):
        raise InputError("The active object was not made by Image to Mesh, so it has no field to bake from.")
    made_by = obj.get(MODEL_KEY, "")
    if made_by != model_source:
        raise InputError(f"'{obj.name}' was made with the model {made_by}, but the add-on now uses {model_source}: "
                         "its field only means something to the model that made it. Switch the Model preference "
                         "back, or generate the object again.")
    path = field_path(str(obj[FIELD_KEY]))
    try:
        field = np.load(path, allow_pickle=False)
        os.utime(path)
        return field
    except FileNotFoundError:
        raise InputError(f"The field that '{obj.name}' was made from is not on this computer ({path} is missing): fields "
                         "stay in the add-on's user folder on the machine that generated the object. Generate it "
                         "again here to bake a new texture.") from None
    except (OSError, ValueError) as error:
        raise InputError(f"The stored field of '{obj.name}' ({path}) cannot be read ({error}). Generate the object "
                         "again to bake a new texture.") from None
