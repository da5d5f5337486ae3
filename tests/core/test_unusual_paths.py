"""Paths with spaces and non-ASCII characters (as on many users' machines: "C:\\Users\\José\\Mes images") for the
image, a local model folder and the model cache, end to end through the worker process."""

import shutil

import numpy as np
import pytest

from core.pipeline import GenerateSettings
from core.worker import ModelSpec, WorkerClient
from tests.hub import add_to_hub_cache, tiny_hub_files

ODD = "Ordner mit Leerzeichen – Müller 画像 é"
REPO_ID = "tester/tiny-triposr"
REVISION = "0123456789abcdef0123456789abcdef01234567"
EXPECTED_VERTICES = 11627  # the tiny fixture's mesh of input.png at resolution 32


@pytest.fixture(scope="module")
def client():
    client = WorkerClient()
    yield client
    client.close()


@pytest.fixture
def odd_image(tmp_path, tiny_model_dir):
    folder = tmp_path / ODD / "Bilder"
    folder.mkdir(parents=True)
    return shutil.copy(tiny_model_dir / "input.png", folder / "mein Bild – ß.png")


def test_image_and_model_folder_with_spaces_and_non_ascii(client, tmp_path, tiny_model_dir, odd_image):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / ODD / "Modèle TripoSR")
    spec = ModelSpec(source=str(model_dir), device="cpu", allow_download=False)
    mesh = client.run(odd_image, GenerateSettings(resolution=32), spec)
    assert len(mesh.vertices) == EXPECTED_VERTICES
    assert f"loaded {model_dir} on cpu" in client.log_tail()


def test_model_cache_folder_with_spaces_and_non_ascii(client, tmp_path, tiny_model_dir, odd_image, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the worker inherits it: the cache alone must serve the model
    cache = tmp_path / ODD / "Cache für Modelle"
    add_to_hub_cache(cache, REPO_ID, REVISION, tiny_hub_files(tiny_model_dir))
    spec = ModelSpec(source=REPO_ID, revision=REVISION, device="cpu", cache_dir=str(cache), allow_download=False)
    mesh = client.run(odd_image, GenerateSettings(resolution=32), spec)
    assert len(mesh.vertices) == EXPECTED_VERTICES


def test_saving_the_mesh_under_an_odd_path(tmp_path):
    from core.mesh import Mesh

    mesh = Mesh(vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]]),
                colors=np.full((3, 3), 0.5, np.float32))
    for suffix in (".ply", ".obj"):
        target = tmp_path / ODD / f"Ergebnis – ü{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        mesh.save(target)
        np.testing.assert_array_equal(Mesh.load(target).faces, mesh.faces)
