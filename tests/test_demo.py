"""`make demo`: scripts/demo.py, run as a user runs it, writes a .blend, a Cycles render and a .glb that open and hold
the generated mesh; without weights and without network it ends with one clear paragraph, no traceback."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "scripts" / "demo.py"


def demo_env(tmp_path: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "IMAGE_TO_MESH_MODEL"}
    # A scratch Blender profile and Hugging Face cache: never the user's own copies of the weights.
    env.update(BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), HF_HUB_CACHE=str(tmp_path / "huggingface"),
               **extra)
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("demo")
    out_dir = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--model", str(tiny_model_dir), "--image", str(REPO_ROOT / "examples" / "robot.png"),
         "--out-dir", str(out_dir), "--resolution", "32", "--render-size", "120", "--samples", "4"],
        env=demo_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out_dir, completed.stdout


def test_demo_prints_its_outputs_and_stage_times(demo_run):
    out_dir, stdout = demo_run
    for name in ("robot.blend", "robot.png", "robot.glb"):
        assert str(out_dir / name) in stdout
    for stage in ("Generate the mesh", "Render with Cycles", "Export .glb", "Total"):
        assert any(line.startswith(stage) and line.rstrip().endswith(" s") for line in stdout.splitlines()), stage


REOPEN_AND_RENDER = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
meshes = [o for o in bpy.data.objects if o.type == 'MESH']
report = {
    'meshes': [{'name': o.name, 'vertices': len(o.data.vertices), 'faces': len(o.data.polygons),
                'attributes': [a.name for a in o.data.color_attributes]} for o in meshes],
    'camera': scene.camera.name if scene.camera else None,
    'lights': [o.name for o in scene.objects if o.type == 'LIGHT'],
    'world': scene.world.name if scene.world else None,
    'engine': scene.render.engine,
}
scene.render.filepath = sys.argv[2]
bpy.ops.render.render(write_still=True)  # what F12 does, written to a file
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def reopened(demo_run, tmp_path_factory):
    """The saved .blend opened in a fresh Blender and rendered as it was saved."""
    out_dir, _ = demo_run
    tmp_path = tmp_path_factory.mktemp("reopened")
    render_path = tmp_path / "f12.png"
    completed = subprocess.run(
        [sys.executable, "-c", REOPEN_AND_RENDER, str(out_dir / "robot.blend"), str(render_path)],
        env=demo_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), render_path


def shows_an_object(png: Path, size: int):
    """Asserts the picture is size×size and shows something other than the background, framed inside it."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (size, size, 3)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    differs = np.abs(pixels - background).max(axis=2) > 12  # beyond sampling noise
    assert differs.mean() > 0.05, "the render must show the object, not only the background"
    assert differs[[0, -1]].mean() < 0.02, "the object is framed inside the picture"


def test_demo_blend_opens_with_the_generated_mesh(reopened):
    report, _ = reopened
    (mesh,) = report["meshes"]
    assert mesh["name"].startswith("robot")
    assert mesh["vertices"] > 100 and mesh["faces"] > 100
    assert mesh["attributes"], "the mesh keeps its vertex colours"


def test_demo_blend_renders_with_f12(reopened):
    report, render_path = reopened
    assert report["camera"] == "Demo camera"
    assert report["lights"] == ["Demo sun"]
    assert report["world"] is not None
    assert report["engine"] == "CYCLES"
    shows_an_object(render_path, 120)


def test_demo_render_shows_the_object(demo_run):
    out_dir, _ = demo_run
    shows_an_object(out_dir / "robot.png", 120)


def test_demo_glb_is_valid_gltf_with_a_coloured_mesh(demo_run):
    out_dir, _ = demo_run
    data = (out_dir / "robot.glb").read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    document = json.loads(data[20:20 + chunk_length])
    (mesh,) = document["meshes"]
    attributes = mesh["primitives"][0]["attributes"]
    assert "POSITION" in attributes and "COLOR_0" in attributes
    assert document["accessors"][attributes["POSITION"]]["count"] > 100
    binary_length, binary_type = struct.unpack_from("<I4s", data, 20 + chunk_length)
    assert binary_type == b"BIN\x00" and binary_length >= document["buffers"][0]["byteLength"]


def test_demo_without_weights_or_network_explains_in_one_paragraph(tmp_path):
    out_dir = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--offline", "--out-dir", str(out_dir)],
        env=demo_env(tmp_path, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output
    paragraphs = [p for p in completed.stderr.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) == 1, completed.stderr
    message = " ".join(paragraphs[0].split())
    assert "stabilityai/TripoSR" in message and "not in the local cache" in message
    assert "MODEL=/path/to/folder make demo" in message and "IMAGE_TO_MESH_MODEL" in message
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_make_demo_passes_model_and_image_to_the_script():
    completed = subprocess.run(
        ["make", "-n", "demo", "MODEL=some/folder", "IMAGE=examples/teapot.png"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stderr
    (line,) = [line for line in completed.stdout.splitlines() if "scripts/demo.py" in line]
    assert '--model "some/folder"' in line and '--image "examples/teapot.png"' in line
