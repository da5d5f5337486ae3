"""The demo behind `make demo`: the extension, headless in Blender's bpy module, turns an example image into a
coloured mesh, then saves out/<name>.blend (with a camera, a light and a world, so F12 renders it), renders
out/<name>.png with Cycles and exports out/<name>.glb.

    python scripts/demo.py [--image examples/mushroom.png] [--model FOLDER] [--resolution 256]

Without --model (or IMAGE_TO_MESH_MODEL) it uses the official stabilityai/TripoSR weights, downloaded once
(about 1.7 GB) into the Hugging Face cache that the add-on and the command line share. --offline never downloads.
"""

import argparse
import importlib
import math
import os
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "examples" / "mushroom.png"
DEFAULT_BLENDER_USER = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "image_to_mesh" / "blender"
MODEL_ENV_VAR = "IMAGE_TO_MESH_MODEL"


class DemoError(Exception):
    """Ends the demo with one paragraph for the user and a non-zero exit code."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--model", help="a local model folder (config.yaml + model.ckpt) or a Hugging Face repo id")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "out")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes grid resolution")
    parser.add_argument("--render-size", type=int, default=480)
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples")
    parser.add_argument("--offline", action="store_true", help="never download: use a local or cached model only")
    args = parser.parse_args(argv)

    timings = Timings()
    try:
        paths = run(args, timings)
    except DemoError as error:
        print("\n" + textwrap.fill(str(error), width=100), file=sys.stderr)
        return 1
    print()
    timings.print()
    print()
    for kind, path in paths.items():
        print(f"{kind:>6}: {path}")
    return 0


def run(args, timings) -> dict[str, Path]:
    image = args.image.expanduser().resolve()
    if not image.is_file():
        raise DemoError(f"The image {image} does not exist. Give an image file with IMAGE=path/to/image.png make demo.")
    if args.model:
        model = Path(args.model).expanduser()
        os.environ[MODEL_ENV_VAR] = str(model.resolve()) if model.exists() else args.model
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(DEFAULT_BLENDER_USER))
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # retries are summed up in our own message
    Path(os.environ["BLENDER_USER_RESOURCES"]).mkdir(parents=True, exist_ok=True)

    with timings.stage("Start Blender and the extension"):
        import bpy  # noqa: I001 — bpy first: it puts Blender's script modules (addon_utils) on sys.path
        import addon_utils

        sys.path.insert(0, str(REPO_ROOT / "scripts"))
        from dev_extension import enable_from_checkout

        bpy.ops.wm.read_homefile(use_empty=True)
        module_name = enable_from_checkout(REPO_ROOT)
        addon_utils.enable("io_scene_gltf2", default_set=True)
        bpy.context.preferences.system.use_online_access = not args.offline

    source = os.environ.get(MODEL_ENV_VAR) or "stabilityai/TripoSR"
    with timings.stage("Get the model weights"):
        fetch_weights(source, module_name, allow_download=bpy.app.online_access)

    name = image.stem
    with timings.stage("Generate the mesh (load model, encode, extract)"):
        try:
            result = bpy.ops.image_to_mesh.generate("EXEC_DEFAULT", filepath=str(image), resolution=args.resolution)
        except RuntimeError as error:  # the operator reported an error: its message is written for users
            raise DemoError(f"Generating a mesh from {image.name} failed. {operator_message(error)}") from None
        obj = bpy.context.active_object
        if "FINISHED" not in result or obj is None or obj.type != "MESH":
            raise DemoError(f"Generating a mesh from {image.name} did not add a mesh object ({result}).")

    out_dir = args.out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"blend": out_dir / f"{name}.blend", "render": out_dir / f"{name}.png", "glTF": out_dir / f"{name}.glb"}

    with timings.stage("Add a camera, a light and a world; save .blend"):
        set_up_scene(bpy, obj, args.render_size, args.samples)
        bpy.ops.wm.save_as_mainfile(filepath=str(paths["blend"]), copy=True)
    with timings.stage(f"Render with Cycles ({args.render_size}px, {args.samples} samples)"):
        bpy.context.scene.render.filepath = str(paths["render"])
        bpy.ops.render.render(write_still=True)
    with timings.stage("Export .glb"):
        bpy.ops.object.select_all(action="DESELECT")
        obj.select_set(True)
        bpy.ops.export_scene.gltf(
            filepath=str(paths["glTF"]), export_format="GLB", use_selection=True, export_vertex_color="ACTIVE"
        )
    mesh = obj.data
    print(f"\n{obj.name}: {len(mesh.vertices):,} vertices, {len(mesh.polygons):,} faces, from {image}")
    return paths


def fetch_weights(source: str, module_name: str, allow_download: bool):
    """Official weights are fetched (or found in the cache) here, so a missing model ends the demo with one
    clear paragraph before any work starts. A local folder is checked by the extension itself."""
    if Path(source).expanduser().is_dir():
        return
    core_weights = importlib.import_module(f"{module_name}.core.weights")
    errors = importlib.import_module(f"{module_name}.core.errors")
    preferences = importlib.import_module(f"{module_name}.preferences")
    download = importlib.import_module(f"{module_name}.core.download")
    if allow_download:
        print(f"Getting {source} (about 1.7 GB on first use; cached in {download.hub_cache_dir()}) ...", flush=True)
    try:
        core_weights.find_model_files(source, **preferences.model_caches(), allow_download=allow_download,
                                      on_download=download.terminal_progress())
    except errors.ModelError as error:
        raise DemoError(
            f"make demo could not get the model weights. {error} For the demo, give the folder with "
            f"MODEL=/path/to/folder make demo (it sets {MODEL_ENV_VAR})."
        ) from None


def operator_message(error: RuntimeError) -> str:
    """bpy turns an operator's error report into RuntimeError('Error: <message>\\n')."""
    return str(error).strip().removeprefix("Error:").strip()


def set_up_scene(bpy, obj, size: int, samples: int):
    """A camera framing the object's bounding sphere from the front (a little right and above), a sun, a dark world
    and Cycles on the CPU: the saved .blend renders with F12 as the demo's picture shows."""
    from mathutils import Vector

    scene = bpy.context.scene
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    center = sum(corners, Vector()) / len(corners)
    radius = max((corner - center).length for corner in corners) or 1.0

    camera_data = bpy.data.cameras.new("Demo camera")
    camera = bpy.data.objects.new("Demo camera", camera_data)
    scene.collection.objects.link(camera)
    direction = Vector((0.55, -1.0, 0.45)).normalized()  # Front view looks from -Y
    distance = 1.15 * radius / math.sin(camera_data.angle / 2)
    camera.location = center + direction * distance
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera

    sun_data = bpy.data.lights.new("Demo sun", type="SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("Demo sun", sun_data)
    sun.rotation_euler = (math.radians(45), 0.0, math.radians(30))
    scene.collection.objects.link(sun)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Demo world")
    if scene.world.node_tree is None:  # Blender < 5.0 makes worlds without nodes
        scene.world.use_nodes = True
    scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"


class Timings:
    def __init__(self):
        self.stages: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str):
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        yield
        self.stages.append((name, time.perf_counter() - start))

    def print(self):
        width = max(len(name) for name, _ in self.stages)
        for name, seconds in self.stages:
            print(f"{name:<{width}}  {seconds:7.1f} s")
        print(f"{'Total':<{width}}  {sum(s for _, s in self.stages):7.1f} s")


if __name__ == "__main__":
    sys.exit(main())
