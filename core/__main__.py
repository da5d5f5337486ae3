"""Command line: python -m core IMAGE... -o OUT_DIR — one coloured mesh per image, a manifest line per image.

Under a launcher (torchrun, a SLURM job array; see core.batch) each process takes its own share of the images."""

import argparse
import sys
import time
from pathlib import Path

from .asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE, FLOATER_AREA_FRACTION, TEXTURE_FACE_LIMIT_MAX
from .batch import Item, Manifest, Shard, manifest_path, plan, shard_from_environment, share
from .errors import Cancelled, ImageToMeshError, InputError
from .settings import FOREGROUND_RATIO, RESOLUTION, THRESHOLD, GenerateSettings


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
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
        this_shard = shard_from_environment()
        items = share(plan(args.images, args.output_dir, f".{args.format}"), this_shard)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(manifest_path(args.output_dir, this_shard))
    except ImageToMeshError as error:
        return _fail(error)
    except OSError as error:
        return _fail(f"Cannot write to the output folder {args.output_dir}: {error.strerror or error}.")
    with manifest:
        return _run(items, settings, args, this_shard, manifest)


def _parser() -> argparse.ArgumentParser:
    from .sources import DEFAULT_SOURCE, MODEL_ENV_VAR, default_source

    parser = argparse.ArgumentParser(
        prog="python -m core", description="Turn pictures into coloured 3D meshes with TripoSR."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="input image files")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the meshes")
    parser.add_argument(
        "--model",
        default=default_source(),
        help=f"local folder with config.yaml + model.ckpt, or a Hugging Face repo id (default: ${MODEL_ENV_VAR} "
        f"or {DEFAULT_SOURCE})",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--resolution", type=int, default=RESOLUTION.default,
                        help=f"marching-cubes grid size, {RESOLUTION.span()} (default {RESOLUTION.default})")
    parser.add_argument("--threshold", type=float, default=THRESHOLD.default,
                        help=f"density iso level, {THRESHOLD.span()} (default {THRESHOLD.default:g})")
    parser.add_argument("--format", choices=("ply", "obj", "glb"), default="ply",
                        help="ply (vertex colours), obj (+ .mtl and .png when textured) or glb (default ply)")
    _add_asset_arguments(parser)
    parser.add_argument("--no-remove-bg", action="store_true", help="use the image as it is: no background removal")
    parser.add_argument("--foreground-ratio", type=float, default=FOREGROUND_RATIO.default,
                        help=f"object size in the frame, {FOREGROUND_RATIO.span()} (default {FOREGROUND_RATIO.default})")
    parser.add_argument("--offline", action="store_true", help="never download; use the cache or a local folder")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave out images whose output file already exists (to resume a stopped run)")
    return parser


def _add_asset_arguments(parser):
    parser.add_argument("--texture-size", type=int, default=None,
                        help="texture baked from the colour field, in pixels a side; 0 = vertex colours only "
                        f"(default {DEFAULT_TEXTURE_SIZE} for glb and obj, 0 for ply)")
    parser.add_argument("--face-limit", type=int, default=None,
                        help=f"at most this many faces; 0 = no limit (default {DEFAULT_FACE_LIMIT:,} when textured, "
                        f"else 0; a texture needs one of at most {TEXTURE_FACE_LIMIT_MAX:,})")
    parser.add_argument("--keep-floaters", action="store_true",
                        help=f"keep separate pieces smaller than {FLOATER_AREA_FRACTION * 100:g}%% of the largest "
                        "one's area")
    parser.add_argument("--watertight", action="store_true", help="close every hole: a closed 2-manifold mesh")


def _asset_options(args) -> dict:
    texture_size = args.texture_size
    if texture_size is None:
        texture_size = 0 if args.format == "ply" else DEFAULT_TEXTURE_SIZE
    face_limit = args.face_limit
    if face_limit is None:
        face_limit = DEFAULT_FACE_LIMIT if texture_size else 0
    return dict(texture_size=texture_size, face_limit=face_limit, remove_floaters=not args.keep_floaters,
                watertight=args.watertight)


def _run(items: list[Item], settings: GenerateSettings, args, this_shard: Shard, manifest: Manifest) -> int:
    from tqdm.auto import tqdm

    from .preprocess import check_image_file

    failures, todo = 0, []
    for item in items:  # every check that needs no model first: a typo fails in a second, not after loading
        if args.skip_existing and item.output.exists():
            manifest.write(_record(item, this_shard, "skipped"))
            continue
        try:
            check_image_file(item.image)
            todo.append(item)
        except ImageToMeshError as error:
            failures += 1
            manifest.write(_record(item, this_shard, "failed", error=str(error)))
            _fail(error)
    tag = f"[{this_shard.index + 1}/{this_shard.count}] " if this_shard.count > 1 else ""
    _say(f"{tag}{len(items)} images: {len(todo)} to make, {len(items) - len(todo) - failures} already made, "
         f"{failures} unusable")
    if not todo:
        return 1 if failures else 0
    try:
        started = time.perf_counter()
        model = _load(args, this_shard)
        _say(f"{tag}Loading model: {time.perf_counter() - started:.2f} s ({model.device})")
    except ImageToMeshError as error:
        for item in todo:
            manifest.write(_record(item, this_shard, "failed", error=str(error)))
        return _fail(error)

    with tqdm(todo, desc=f"{tag}Images", unit="image", position=0, file=sys.stderr) as overall:
        for item in overall:
            overall.set_postfix_str(item.image.name)
            try:
                record = _generate_one(model, item, settings, this_shard, tag)
            except Cancelled:
                raise
            except ImageToMeshError as error:
                failures += 1
                record = _record(item, this_shard, "failed", error=str(error))
                _fail(f"{item.image}: {error}")
            manifest.write(record)
    return 1 if failures else 0


def _load(args, this_shard: Shard):
    from huggingface_hub.utils import logging as hub_logging

    from .download import terminal_progress
    from .weights import load_model

    hub_logging.set_verbosity_error()  # the hub client's retry warnings; a failure ends in one message of ours
    return load_model(args.model, device=_device(args.device, this_shard), allow_download=not args.offline,
                      on_download=terminal_progress())


def _device(device: str, this_shard: Shard) -> str:
    """With several GPUs, process k of a machine (LOCAL_RANK) takes GPU k (modulo their number)."""
    if this_shard.local_rank is None or device not in ("auto", "cuda"):
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{this_shard.local_rank % count}" if count > 1 else device


def _generate_one(model, item: Item, settings: GenerateSettings, this_shard: Shard, tag: str) -> dict:
    from .pipeline import generate

    times = {}
    with _StageBars(times, tag) as progress:
        mesh = generate(model, item.image, settings, progress=progress)
        progress("Saving mesh", 0.0)
        mesh.save(item.output)
        progress("Saving mesh", 1.0)
    _say(f"{tag}{item.image} → {item.output}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces ("
         + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in times.items()) + ")")
    return _record(item, this_shard, "done", times=times, vertices=len(mesh.vertices), faces=len(mesh.faces))


class _StageBars:
    """progress(stage, fraction) → one tqdm bar per stage, updated while the stage runs; times[stage] = seconds."""

    def __init__(self, times: dict, tag: str):
        self.times, self.tag = times, tag
        self.stage, self.bar, self.started = None, None, 0.0

    def __call__(self, stage: str, fraction: float):
        from tqdm.auto import tqdm

        if stage != self.stage:
            self._close_stage()
            self.stage, self.started = stage, time.perf_counter()
            self.bar = tqdm(total=100, desc=f"{self.tag}{stage}", unit="%", position=1, leave=False, file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        self.bar.update(max(0, int(fraction * 100) - self.bar.n))

    def _close_stage(self):
        if self.bar is not None:
            self.bar.close()
            self.times[self.stage] = round(time.perf_counter() - self.started, 3)
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._close_stage()


def _record(item: Item, this_shard: Shard, status: str, *, error: str | None = None, times=None, **counts) -> dict:
    return {"image": str(item.image), "outputs": [str(item.output)] if status != "failed" else [],
            "status": status, "error": error, "times": times or {}, **counts,
            "shard": [this_shard.index, this_shard.count]}


def _say(text: str):
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)


def _fail(error) -> int:
    _say(f"error: {error}")
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Cancelled):
        print("\ncancelled", file=sys.stderr)
        sys.exit(130)
