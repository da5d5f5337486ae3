"""Output names, shares and launcher environments of core.batch (no model needed)."""

from pathlib import Path

import pytest

from core.batch import Shard, manifest_path, plan, shard_from_environment, share
from core.errors import InputError


def test_plan_gives_every_distinct_input_its_own_name(tmp_path):
    inputs = ["in/robot.png", "in/robot.jpg", "other/robot.png", "in/robot.png", "in/Teapot.png", "in/teapot.PNG",
              "in/robot_png.tif"]
    items = plan([tmp_path / name for name in inputs], tmp_path / "out", ".ply")
    assert [item.output.name for item in items] == [
        "robot_png.ply", "robot_jpg.ply", "robot_png_2.ply", "Teapot_png.ply", "teapot_PNG_2.ply", "robot_png_3.ply"]
    assert [item.image for item in items] == [tmp_path / name for name in inputs[:3] + inputs[4:]]  # repeat dropped


def test_shares_of_a_plan_cover_it_once():
    items = list(range(10))
    shares = [share(items, Shard(index, 3)) for index in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


@pytest.mark.parametrize("env, expected", [
    ({}, Shard()),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Shard(3, 4, 1, "RANK/WORLD_SIZE")),
    ({"RANK": "0", "WORLD_SIZE": "2"}, Shard(0, 2, None, "RANK/WORLD_SIZE")),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "10"},
     Shard(2, 5, None, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, Shard(3, 4, None, "SLURM array")),
])
def test_shard_from_launcher_environment(env, expected):
    assert shard_from_environment(env) == expected


@pytest.mark.parametrize("env", [{"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"},
                                 {"SLURM_ARRAY_TASK_ID": "3"}])
def test_a_broken_launcher_environment_is_refused(env):
    with pytest.raises(InputError, match="launcher|outside the run"):
        shard_from_environment(env)


def test_manifest_names_of_single_and_sharded_runs():
    out = Path("/out")
    assert manifest_path(out, Shard()) == out / "manifest.jsonl"
    assert manifest_path(out, Shard(3, 12)) == out / "manifest.03-of-12.jsonl"
