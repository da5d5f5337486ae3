"""The trainer: loss goes down, checkpoints load through core and generate, resuming is exact, DDP matches one
process, and the settings it derives (learning rate, precision) are right."""

import functools
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from core.model import TripoSR
from core.pipeline import GenerateSettings, generate
from core.weights import load_model
from training import checkpoint, precision
from training.data import SyntheticObjects
from training.presets import preset
from training.train import TrainConfig, learning_rate, parse_args, train

MODEL, DATA, OVERRIDES = preset("tiny")


def config(**changes) -> TrainConfig:
    return TrainConfig(**{**OVERRIDES, "log_every": 1, **changes})


@functools.cache
def fixed_set():
    """Eight samples made once and used in turn (the trainer takes sample i mod 8 at global index i)."""
    objects = SyntheticObjects(DATA, seed=0, batch_size=OVERRIDES["batch_size"])
    return [objects[i] for i in range(8)]


def parameters(folder):
    return {name: p.detach().clone() for name, p in load_model(folder, device="cpu").state_dict().items()}


def test_loss_falls_and_the_checkpoint_loads_in_core_and_generates(tmp_path):
    logs = []
    # The same four samples at every step, so that the loss must fall.
    state = train(config(steps=12, learning_rate=1e-2), DATA, MODEL, tmp_path, dataset=fixed_set()[:4],
                  log=logs.append)
    losses = [entry["loss"] for entry in state["history"]]
    assert len(losses) == 12 and state["step"] == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.ckpt", "optimizer.pt",
                                                        "training_state.json", "vit_config.json"]
    model = load_model(folder, device="cpu")
    assert model.config.backbone.position_codes
    image = fixed_set()[0]["image"].numpy()
    code = model.encode(torch.from_numpy(image)[None])[0]
    density, _ = model.query(code, torch.zeros(1, 3))
    mesh = generate(model, image, GenerateSettings(remove_background=False, resolution=32,
                                                   threshold=float(density[0]) * 0.999))
    assert len(mesh.faces) > 0 and mesh.colors.shape == mesh.vertices.shape


class Crash(Exception):
    pass


def crash_after(step):
    """A log function that stops the run (as a kill would) once the given step is done and saved."""
    def log(line):
        if line.startswith("{") and json.loads(line)["step"] > step:
            raise Crash
    return log


def test_resuming_after_an_interruption_is_bitwise_the_uninterrupted_run(tmp_path):
    run = dict(dataset=fixed_set(), log=lambda _: None)
    train(config(steps=6, save_every=3), DATA, MODEL, tmp_path / "straight", **run)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(Crash):
        train(config(steps=6, save_every=3), DATA, MODEL, interrupted, dataset=fixed_set(), log=crash_after(3))
    assert checkpoint.read_state(interrupted / "checkpoint")["step"] == 3
    state = train(config(steps=6, save_every=3), DATA, MODEL, interrupted, **run)
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    a, b = parameters(tmp_path / "straight" / "checkpoint"), parameters(interrupted / "checkpoint")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_committed_model_folder_alone_continues_the_run(tmp_path):
    run = dict(dataset=fixed_set(), log=lambda _: None)
    train(config(steps=3, save_every=3), DATA, MODEL, tmp_path / "run", **run)
    committed = tmp_path / "models_demo"
    shutil.copytree(tmp_path / "run" / "checkpoint", committed)
    (committed / "optimizer.pt").unlink()
    state = train(config(steps=5), DATA, MODEL, tmp_path / "fresh_cache", init=committed, **run)
    assert state["step"] == 5
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5]


class Recorded(list):
    """The fixed set, noting which sample indices the trainer asks for."""

    def __init__(self, samples):
        super().__init__(samples)
        self.asked = []

    def __getitem__(self, index):
        self.asked.append(index)
        return super().__getitem__(index)


def test_data_echoing_steps_twice_per_batch_and_resumes_inside_a_batch(tmp_path):
    straight = Recorded(fixed_set())
    train(config(steps=6, echo=2), DATA, MODEL, tmp_path / "straight", dataset=straight, log=lambda _: None)
    assert straight.asked == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]  # 3 batches of 4 (index mod 8) for 6 steps
    interrupted = tmp_path / "interrupted"
    with pytest.raises(Crash):
        train(config(steps=6, echo=2, save_every=3), DATA, MODEL, interrupted, dataset=fixed_set(),
              log=crash_after(3))
    resumed = Recorded(fixed_set())
    state = train(config(steps=6, echo=2, save_every=3), DATA, MODEL, interrupted, dataset=resumed,
                  log=lambda _: None)
    assert resumed.asked == [4, 5, 6, 7, 0, 1, 2, 3]  # step 4 is the second use of batch 2, then batch 3
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    a, b = parameters(tmp_path / "straight" / "checkpoint"), parameters(interrupted / "checkpoint")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_max_seconds_stops_with_a_checkpoint_and_the_same_command_continues(tmp_path):
    logs = []
    state = train(config(steps=5, save_every=100, max_seconds=0), DATA, MODEL, tmp_path, dataset=fixed_set(),
                  log=logs.append)
    assert state["step"] == 1 and checkpoint.read_state(tmp_path / "checkpoint")["step"] == 1
    assert logs[-1].startswith("stopped at step 1 after 0 s (--max-seconds)")
    assert parse_args(["--max-seconds", "1.5", "--echo", "2"]).max_seconds == 1.5
    state = train(config(steps=5, save_every=100), DATA, MODEL, tmp_path, dataset=fixed_set(), log=lambda _: None)
    assert state["step"] == 5 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert [(s["from_step"], s["to_step"], s["device"]) for s in state["sessions"]] == [(0, 1, "cpu"), (1, 5, "cpu")]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    train(config(steps=3, save_every=3), DATA, MODEL, out, dataset=fixed_set(), device="cpu", log=lambda _: None)


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    single = train(config(steps=3, save_every=3), DATA, MODEL, tmp_path / "one", dataset=fixed_set(), device="cpu",
                   log=lambda _: None)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), tmp_path / "two"), nprocs=2, start_method="fork")
    double = checkpoint.read_state(tmp_path / "two" / "checkpoint")
    assert double["processes"] == 2 and double["step"] == single["step"] == 3
    a, b = parameters(tmp_path / "one" / "checkpoint"), parameters(tmp_path / "two" / "checkpoint")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5
    torch.manual_seed(OVERRIDES.get("seed", 0))
    initial = TripoSR(MODEL).state_dict()
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 1e-3  # the runs did move the weights


def test_learning_rate_warms_up_then_decays_along_a_cosine():
    c = TrainConfig(steps=110, learning_rate=1.0, warmup_steps=10, min_learning_rate_ratio=0.1)
    assert learning_rate(c, 0) == pytest.approx(0.1)
    assert learning_rate(c, 9) == pytest.approx(1.0)
    assert learning_rate(c, 60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(c, 110) == pytest.approx(0.1)


def test_bf16_autocast_only_where_the_cpu_has_it():
    cpu = torch.device("cpu")
    assert precision.autocast_dtype("auto", cpu, native_bf16=True) == torch.bfloat16
    assert precision.autocast_dtype("auto", cpu, native_bf16=False) is None
    assert precision.autocast_dtype("float32", cpu, native_bf16=True) is None
    assert precision.autocast_dtype("bfloat16", cpu, native_bf16=False) == torch.bfloat16
    assert precision.autocast_dtype("float16", cpu) == torch.float16


def test_gradient_checkpointing_gives_the_same_gradients():
    from training.objective import LossWeights, Objective

    batch = torch.utils.data.default_collate([fixed_set()[i] for i in range(2)])
    batch.pop("label")
    grads = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = TripoSR(MODEL).train()
        model.backbone.gradient_checkpointing = model.image_tokenizer.gradient_checkpointing = enabled
        Objective(model, LossWeights())(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)


def test_the_differentiable_path_computes_what_inference_computes(tiny_model_dir):
    from training.objective import encode, field

    model = load_model(tiny_model_dir, device="cpu")
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    points = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    with torch.enable_grad():
        codes = encode(model, images)
        raw = field(model, codes, points)
    torch.testing.assert_close(codes, model.encode(images), rtol=0, atol=1e-5)
    density, color = model.query(codes[1].detach(), points[1])
    torch.testing.assert_close(torch.exp(raw[1, :, 0] - 1.0), density, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.sigmoid(raw[1, :, 1:]), color, rtol=1e-5, atol=1e-7)


def test_fine_tuning_an_official_layout_checkpoint_with_a_frozen_image_encoder(tiny_model_dir, tmp_path):
    before = parameters(tiny_model_dir)
    state = train(config(steps=2, freeze_image_encoder=True, gradient_checkpointing=True), DATA, MODEL, tmp_path,
                  init=str(tiny_model_dir), dataset=fixed_set(), log=lambda _: None)
    assert state["step"] == 2
    after = parameters(tmp_path / "checkpoint")  # loads through core.load_model: still the official layout
    encoder = [k for k in before if k.startswith("image_tokenizer.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert not torch.equal(before["triplane_tokens"], after["triplane_tokens"])
    assert load_model(tmp_path / "checkpoint").config == load_model(tiny_model_dir).config
