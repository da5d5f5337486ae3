"""`python -m core` end to end on the tiny fixture model, in a subprocess from the repo root."""

import os
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


def test_cli_reports_a_bad_model_without_traceback(tmp_path):
    result = run_cli(tmp_path / "x.png", "-o", tmp_path, "--model", tmp_path / "no-such-model")
    assert result.returncode == 1
    assert "error: The model folder" in result.stderr and "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_offline_without_cache_explains(tmp_path):
    result = run_cli(
        tmp_path / "x.png", "-o", tmp_path, "--offline", env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not in the local cache" in result.stderr and "--model PATH" in result.stderr


def test_cli_continues_after_a_bad_image_and_fails_at_the_end(tiny_model_dir, tmp_path):
    missing = tmp_path / "missing.png"
    result = run_cli(
        missing, tiny_model_dir / "input.png", "-o", tmp_path / "out", "--model", tiny_model_dir, "--resolution", "32"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {missing}" in result.stderr
    assert (tmp_path / "out" / "input.ply").is_file() and not (tmp_path / "out" / "missing.ply").exists()


def test_cli_rejects_bad_settings(tiny_model_dir, tmp_path):
    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "3")
    assert result.returncode == 1 and "Resolution must be" in result.stderr and "Traceback" not in result.stderr


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
        "input.mtl", "input.obj", "input_texture.png", "preprocessed.mtl", "preprocessed.obj",
        "preprocessed_texture.png"]
    loaded = trimesh.load(tmp_path / "input.obj", force="mesh", process=False)
    assert 2900 <= len(loaded.faces) <= 3000 and loaded.visual.uv is not None
    assert "Baking texture" in result.stderr and "Finishing mesh" in result.stderr

    result = run_cli(tiny_model_dir / "input.png", "-o", tmp_path, "--model", tiny_model_dir, "--resolution", "32",
                     "--format", "ply", "--texture-size", "64")
    assert result.returncode == 1 and "cannot carry a texture" in result.stderr
