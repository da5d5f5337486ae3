"""Training checkpoints: a folder in the official layout (config.yaml [+ vit_config.json] + model.ckpt, so
core.load_model, the command line and the extension load it unchanged) plus training_state.json (step, settings,
time) and, when resuming is to be exact, optimizer.pt. Written atomically: a crash never leaves a half checkpoint."""

import json
import os
import shutil
from pathlib import Path

import torch

from core.config import save_config
from core.weights import CHECKPOINT_NAME, load_model, official_state_dict

STATE_NAME = "training_state.json"
OPTIMIZER_NAME = "optimizer.pt"
CHECKPOINT_DIR = "checkpoint"


def save(out_dir, model, state: dict, optimizer=None) -> Path:
    """Write out_dir/checkpoint atomically (built beside it, then swapped in). Returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / CHECKPOINT_DIR
    building, old = final.with_name(f"{CHECKPOINT_DIR}.tmp"), final.with_name(f"{CHECKPOINT_DIR}.old")
    shutil.rmtree(building, ignore_errors=True)
    write_model(building, model, state)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), building / OPTIMIZER_NAME)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    building.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def write_model(folder, model, state: dict | None = None) -> None:
    """The model in the official layout (+ training_state.json) into folder, created if needed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(model.config, folder)
    weights = {name: tensor.detach().to("cpu", torch.float32).contiguous()
               for name, tensor in official_state_dict(model).items()}
    torch.save(weights, folder / CHECKPOINT_NAME)
    if state is not None:
        (folder / STATE_NAME).write_text(json.dumps(state, indent=2), encoding="utf-8")
    for path in folder.iterdir():  # make the files durable before the folder is swapped in
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def latest(out_dir) -> Path | None:
    """The newest complete checkpoint folder in out_dir (a crash during the swap leaves only the .old one)."""
    out_dir = Path(out_dir)
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        if (out_dir / name / STATE_NAME).is_file():
            return out_dir / name
    return None


def read_state(folder) -> dict | None:
    path = Path(folder) / STATE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_trainable(folder, device="cpu"):
    """A model from an official-layout folder, with its own copy of the weights (not memory-mapped from the file),
    in training mode with gradients on."""
    model = load_model(folder, device=device)
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
    return model.train().requires_grad_(True)


def load_optimizer(folder, optimizer) -> bool:
    path = Path(folder) / OPTIMIZER_NAME
    if not path.is_file():
        return False
    optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return True
