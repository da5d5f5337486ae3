"""Keeping the field: a job that changes only extraction-side settings re-uses the image's scene code."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.pipeline import PREPROCESS_FIELDS, GenerateSettings, generate
from core.scene_cache import SceneCodeCache, scene_key
from core.weights import load_model
from core.worker import ModelSpec, Progress, Result, WorkerClient
from core.worker_process import REUSE_STAGE


@pytest.fixture(scope="module")
def spec(tiny_model_dir):
    return ModelSpec(source=str(tiny_model_dir), device="cpu", allow_download=False)


@pytest.fixture
def client():
    client = WorkerClient()
    yield client
    client.close()


def job(client, image, settings, spec):
    """(the stages the worker reported, its Result)."""
    client.submit(image, settings, spec)
    stages = []
    while True:
        for event in client.poll():
            if isinstance(event, Progress):
                stages.append(event.stage)
            else:
                assert isinstance(event, Result), event
                return list(dict.fromkeys(stages)), event


def test_redo_with_another_resolution_and_threshold_skips_encoding(client, spec, tiny_model_dir):
    image = tiny_model_dir / "input.png"
    stages, first = job(client, image, GenerateSettings(resolution=32), spec)
    assert stages == ["Loading model", "Preparing image", "Encoding image", "Extracting mesh"]
    assert not first.reused_encoding

    redo = GenerateSettings(resolution=40, threshold=20.0)
    stages, again = job(client, image, redo, spec)
    assert stages == [REUSE_STAGE, "Extracting mesh"] and again.reused_encoding
    expected = generate(load_model(str(tiny_model_dir), device="cpu", allow_download=False), image, redo)
    np.testing.assert_array_equal(again.mesh.faces, expected.faces)  # the same mesh as a full job's
    np.testing.assert_array_equal(again.mesh.vertices, expected.vertices)


def test_changed_image_or_foreground_ratio_encodes_again(client, spec, tiny_model_dir):
    pixels = np.asarray(Image.open(tiny_model_dir / "input.png").convert("RGBA"), dtype=np.float32) / 255.0
    assert not job(client, pixels, GenerateSettings(resolution=32), spec)[1].reused_encoding
    assert job(client, pixels.copy(), GenerateSettings(resolution=40), spec)[1].reused_encoding  # same pixels

    stages, result = job(client, pixels, GenerateSettings(resolution=32, foreground_ratio=0.7), spec)
    assert "Encoding image" in stages and not result.reused_encoding
    changed = pixels.copy()
    changed[100, 100, 0] = 1.0 - changed[100, 100, 0]
    stages, result = job(client, changed, GenerateSettings(resolution=32), spec)
    assert "Encoding image" in stages and not result.reused_encoding
    stages, result = job(client, pixels, GenerateSettings(resolution=32, remove_background=False), spec)
    assert "Encoding image" in stages and not result.reused_encoding


def test_the_key_holds_pixels_model_and_preprocessing_only(tiny_model_dir):
    pixels = np.zeros((4, 4, 4), np.float32)
    settings = {"remove_background": True, "foreground_ratio": 0.85, "resolution": 256, "threshold": 25.0}
    model = {"source": "stabilityai/TripoSR", "device": "cpu"}
    key = scene_key(pixels, settings, model, PREPROCESS_FIELDS)
    extraction_only = dict(settings, resolution=192, threshold=10.0, texture_size=1024, face_limit=5000)
    assert scene_key(pixels, extraction_only, model, PREPROCESS_FIELDS) == key
    assert scene_key(pixels, dict(settings, foreground_ratio=0.8), model, PREPROCESS_FIELDS) != key
    assert scene_key(pixels, settings, dict(model, device="cuda"), PREPROCESS_FIELDS) != key
    assert scene_key(pixels.astype(np.float64), settings, model, PREPROCESS_FIELDS) != key
    assert scene_key(pixels.reshape(8, 2, 4), settings, model, PREPROCESS_FIELDS) != key
    path = tiny_model_dir / "input.png"
    assert scene_key(path, settings, model, PREPROCESS_FIELDS) == scene_key(str(path), settings, model,
                                                                           PREPROCESS_FIELDS)


def test_the_cache_keeps_the_most_recently_used_codes_within_its_bounds():
    cache = SceneCodeCache(max_codes=2, max_bytes=10 * 4 * 100)
    for name in "abc":
        cache.put(name, torch.full((100,), float(ord(name))))
    assert list(cache.codes) == ["b", "c"]
    assert cache.get("b")[0].item() == ord("b")  # b is now the most recent
    cache.put("d", torch.zeros(100))
    assert list(cache.codes) == ["b", "d"] and cache.get("c") is None
    cache.put("big", torch.zeros(1000))  # over the byte bound alone: kept, the others go
    assert list(cache.codes) == ["big"] and cache.nbytes == 4000
