"""Exporting a run: the official-layout folder loads through core, and the model card tells every session."""

from core.weights import load_model
from training.export import export
from training.train import TrainConfig, train

from .test_train import DATA, MODEL, OVERRIDES, fixed_set


def test_the_model_card_lists_each_training_session_and_the_folder_loads(tmp_path):
    run = tmp_path / "run"
    quiet = dict(dataset=fixed_set(), log=lambda _: None)
    train(TrainConfig(**{**OVERRIDES, "steps": 3, "max_seconds": 0}), DATA, MODEL, run, **quiet)
    train(TrainConfig(**{**OVERRIDES, "steps": 3, "echo": 2}), DATA, MODEL, run, **quiet)
    state = export(run, tmp_path / "model", eval_count=0, log=lambda _: None)
    assert state["step"] == 3
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    sessions = [line for line in card.splitlines() if line.startswith("  - steps ")]
    assert len(sessions) == 2
    assert sessions[0].startswith("  - steps 0–1: ") and "batch 4, lr 0.003 scheduled to step 3" in sessions[0]
    assert sessions[1].startswith("  - steps 1–3: ") and "each batch used for 2 steps" in sessions[1]
    assert "each batch used" not in sessions[0]
    assert load_model(tmp_path / "model", device="cpu").config == MODEL
