"""The Model preference: the official repo by default, the bundled demo model or a folder / other repo by choice,
$IMAGE_TO_MESH_MODEL over all of them, and an error instead of a silent fallback when the choice names nothing."""

import bpy
import numpy as np
import pytest
from tests.blender.support import FIXTURE_DIR, INPUT_PNG, REPO_ROOT, data_names, poll_until, start_job

DEMO_DIR = REPO_ROOT / "models" / "demo"
RESOLUTION = 32


@pytest.fixture
def preferences(ext, monkeypatch):
    """The add-on's preferences with no environment override, restored to the defaults afterwards."""
    monkeypatch.delenv("IMAGE_TO_MESH_MODEL")
    preferences = ext.preferences.get_preferences()
    yield preferences
    preferences.model, preferences.model_source = "OFFICIAL", ""


def test_each_choice_resolves_to_its_model(ext, preferences):
    assert (preferences.model, preferences.model_source) == ("OFFICIAL", "")
    assert ext.preferences.model_source(preferences) == "stabilityai/TripoSR"
    preferences.model = "DEMO"
    assert ext.preferences.model_source(preferences) == str(DEMO_DIR)
    preferences.model, preferences.model_source = "OTHER", "someone/other-model"
    assert ext.preferences.model_source(preferences) == "someone/other-model"
    preferences.model_source = f"  {FIXTURE_DIR}  "
    assert ext.preferences.model_source(preferences) == str(FIXTURE_DIR.resolve())


def test_the_environment_variable_wins_over_the_demo_choice(ext, preferences, monkeypatch):
    preferences.model = "DEMO"
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", "someone/other-model")
    assert ext.preferences.model_source(preferences) == "someone/other-model"


def test_choosing_the_demo_model_generates_with_the_bundled_folder(ext, preferences):
    from core.pipeline import GenerateSettings, generate
    from core.weights import load_model

    preferences.model = "DEMO"
    job = start_job(ext, resolution=RESOLUTION)
    assert job.request.model.source == str(DEMO_DIR)
    poll_until(job, lambda: job.done, timeout=300)
    assert job.error is None, job.error
    obj = job.finish(bpy.context)

    expected = generate(load_model(str(DEMO_DIR), device="cpu", allow_download=False), str(INPUT_PNG),
                        GenerateSettings(resolution=RESOLUTION))
    faces = np.empty(len(obj.data.loops), np.int32)
    obj.data.loops.foreach_get("vertex_index", faces)
    assert len(obj.data.vertices) == len(expected.vertices) > 100
    np.testing.assert_array_equal(faces.reshape(-1, 3), expected.faces)


def test_other_without_a_folder_or_repo_is_an_error_not_a_fallback(preferences):
    preferences.model = "OTHER"
    before = data_names()
    with pytest.raises(RuntimeError, match="'Local folder or other repository' but names none"):
        bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=RESOLUTION)
    assert data_names() == before
    assert "names none" in bpy.context.window_manager.image_to_mesh_job.error
