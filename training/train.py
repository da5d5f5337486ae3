"""Train or fine-tune a TripoSR-architecture model; resumes from its output folder.

    python -m training.train --preset demo --out ~/.cache/image_to_mesh/training/demo
    torchrun --nproc-per-node 2 -m training.train ...        (DistributedDataParallel: gloo on CPU, NCCL on GPU)
    python -m training.train --init /path/to/TripoSR --data-folder pairs/ --freeze-image-encoder \
        --gradient-checkpointing --out runs/finetune                     (fine-tuning from an official checkpoint)

Every --save-every steps the output folder's checkpoint/ is replaced atomically; running the same command again
continues from it. --init gives the starting weights when the output folder has no checkpoint yet: a model
folder in the official layout; if it holds a training_state.json (as models/demo does) its step and settings are
taken up, so a run can continue from a committed model alone.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.model import TripoSR
from core.weights import resolve_device

from . import checkpoint, precision
from .data import DataConfig, SyntheticObjects
from .objective import LossWeights, Objective
from .presets import preset

DEFAULT_OUT_ROOT = Path(os.environ.get("IMAGE_TO_MESH_TRAINING_DIR", Path.home() / ".cache/image_to_mesh/training"))


@dataclass
class TrainConfig:
    steps: int = 30000
    batch_size: int = 8  # global: split across processes
    learning_rate: float = 1e-3
    min_learning_rate_ratio: float = 0.05  # the cosine decays to this fraction
    warmup_steps: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    precision: str = "auto"  # auto | float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    freeze_image_encoder: bool = False
    workers: int = 0  # data-loading processes per training process
    echo: int = 1  # optimizer steps per batch made: > 1 when making data, not the model, limits the speed
    max_seconds: float | None = None  # stop, checkpoint written, after training this long; rerunning continues
    data_folder: str | None = None  # (image, mesh) pairs instead of synthetic objects; see training/folders.py
    mesh_folder: str | None = None  # meshes rendered from many views; see training/folders.py
    losses: LossWeights = field(default_factory=LossWeights)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_learning_rate_ratio × learning_rate at config.steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    floor = config.min_learning_rate_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_dataset(config: TrainConfig, data: DataConfig):
    if config.data_folder or config.mesh_folder:
        from .folders import ImageMeshPairs, MeshViews

        if config.data_folder:
            return ImageMeshPairs(config.data_folder, data, seed=config.seed)
        return MeshViews(config.mesh_folder, data, seed=config.seed)
    return SyntheticObjects(data, seed=config.seed, batch_size=config.batch_size)


class StepSampler(torch.utils.data.Sampler):
    """Batches of global sample indices for this process: batch s, rank r takes s·B + r·B/W … + B/W − 1.
    With data echoing, batch s serves optimizer steps s·echo … s·echo + echo − 1."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int, world: int, length: int):
        self.start, self.steps, self.batch, self.rank, self.world, self.length = \
            start_step, steps, batch_size, rank, world, length
        self.local = batch_size // world

    def __iter__(self):
        for step in range(self.start, self.steps):
            first = step * self.batch + self.rank * self.local
            yield [(first + i) % self.length for i in range(self.local)]

    def __len__(self):
        return max(0, self.steps - self.start)


def _worker_init(_):
    torch.set_num_threads(1)


def out_of_time(config: TrainConfig, started: float, distributed: bool, device) -> bool:
    """Whether config.max_seconds have passed since `started` (this call's first step); all processes agree."""
    if config.max_seconds is None:
        return False
    late = time.perf_counter() - started >= config.max_seconds
    if distributed:
        flag = torch.tensor([float(late)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        late = bool(flag.item())
    return late


def build_model(model_config, config: TrainConfig, out_dir: Path, init: str | None, device):
    """(model, state dict of the run so far or None, folder the optimizer state can come from or None)."""
    found = checkpoint.latest(out_dir)
    if found is not None:
        return checkpoint.load_trainable(found, device), checkpoint.read_state(found), found
    if init:
        return checkpoint.load_trainable(init, device), checkpoint.read_state(init), None
    torch.manual_seed(config.seed)
    return TripoSR(model_config).to(device).train(), None, None


def train(config: TrainConfig, data: DataConfig, model_config, out_dir, init=None, device="auto", command=None,
          log=print, dataset=None) -> dict:
    """Run (or continue) training until config.steps; returns the final state (also in out_dir/checkpoint).
    dataset: any map-style dataset of samples (training/data.py make_sample) instead of the configured one."""
    out_dir = Path(out_dir)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    torch_device = resolve_device(device)
    if distributed:
        torch.distributed.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if torch_device.type == "cuda":
            torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(torch_device)
    else:
        rank, world = 0, 1
    if config.batch_size % world:
        raise SystemExit(f"--batch-size {config.batch_size} must be a multiple of the {world} processes")

    model, previous, resume_folder = build_model(model_config, config, out_dir, init, torch_device)
    # The pictures follow the model (a checkpoint given by --init may differ from the preset's model).
    size = model.config.cond_image_size
    data = dataclasses.replace(data, cond_image_size=size, image_size=max(data.image_size, size))
    step = previous["step"] if previous else 0
    elapsed = previous.get("elapsed_seconds", 0.0) if previous else 0.0
    history = previous.get("history", []) if previous else []
    earlier_sessions = previous.get("sessions", []) if previous else []
    session = {"from_step": step, "device": str(torch_device), "processes": world, "batch_size": config.batch_size,
               "echo": config.echo, "learning_rate": config.learning_rate, "steps": config.steps, "command": command}
    session_elapsed_from = elapsed
    model.image_tokenizer.gradient_checkpointing = config.gradient_checkpointing
    model.backbone.gradient_checkpointing = config.gradient_checkpointing
    if config.freeze_image_encoder:
        model.image_tokenizer.requires_grad_(False)

    objective = Objective(model, config.losses).to(torch_device)
    wrapped = objective
    if distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[torch_device.index] if torch_device.type == "cuda" else None)
    parameters = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.learning_rate, betas=(0.9, 0.95))
    if resume_folder is not None:
        checkpoint.load_optimizer(resume_folder, optimizer)
    autocast_dtype = precision.autocast_dtype(config.precision, torch_device)
    scaler = torch.amp.GradScaler(torch_device.type, enabled=autocast_dtype == torch.float16)
    if rank == 0:
        log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; step {step}/{config.steps}; "
            f"{world} process(es) on {torch_device}; autocast {autocast_dtype}; out {out_dir}")

    dataset = dataset if dataset is not None else make_dataset(config, data)
    batches = StepSampler(step // config.echo, -(-config.steps // config.echo), config.batch_size, rank, world,
                          len(dataset))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers,
        worker_init_fn=_worker_init if config.workers else None, persistent_workers=config.workers > 0,
        pin_memory=torch_device.type == "cuda")

    def state():
        this_session = {**session, "to_step": step, "seconds": round(elapsed - session_elapsed_from, 1)}
        return {"step": step, "elapsed_seconds": round(elapsed, 1), "command": command,
                "sessions": earlier_sessions + [this_session],
                "train": dataclasses.asdict(config), "data": dataclasses.asdict(data), "history": history[-2000:],
                "processes": world, "device": str(torch_device)}

    sums, count, started = {}, 0, time.perf_counter()
    session_started, stopping = started, False
    for batch in loader:
        batch = {k: v.to(torch_device, non_blocking=True) for k, v in batch.items() if k != "label"}
        for _ in range(min(config.echo - step % config.echo, config.steps - step)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            with torch.autocast(torch_device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                parts = wrapped(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            stopping = out_of_time(config, session_started, distributed, torch_device)
            if step % config.log_every == 0 or step == config.steps or stopping:
                now = time.perf_counter()
                elapsed += now - started
                means = {name: round(total / count, 5) for name, total in sums.items()}
                entry = {"step": step, "seconds": round(elapsed, 1), "lr": round(learning_rate(config, step - 1), 7),
                         **means, "seconds_per_step": round((now - started) / count, 3)}
                history.append(entry)
                if rank == 0:
                    log(json.dumps(entry))
                sums, count, started = {}, 0, now
            if rank == 0 and (step % config.save_every == 0 or step == config.steps or stopping):
                checkpoint.save(out_dir, model, state(), optimizer)
            if stopping:
                break
        if stopping:
            if rank == 0:
                log(f"stopped at step {step} after {config.max_seconds:g} s (--max-seconds); "
                    "the same command continues the run")
            break
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return state()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", help="model and data settings: demo or tiny")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT_ROOT}/<preset>; the "
                        "IMAGE_TO_MESH_TRAINING_DIR environment variable moves the root)")
    parser.add_argument("--init", help="starting weights when --out has no checkpoint: an official-layout folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "losses":
            continue
        name = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = next((t for t in (int, float) if f.type in (t, t | None)), str)
            parser.add_argument(name, type=kind, default=None, help=f"(default {getattr(defaults, f.name)})")
    for f in dataclasses.fields(LossWeights):
        parser.add_argument(f"--{f.name.replace('_', '-')}-weight", type=float, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model_config, data, overrides = preset(args.preset)
    values = dict(overrides)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if f.name != "losses" and value is not None:
            values[f.name] = value
    weights = LossWeights(**{f.name: getattr(args, f"{f.name}_weight") for f in dataclasses.fields(LossWeights)
                             if getattr(args, f"{f.name}_weight") is not None})
    config = TrainConfig(**values, losses=weights)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or DEFAULT_OUT_ROOT / args.preset
    command = " ".join(["python -m training.train"] + (sys.argv[1:] if argv is None else list(argv)))
    train(config, data, model_config, out, init=args.init, device=args.device, command=command,
          log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
