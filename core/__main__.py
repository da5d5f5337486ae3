"""Command line: python -m core IMAGE... -o OUT_DIR — one coloured mesh per image."""

import argparse
import sys
import time
from pathlib import Path

from .asset import DEFAULT_TEXTURE_SIZE, FLOATER_AREA_FRACTION
from .errors import Cancelled, ImageToMeshError, InputError
from .pipeline import GenerateSettings


def main(argv=None) -> int:
    from .weights import MODEL_ENV_VAR, default_source

    parser = argparse.ArgumentParser(
        prog="python -m core", description="Turn pictures into coloured 3D meshes with TripoSR."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="input image files")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the meshes")
    parser.add_argument(
        "--model",
        default=default_source(),
        help=f"local folder with config.yaml + model.ckpt, or a Hugging Face repo id (default: ${MODEL_ENV_VAR} "
        "or stabilityai/TripoSR)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes grid size (default 256)")
    parser.add_argument("--threshold", type=float, default=25.0, help="density iso level (default 25)")
    parser.add_argument("--format", choices=("ply", "obj", "glb"), default="ply",
                        help="ply (vertex colours), obj (+ .mtl and .png when textured) or glb (default ply)")
    _add_asset_arguments(parser)
    parser.add_argument("--no-remove-bg", action="store_true", help="use the image as it is: no background removal")
    parser.add_argument("--foreground-ratio", type=float, default=0.85, help="object size in the frame (0.85)")
    parser.add_argument("--offline", action="store_true", help="never download; use the cache or a local folder")
    args = parser.parse_args(argv)

    settings = GenerateSettings(
        remove_background=not args.no_remove_bg,
        foreground_ratio=args.foreground_ratio,
        resolution=args.resolution,
        threshold=args.threshold,
        **_asset_options(args),
    )
    try:
        settings.validate()
        if settings.texture_size and args.format == "ply":
            raise InputError("A .ply file cannot carry a texture: use --format glb or obj, or --texture-size 0.")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        model = _timed("Loading model", lambda: _load(args))
    except ImageToMeshError as error:
        return _fail(error)
    except OSError as error:
        return _fail(f"Cannot create the output folder {args.output_dir}: {error.strerror}.")

    failures = 0
    for image in args.images:
        try:
            _generate_one(model, Path(image), settings, args)
        except Cancelled:
            raise
        except ImageToMeshError as error:
            failures += 1
            _fail(f"{image}: {error}")
    return 1 if failures else 0


def _add_asset_arguments(parser):
    parser.add_argument("--texture-size", type=int, default=None,
                        help="texture baked from the colour field, in pixels a side; 0 = vertex colours only "
                        f"(default {DEFAULT_TEXTURE_SIZE} for glb and obj, 0 for ply)")
    parser.add_argument("--face-limit", type=int, default=0, help="at most this many faces (default 0: no limit)")
    parser.add_argument("--keep-floaters", action="store_true",
                        help=f"keep separate pieces smaller than {FLOATER_AREA_FRACTION * 100:g}%% of the largest one's area")
    parser.add_argument("--watertight", action="store_true", help="close every hole: a closed 2-manifold mesh")


def _asset_options(args) -> dict:
    texture_size = args.texture_size
    if texture_size is None:
        texture_size = 0 if args.format == "ply" else DEFAULT_TEXTURE_SIZE
    return dict(texture_size=texture_size, face_limit=args.face_limit, remove_floaters=not args.keep_floaters,
                watertight=args.watertight)


def _load(args):
    from .download import terminal_progress
    from .weights import load_model

    return load_model(args.model, device=args.device, allow_download=not args.offline,
                      on_download=terminal_progress())


def _generate_one(model, image: Path, settings: GenerateSettings, args):
    from .pipeline import generate

    print(f"{image}:", file=sys.stderr)
    progress = _Progress()
    started = time.perf_counter()
    mesh = generate(model, image, settings, progress=progress)
    progress.finish()
    target = args.output_dir / f"{image.stem}.{args.format}"
    _timed("Saving mesh", lambda: mesh.save(target))
    print(
        f"  {target}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces "
        f"({time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )


class _Progress:
    """Prints each stage with its duration; long stages show a percentage that updates in place."""

    def __init__(self):
        self.stage, self.started, self.shown = None, 0.0, -1

    def __call__(self, stage: str, fraction: float):
        if stage != self.stage:
            self.finish()
            self.stage, self.started, self.shown = stage, time.perf_counter(), -1
        percent = int(fraction * 100)
        if percent != self.shown and sys.stderr.isatty():
            print(f"\r  {stage} {percent:3d}%", end="", file=sys.stderr, flush=True)
        self.shown = percent

    def finish(self):
        if self.stage is not None:
            print(f"\r  {self.stage}: {time.perf_counter() - self.started:.2f} s", file=sys.stderr, flush=True)
            self.stage = None


def _timed(label: str, work):
    started = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return result


def _fail(error) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Cancelled):
        print("\ncancelled", file=sys.stderr)
        sys.exit(130)
