"""Redo from the kept scene code: a first Generate at 256³ against a redo at 192³ (and at another threshold) that
re-uses the image's scene code, as the worker does; and each shipped preset's resolution: time and mesh size.

    python benchmarks/redo.py [--model FOLDER] [--image examples/mushroom.png]

Without --model it builds a full-size TripoSR (official dimensions, random weights from a fixed seed). Random
weights make the image's own field noise, so, as in bench.py, the meshes come from a smooth synthetic field whose
density is scaled to a trained model's range; encoding is the image's real encoding (the same work at any weight
values). Every extraction goes through core.pipeline.generate(scene_code=...), the worker's redo path.
"""

import argparse
import contextlib
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import calibrated, calibration_for, random_model  # noqa: E402
from core.pipeline import GenerateSettings, generate  # noqa: E402
from core.preprocess import prepare_image  # noqa: E402
from core.weights import load_model  # noqa: E402
from shared import smooth_scene_code, timed  # noqa: E402

PRESET_RESOLUTIONS = {"Draft": 128, "Game asset": 192, "Hero": 384}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder (config.yaml + model.ckpt); default: random full-size")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "mushroom.png")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu", allow_download=False) if args.model else random_model()

    pixels, prepare_s = timed(lambda: prepare_image(args.image))
    code, encode_s = timed(lambda: model.encode(torch.from_numpy(pixels)[None])[0])
    field = code if args.model else smooth_scene_code(code)
    scaling = contextlib.nullcontext() if args.model else calibrated(model, calibration_for(model, field))

    def extract(resolution, threshold=25.0):
        settings = GenerateSettings(resolution=resolution, threshold=threshold)
        return timed(lambda: generate(model, None, settings, scene_code=field))

    with scaling:
        runs = {(resolution, 25.0): extract(resolution) for resolution in (128, 192, 256, 384)}
        runs[(256, 20.0)] = extract(256, 20.0)

    first = prepare_s + encode_s + runs[(256, 25.0)][1]
    print(f"prepare {prepare_s:.2f} s, encode {encode_s:.2f} s (threads: {torch.get_num_threads()})\n")
    print("| job | time | faces | of the first run's time |\n| --- | --- | --- | --- |")
    print(f"| first Generate at 256³ (prepare + encode + extract) | {first:.2f} s | "
          f"{len(runs[(256, 25.0)][0].faces):,} | 100 % |")
    for (resolution, threshold), label in (((192, 25.0), "redo at 192³"), ((256, 20.0), "redo at threshold 20")):
        mesh, seconds = runs[(resolution, threshold)]
        print(f"| {label}, scene code kept | {seconds:.2f} s | {len(mesh.faces):,} | {seconds / first:.1%} |")
    print("\n| preset | resolution | first Generate | redo | faces | vertices |\n| --- | --- | --- | --- | --- | --- |")
    for name, resolution in PRESET_RESOLUTIONS.items():
        mesh, seconds = runs[(resolution, 25.0)]
        print(f"| {name} | {resolution}³ | {prepare_s + encode_s + seconds:.1f} s | {seconds:.1f} s | "
              f"{len(mesh.faces):,} | {len(mesh.vertices):,} |")


if __name__ == "__main__":
    main()
