"""`python -m core` end to end on the tiny fixture model, in a subprocess from the repo root."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.mesh import Mesh

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_cli_writes_a_mesh_that_reads_back(tiny_model_dir, tmp_path, fmt):
    result = run_cli(
        tiny_model_dir / "input.png", "-o", tmp_path / "out", "--model", tiny_model_dir,
        "--resolution", "32", "--format", fmt, "--device", "cpu", "--keep-floaters", "--texture-size", "0",
    )
    assert result.returncode == 0, result.stderr
    mesh = Mesh.load(tmp_path / "out" / f"input.{fmt}")
    assert (len(mesh.vertices), len(mesh.faces)) == (11627, 21992)  # the raw surface
    assert 0.0 <= mesh.colors.min() and mesh.colors.max() <= 1.0
    for stage in ("Loading model", "Preparing image", "Encoding image", "Extracting mesh", "Saving mesh"):
        assert stage in result.stderr


def test_cli_model_from_environment_variable(tiny_model_dir, tmp_path):
    result = run_cli(
        tiny_model_dir / "preprocessed.png", "-o", tmp_path, "--resolution", "32", "--no-remove-bg",
        env={"IMAGE_TO_MESH_MODEL": str(tiny_model_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert len(Mesh.load(tmp_path / "preprocessed.ply").faces) > 0


def test_cli_reports_a_bad_model_without_traceback(tiny_model_dir, tmp_path):
    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tmp_path / "no-such-model")
    assert result.returncode == 1
    assert "error: The model folder" in result.stderr and "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_offline_without_cache_explains(tiny_model_dir, tmp_path):
    result = run_cli(
        tiny_model_dir / "input.png", "-o", tmp_path, "--offline", env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not in the local cache" in result.stderr and "--model PATH" in result.stderr


def test_cli_continues_after_a_bad_image_and_fails_at_the_end(tiny_model_dir, tmp_path):
    missing = tmp_path / "missing.png"
    result = run_cli(
        missing, tiny_model_dir / "input.png", "-o", tmp_path / "out", "--model", tiny_model_dir, "--resolution", "32"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: Image file not found: {missing}" in result.stderr
    assert (tmp_path / "out" / "input.ply").is_file() and not (tmp_path / "out" / "missing.ply").exists()


def test_cli_rejects_bad_settings(tiny_model_dir, tmp_path):
    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "3")
    assert result.returncode == 1 and "Resolution must be" in result.stderr and "Traceback" not in result.stderr


def _six_images(folder: Path, source: Path) -> list[Path]:
    """Six inputs whose stems collide: two robots, a robot in another folder, two teapots differing in case."""
    from PIL import Image

    picture = Image.open(source).convert("RGB")
    paths = [folder / "a" / "robot.png", folder / "a" / "robot.jpg", folder / "b" / "robot.png",
             folder / "a" / "teapot.png", folder / "a" / "Teapot.png", folder / "a" / "mushroom.webp"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    return paths


def test_two_processes_under_torchrun_share_the_images_and_skip_existing_does_nothing(tiny_model_dir, tmp_path):
    images = _six_images(tmp_path / "in", tiny_model_dir / "input.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "core", *map(str, images), "-o", str(out), "--model", str(tiny_model_dir),
               "--resolution", "32", "--device", "cpu", "--no-remove-bg"]

    def launch(skip=()):  # as torchrun --nproc_per_node=2 starts them: same arguments, RANK / WORLD_SIZE differ
        processes = [subprocess.Popen(command + list(skip), cwd=REPO, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                           "WORLD_SIZE": "2", "TQDM_MININTERVAL": "0"}) for rank in (0, 1)]
        return [(process.wait(timeout=300), process.stderr.read()) for process in processes]

    for status, stderr in launch():
        assert status == 0, stderr
        assert "Loading model" in stderr
    meshes = {path.name for path in out.glob("*.ply")}
    assert meshes == {"robot_png.ply", "robot_jpg.ply", "robot_png_2.ply", "teapot_png.ply", "Teapot_png_2.ply",
                      "mushroom.ply"}
    manifests = sorted(out.glob("manifest*.jsonl"))
    assert [path.name for path in manifests] == ["manifest.0-of-2.jsonl", "manifest.1-of-2.jsonl"]
    records = [[json.loads(line) for line in path.read_text().splitlines()] for path in manifests]
    assert [len(lines) for lines in records] == [3, 3]
    done = [record for lines in records for record in lines]
    assert all(record["status"] == "done" and record["error"] is None for record in done)
    assert sorted(record["image"] for record in done) == sorted(map(str, images))  # each image once
    assert sorted(Path(record["outputs"][0]).name for record in done) == sorted(meshes)
    assert set(done[0]["times"]) == {"Preparing image", "Encoding image", "Extracting mesh", "Finishing mesh",
                                     "Saving mesh"}  # floaters are removed by default
    modified = {path: path.stat().st_mtime_ns for path in out.glob("*.ply")}

    for status, stderr in launch(["--skip-existing"]):
        assert status == 0, stderr
        assert "Loading model" not in stderr and "0 to make, 3 already made" in stderr
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.ply")} == modified
    again = [json.loads(line) for path in manifests for line in path.read_text().splitlines()[3:]]
    assert sorted(record["status"] for record in again) == ["skipped"] * 6


def test_cli_shows_progress_during_a_stage(tiny_model_dir, tmp_path):
    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "64",
                     env={"TQDM_MININTERVAL": "0"})
    assert result.returncode == 0, result.stderr
    percents = {int(value) for value in re.findall(r"Extracting mesh:\s+(\d+)%", result.stderr)}
    assert any(0 < percent < 100 for percent in percents), percents  # shown while the stage runs, not only at its ends


def test_cli_checks_every_image_before_loading_the_model(tmp_path):
    """A missing file fails at once: the model (here a hub repo on an unreachable address) is never asked for."""
    result = run_cli(tmp_path / "missing.png", "-o", tmp_path / "out", "--model", "nobody/nothing",
                     env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert "Image file not found" in result.stderr and "Loading model" not in result.stderr
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert record["status"] == "failed" and record["outputs"] == []


def test_cli_keeps_the_hub_clients_retry_noise_out(tiny_model_dir, tmp_path):
    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", "nobody/nothing",
                     env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Retrying" not in result.stderr and "thrown while requesting" not in result.stderr
    assert result.stderr.count("error:") == 1


def test_cli_textured_obj_and_glb_within_the_face_limit(tiny_model_dir, tmp_path):
    """Defaults: floaters removed, a 1024² texture for obj and glb (here 64² to stay quick); each mesh's files
    are named after it."""
    import trimesh

    result = run_cli(
        tiny_model_dir / "input.png", tiny_model_dir / "preprocessed.png", "-o", tmp_path, "--model", tiny_model_dir,
        "--resolution", "32", "--format", "obj", "--device", "cpu", "--face-limit", "3000", "--texture-size", "64",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "input.mtl", "input.obj", "input_texture.png", "manifest.jsonl", "preprocessed.mtl", "preprocessed.obj",
        "preprocessed_texture.png"]
    loaded = trimesh.load(tmp_path / "input.obj", force="mesh", process=False)
    assert 2900 <= len(loaded.faces) <= 3000 and loaded.visual.uv is not None
    assert "Baking texture" in result.stderr and "Finishing mesh" in result.stderr

    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "32",
                     "--format", "ply", "--texture-size", "64")
    assert result.returncode == 1 and "cannot carry a texture" in result.stderr


def test_cli_textured_output_defaults_to_the_face_limit_and_refuses_none(tiny_model_dir, tmp_path):
    import trimesh

    common = (tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "40",
              "--format", "glb", "--texture-size", "64", "--device", "cpu")
    result = run_cli(*common, "--face-limit", "0")
    assert result.returncode == 1 and "A texture needs a face limit from 4 to 100,000 faces" in result.stderr
    assert not (tmp_path / "input.glb").exists()
    raw = run_cli(*common[:-6], "--format", "ply", "--device", "cpu")  # untextured: no limit by default
    assert raw.returncode == 0, raw.stderr
    assert len(Mesh.load(tmp_path / "input.ply").faces) > 20_000
    result = run_cli(*common)
    assert result.returncode == 0, result.stderr
    assert 19_000 < len(trimesh.load(tmp_path / "input.glb", force="mesh", process=False).faces) <= 20_000
