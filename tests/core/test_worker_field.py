"""The worker hands back the field (scene code) with each mesh, and paints a kept field's colours at any points."""

import time

import numpy as np
import pytest

from core.errors import InputError
from core.pipeline import GenerateSettings, generate
from core.weights import load_model
from core.worker import Failure, ModelSpec, Result, WorkerClient


@pytest.fixture(scope="module")
def client():
    client = WorkerClient()
    yield client
    client.close()


def test_a_kept_field_gives_the_mesh_its_own_colours_again(client, tiny_model_dir):
    spec = ModelSpec(source=str(tiny_model_dir), device="cpu", allow_download=False)
    settings = GenerateSettings(resolution=32, remove_floaters=False)
    client.submit(tiny_model_dir / "input.png", settings, spec)
    result = None
    while result is None:
        result = next((event for event in client.poll() if isinstance(event, (Result, Failure))), None)
        time.sleep(0.05)
    assert isinstance(result, Result), result
    model = load_model(str(tiny_model_dir), device="cpu", allow_download=False)
    codes = []
    generate(model, tiny_model_dir / "input.png", settings, on_encoded=codes.append)
    np.testing.assert_allclose(result.scene_code, codes[0].numpy(), atol=1e-6)
    assert result.scene_code.shape == (3, model.config.upsampler.out_channels, 16, 16)

    colors = client.colors(result.scene_code, result.mesh.vertices, spec)
    np.testing.assert_allclose(colors, result.mesh.colors, atol=1e-6)

    with pytest.raises(InputError, match="another model"):
        client.colors(result.scene_code[:, :5], result.mesh.vertices[:10], spec)
