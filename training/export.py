"""Copy a training run's latest checkpoint to a model folder (models/demo by default), evaluate it on held-out
synthetic objects and write its model card.

    python -m training.export                       # ~/.cache/image_to_mesh/training/demo → models/demo
    python -m training.export --run RUN_DIR --to FOLDER --eval 100

The folder holds config.yaml, vit_config.json, model.ckpt (the official layout: core.load_model, the command
line and the extension load it), training_state.json (the step and settings, so `python -m training.train
--init FOLDER` continues the run from it alone), eval.json and MODEL_CARD.md."""

import argparse
import json
import shutil
import time
from pathlib import Path

from core.weights import CHECKPOINT_NAME, CONFIG_NAME, load_model

from . import checkpoint, data, evaluate
from .train import DEFAULT_OUT_ROOT

REPO = Path(__file__).resolve().parent.parent
HISTORY_EVERY = 100  # steps between the loss entries kept in the exported training_state.json


def export(run_dir: Path, to: Path, eval_count: int, resolution: int = 128, log=print) -> dict:
    source = checkpoint.latest(run_dir)
    if source is None:
        raise SystemExit(f"{run_dir} holds no checkpoint yet")
    state = checkpoint.read_state(source)
    to.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, "vit_config.json", CHECKPOINT_NAME):
        if (source / name).is_file():
            shutil.copyfile(source / name, to / name)
    state["history"] = [h for h in state.get("history", []) if h["step"] % HISTORY_EVERY == 0]
    (to / checkpoint.STATE_NAME).write_text(json.dumps(state, indent=2), encoding="utf-8")
    results = None
    if eval_count:
        model = load_model(to, device="cpu")
        config = data.DataConfig(cond_image_size=model.config.cond_image_size)
        started = time.perf_counter()
        results = evaluate.evaluate(model, evaluate.synthetic_items(eval_count, config), resolution, log=log)
        results["seconds"] = round(time.perf_counter() - started, 1)
        results["set"] = f"synthetic held-out, {eval_count} objects"
        (to / "eval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    elif (to / "eval.json").is_file():
        results = json.loads((to / "eval.json").read_text(encoding="utf-8"))
    (to / "MODEL_CARD.md").write_text(model_card(to, state, results), encoding="utf-8")
    return state


def model_card(folder: Path, state: dict, results: dict | None) -> str:
    train, data_config = state["train"], state["data"]
    size_mb = (folder / CHECKPOINT_NAME).stat().st_size / 1e6
    model = load_model(folder, device="cpu")
    parameters = sum(p.numel() for p in model.parameters())
    hours = state["elapsed_seconds"] / 3600
    last = state["history"][-1] if state["history"] else {}
    lines = [
        "# Demo model: simple shapes",
        "",
        "A small model of TripoSR's architecture trained from scratch on procedural objects (spheres, boxes, "
        "cylinders, cones, tori, capsules and compositions of two or three of them, random sizes, rotations and one- "
        "or two-tone colours). It reconstructs such shapes from one picture; it has never seen real objects, so "
        "anything else comes out as a blob of roughly the right outline and colour. Use the official TripoSR "
        "weights for real pictures.",
        "",
        f"- Architecture: `config.yaml` (+ `vit_config.json`): {parameters:,} parameters, {size_mb:.1f} MB, "
        f"input {model.config.cond_image_size}², camera-aligned position codes on (`backbone.position_codes`).",
        f"- Training: {state['step']:,} steps in {hours:.1f} h, AdamW (warm-up {train['warmup_steps']} steps, "
        f"cosine decay to {train['min_learning_rate_ratio']:g} of the peak at the scheduled last step):",
        *[f"  - steps {s['from_step']:,}–{s['to_step']:,}: {s['seconds'] / 3600:.2f} h, {s['device']} "
          f"({s['processes']} process(es)), batch {s['batch_size']}"
          + (f", each batch used for {s['echo']} steps" if s.get("echo", 1) > 1 else "")
          + f", lr {s['learning_rate']:g} scheduled to step {s['steps']:,}"
          + (f": `{s['command']}`" if s["command"] else "")
          for s in state.get("sessions", [])],
        f"- Losses: occupancy (binary cross-entropy around density 25), colour near the surface, and volume renders "
        f"(opacity and colour of {data_config['rays_per_view']} rays × {1 + data_config['random_views']} views, "
        f"{data_config['render_samples']} samples per ray) from the input view and a random one.",
        f"- Data: generated on the fly by `training/data.py` (seed {train['seed']}), rendered at "
        f"{data_config['image_size']}² with TripoSR's input camera and passed through the same `prepare_image` as "
        f"inference (foreground ratio {data_config['foreground_ratio']}); compositions ramp in over the first "
        f"{data_config['curriculum_steps']} steps to {data_config['composition_probability']:.0%} of objects.",
        "- Use: `python -m core picture.png --model models/demo`, or `IMAGE_TO_MESH_MODEL=models/demo`, or the "
        "folder in the extension's Model preference (it is in the official layout: config.yaml, vit_config.json, "
        "model.ckpt).",
        f"- Command: `{state.get('command') or 'python -m training.train --preset demo'}` "
        "(`make train-demo`, which resumes from the last checkpoint, or from this folder's training_state.json "
        "when the checkpoints are gone).",
    ]
    if last:
        lines.append(f"- Losses at step {last['step']}: " + ", ".join(
            f"{k} {last[k]:.4f}" for k in ("loss", "occupancy", "color", "opacity", "render_color") if k in last))
    if results:
        lines += ["", f"## Evaluation ({results['set']}, never seen in training)", "",
                  "Meshes extracted at resolution 128, threshold 25; metrics as defined in `training/evaluate.py` "
                  "(surfaces normalised to centre 0 and longest side 1, no rotation search).", "",
                  evaluate.table(results)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a training run's latest checkpoint with its model card.")
    parser.add_argument("--run", type=Path, default=DEFAULT_OUT_ROOT / "demo", help="the training output folder")
    parser.add_argument("--to", type=Path, default=REPO / "models" / "demo")
    parser.add_argument("--eval", type=int, default=100, help="held-out objects to evaluate (0: keep eval.json)")
    parser.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args(argv)
    state = export(args.run, args.to, args.eval, args.resolution, log=lambda line: print(line, flush=True))
    print(f"exported step {state['step']} to {args.to}")


if __name__ == "__main__":
    main()
