"""Image → mesh benchmark: our fast path against the dense path with the reference's settings, in one run.

    python benchmarks/bench.py [--model FOLDER] [--image examples/robot.png] [--resolution 256] [--hires 512]
                               [--repeat 2] [--reference-code TripoSR/ --reference-python triposr-env/bin/python]

Without --model it builds a full-size TripoSR (official dimensions, random weights from a fixed seed) and saves it
as an official-format checkpoint, so loading is measured too. Each path runs in its own process, so the peak
memory printed is that path's alone; the synthetic fields' extraction ratios come from both paths taking turns in
one process (a shared machine's speed can drift too much between processes minutes apart). Three fields are extracted:
the image's own field (random weights: noise), a smooth synthetic field (smooth triplanes) and a busier one with
more surface (~1 M faces at 256³); the smooth one also at --hires by the fast path alone. Random weights
give a nearly constant density, so each field's raw density is scaled and shifted (the decoder's last layer) to
a trained model's dynamic range with a surface inside. The fast meshes are compared with the dense ones. With
--reference-code/--reference-python the reference TripoSR's own implementation is timed too, on the same model,
pixels and smooth field (reference_triposr.py). Last it says whether this CPU multiplies bfloat16 natively and
what a bfloat16 product costs here; where it is native, image → mesh with a bfloat16 encode too.
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.extract import ExtractionStats, extract_mesh  # noqa: E402
from core.preprocess import prepare_image  # noqa: E402
from core.heap import return_freed_memory  # noqa: E402
from core.model import CPUINFO, FEED_FORWARD_ROWS, NATIVE_BFLOAT16_FLAGS, cpu_has_native_bfloat16  # noqa: E402
from core.weights import load_model, official_state_dict  # noqa: E402
from precision import encode  # noqa: E402
from shared import peak_rss_mb, smooth_scene_code, timed  # noqa: E402
from tests.meshdiff import compare as mesh_diff, surface_points  # noqa: E402

INSIDE_FRACTION = 0.15  # of the grid above the threshold in a calibrated field
LOG_DENSITY_STD = 3.0
OFFICIAL_CONFIG = """\
cond_image_size: 512
image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "facebook/dino-vitb16"
tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 32
  num_channels: 1024
backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 16
  attention_head_dim: 64
  num_layers: 16
  cross_attention_dim: 768
post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 1024
  out_channels: 40
decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 120
  n_neurons: 64
  n_hidden_layers: 9
  activation: silu
renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""

# Each path: (query chunk, coarse-to-fine). "dense" is what the reference does: every grid point, chunks of 8192.
PATHS = {"dense": (8192, False), "fast": (None, True)}
RADIUS = 0.87  # the official config's (above)
FIELDS = ("image", "smooth", "busy")  # the image's own field, a smooth one, and one with more of it (~1 M faces)
RATIO_FIELDS = ("smooth", "busy")  # the synthetic ones, whose extraction ratio comes from ratio_runs
BUSY_PATTERN = 6


def random_model():
    """A full-size TripoSR (official dimensions) with random weights from a fixed seed."""
    from core.config import ModelConfig
    from core.model import TripoSR

    torch.manual_seed(0)
    model = TripoSR(ModelConfig())
    for layer in model.decoder.layers:  # the default init makes a 9-layer MLP all but constant
        torch.nn.init.normal_(layer.weight, std=1.5 * (2.0 / layer.in_features) ** 0.5)
    return model.eval()


def save_random_model(folder: Path) -> dict:
    model = random_model()
    (folder / "config.yaml").write_text(OFFICIAL_CONFIG)
    _, seconds = timed(lambda: torch.save(official_state_dict(model), folder / "model.ckpt"))
    return {"save_s": seconds, "ckpt_mb": (folder / "model.ckpt").stat().st_size / 2**20}


def raw_log_density(model, code: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The decoder's density output before exp, (N,) float64 on the CPU: finite where the density itself
    overflows (random full-size weights give densities beyond float32)."""
    code, points = code.to(model.device), points.to(model.device)
    with torch.inference_mode():
        return torch.cat([model._decode(model._triplane_features(code, chunk))[:, 0]
                          for chunk in points.split(model.query_chunk_size)]).double().cpu()


def calibration_for(model, scene_code) -> list:
    """(scale, shift) for the raw density that gives the field a trained model's dynamic range (log-density std
    LOG_DENSITY_STD over a 64³ grid) with INSIDE_FRACTION of it above the threshold. Read from the decoder's raw
    output: the density itself may overflow before calibration."""
    from core.extract import grid_axis

    axis = grid_axis(64, model.config.renderer.radius)
    raw = raw_log_density(model, scene_code, torch.cartesian_prod(axis, axis, axis)).numpy()
    scale = LOG_DENSITY_STD / raw.std()
    level = np.log(25.0) - model.config.renderer.density_bias
    return [float(scale), float(level - scale * np.quantile(raw, 1.0 - INSIDE_FRACTION))]


@contextlib.contextmanager
def calibrated(model, calibration):
    """The decoder's density output raw → scale·raw + shift while inside; its last layer restored after."""
    last = model.decoder.layers[-1]
    weight, bias = last.weight.clone(), last.bias.clone()
    scale, shift = calibration
    with torch.no_grad():
        last.weight[0] *= scale
        last.bias[0] = scale * last.bias[0] + shift
    try:
        yield
    finally:
        with torch.no_grad():
            last.weight.copy_(weight)
            last.bias.copy_(bias)


def run_path(args) -> dict:
    """One path in this process: load, prepare, encode by stage, extract both fields; writes meshes + JSON. The
    fast path then extracts the synthetic fields with both paths in turn (see ratio_runs)."""
    out = Path(args.out)
    coarse_to_fine = PATHS[args.path][1]
    report = {"path": args.path}
    model, report["load_s"] = timed(lambda: load_model(args.model, device="cpu", allow_download=False))
    pixels, report["prepare_s"] = timed(lambda: prepare_image(args.image))
    with torch.inference_mode(), model._autocast():
        resized = model.resize_images(torch.from_numpy(pixels)[None])
        tokens, report["vit_s"] = timed(lambda: model.image_tokens(resized))
        if coarse_to_fine:
            return_freed_memory()  # as TripoSR.encode does
        tokens, report["backbone_s"] = timed(lambda: model.backbone_tokens(tokens))
        codes, report["upsample_s"] = timed(lambda: model.scene_codes(tokens).float())
    report["peak_encode_mb"] = peak_rss_mb()
    fields = {"image": codes[0], "smooth": smooth_scene_code(codes[0]),
              "busy": smooth_scene_code(codes[0], BUSY_PATTERN)}
    calibrations = json.loads(args.calibrations) if args.calibrations else {}
    for name in fields:  # before extraction: a real image → mesh has no such step in between
        if (name in RATIO_FIELDS or args.calibrate) and name not in calibrations:
            calibrations[name] = calibration_for(model, fields[name])
    if coarse_to_fine:
        return_freed_memory()  # as TripoSR.encode does before handing the codes on

    def extract(name, resolution, path=args.path):
        if name in calibrations:  # the synthetic fields always, the image's own with --calibrate
            with calibrated(model, calibrations[name]):
                return extract_field(model, fields[name], resolution, path)
        return extract_field(model, fields[name], resolution, path)

    for name in ("smooth", "busy", "image"):  # the smooth field first: the peak of an image → mesh like a real one
        mesh, report[f"{name}_{args.resolution}"] = extract(name, args.resolution)
        np.savez(out / f"{args.path}_{name}_{args.resolution}.npz", vertices=mesh.vertices, faces=mesh.faces)
        del mesh
        if name == "smooth":
            report["peak_smooth_mb"] = peak_rss_mb()
    report["peak_mb"] = peak_rss_mb()
    if coarse_to_fine and args.hires:
        mesh, report[f"smooth_{args.hires}"] = extract("smooth", args.hires)  # the noise field: ~40 M faces
        report[f"smooth_{args.hires}"]["surface_points"] = surface_points(mesh.vertices, args.hires, RADIUS)
        report["peak_hires_mb"] = peak_rss_mb()
    if coarse_to_fine:
        report["ratio_runs"] = {name: ratio_runs(lambda path: extract(name, args.resolution, path)[1], args.repeat)
                                for name in RATIO_FIELDS}
        with calibrated(model, calibrations["smooth"]):
            report["asset"] = asset_run(model, fields["smooth"], args.resolution)
        report["bfloat16"] = bfloat16_run(model, pixels, codes, Path(args.cpuinfo))  # last: its own peak memory
    report["calibrations"] = calibrations
    (out / f"{args.path}.json").write_text(json.dumps(report))
    return report


def bfloat16_run(model, pixels: np.ndarray, codes: torch.Tensor, cpuinfo: Path) -> dict:
    """Whether this CPU multiplies bfloat16 natively, and what bfloat16 costs here: one feed-forward product of
    the triplane transformer at the model's own shape (FEED_FORWARD_ROWS tokens), bfloat16 ÷ float32 time, best of
    3 each; on a CPU with native bfloat16 also the whole encode in bfloat16 and how far its scene codes move."""
    dim = model.backbone.blocks[0].ff_out.out_features
    tokens, weight = torch.randn(FEED_FORWARD_ROWS, dim), torch.randn(4 * dim, dim)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = tokens.to(dtype), weight.to(dtype)
        F.linear(x, w)  # warm-up
        seconds[dtype] = min(timed(lambda: F.linear(x, w))[1] for _ in range(3))
    report = {"native": cpu_has_native_bfloat16(cpuinfo), "dim": dim,
              "matmul_ratio": seconds[torch.bfloat16] / seconds[torch.float32]}
    if report["native"]:
        low, report["encode_s"] = timed(lambda: encode(model, pixels, "bfloat16"))
        report["code_difference"] = float((low - codes[0]).abs().max())
        report["largest_code"] = float(codes.abs().max())
    return report


def ratio_runs(extract, repeat: int) -> dict:
    """A field extracted by the dense and the fast path in turn, `repeat` times each, in one process:
    a shared machine's speed can drift by tens of percent over minutes, so the two paths' own runs (minutes apart, in
    separate processes) are not comparable enough for a ratio. Each path's fastest run is kept."""
    best = {}
    for _ in range(repeat):
        for path in PATHS:
            record = extract(path)
            if path not in best or record["extract_s"] < best[path]["extract_s"]:
                best[path] = record
    return best


def asset_run(model, code, resolution: int) -> dict:
    """What the add-on's default Output adds to a generate: the smooth field's mesh → floaters removed, face limit,
    UV unwrap, texture painted from the field (core.asset.finish_mesh), timed by stage."""
    from core.asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE, AssetSettings, finish_mesh
    from core.pipeline import field_colors

    mesh, _ = extract_field(model, code, resolution, "fast")
    settings = AssetSettings(texture_size=DEFAULT_TEXTURE_SIZE, face_limit=DEFAULT_FACE_LIMIT, remove_floaters=True)
    moments = {}
    asset, seconds = timed(lambda: finish_mesh(mesh, field_colors(model, code), settings,
                                               lambda stage, fraction: moments.setdefault((stage, fraction),
                                                                                          time.perf_counter())))
    baking = [moments[("Baking texture", fraction)] for fraction in (0.0, 0.5, 1.0)]
    return {"total_s": seconds, "finish_s": baking[0] - moments[("Finishing mesh", 0.0)],
            "unwrap_s": baking[1] - baking[0], "paint_s": baking[2] - baking[1], "faces_in": len(mesh.faces),
            "faces": len(asset.faces), "texture": settings.texture_size}


def extract_field(model, code, resolution: int, path: str):
    """One extraction by one path → (mesh, its timings and counts)."""
    chunk, coarse_to_fine = PATHS[path]
    stats = ExtractionStats()
    if coarse_to_fine:  # the engine: coarse-to-fine, grid points through TripoSR.grid_density
        mesh, seconds = timed(lambda: model.extract_mesh(code, resolution, stats=stats))
    else:  # the reference's way: every grid point through query(), in chunks of 8192
        default_chunk, model.query_chunk_size = model.query_chunk_size, chunk
        try:
            mesh, seconds = timed(lambda: extract_mesh(
                lambda p: model.query(code, p)[0], lambda p: model.query(code, p)[1], resolution=resolution,
                radius=model.config.renderer.radius, coarse_to_fine=False, stats=stats))
        finally:
            model.query_chunk_size = default_chunk
    return mesh, {"extract_s": seconds, "density_evaluations": stats.density_evaluations,
                  "grid_s": stats.grid_seconds, "mc_s": stats.marching_cubes_seconds,
                  "color_s": stats.color_seconds, "evaluations": stats.density_evaluations + stats.color_evaluations,
                  "vertices": len(mesh.vertices), "faces": len(mesh.faces)}


def compare(out: Path, key: str, resolution: int) -> str:
    """Fast mesh vs dense mesh: identical, or by how much the bound CoarseToFine documents is used (whole
    separate pieces missed), or where the bound breaks."""
    fast, dense = (np.load(out / f"{path}_{key}.npz") for path in ("fast", "dense"))
    spacing = 2 * RADIUS / (resolution - 1)
    if fast["vertices"].shape == dense["vertices"].shape and fast["faces"].shape == dense["faces"].shape:
        a, b = (m["vertices"][np.lexsort(m["vertices"].T[::-1])] for m in (fast, dense))
        return f"identical counts, max |Δv| = {np.abs(a - b).max() / spacing:.1e} spacing"
    diff = mesh_diff(dense["vertices"], dense["faces"], fast["vertices"], fast["faces"], spacing)
    if not diff.within_bound:
        return f"OUTSIDE THE BOUND: {diff.extra_faces:,} extra faces, {diff.partial_pieces} partly missed pieces"
    largest = max(range(len(diff.missed_faces)), key=diff.missed_faces.__getitem__)
    extent = " × ".join(f"{size:g}" for size in diff.missed_extents[largest])
    count = len(diff.missed_faces)
    return (f"the dense mesh minus {count} whole separate piece{'s' * (count != 1)} ({sum(diff.missed_faces):,} faces; "
            f"largest {diff.missed_faces[largest]:,} faces, {extent} cells), nothing else")


def print_table(dense: dict, fast: dict, reference: dict | None, args, out: Path, setup: dict):
    resolution, hires = args.resolution, args.hires
    rows = [("load model (mmap)", "load_s"), ("prepare image", "prepare_s"), ("ViT image tokens", "vit_s"),
            ("triplane backbone", "backbone_s"), ("upsampler", "upsample_s")]
    extra = f" {'reference code':>16} {'ratio':>7}" if reference else ""
    print(f"\n{'stage':42} {'dense (ref settings)':>20} {'fast':>10} {'ratio':>7}{extra}")

    def row(label, d, f, r=None, unit="s"):
        line = f"{label:42} {d:>18.2f} {unit} {f:>8.2f} {unit} {d / f:6.1f}x"
        if r is not None:
            line += f" {r:>14.2f} {unit} {r / f:6.1f}x"
        print(line)

    reference = reference or {}
    for label, key in rows:
        row(label, dense[key], fast[key], reference.get(key) if key == "load_s" else None)
    encode = {p: r["vit_s"] + r["backbone_s"] + r["upsample_s"] for p, r in (("dense", dense), ("fast", fast))}
    row("image → scene codes", encode["dense"], encode["fast"], reference.get("encode_s"))
    runs = fast["ratio_runs"]
    extraction = {}
    for field in FIELDS:
        key = f"{field}_{resolution}"
        if field in RATIO_FIELDS:
            d, f, r = runs[field]["dense"], runs[field]["fast"], reference.get(key, {})
        else:
            d, f, r = dense[key], fast[key], {}
        extraction[field] = d["extract_s"], f["extract_s"]
        print(f"-- {field} field at {resolution}³: {f['vertices']:,} vertices, {f['faces']:,} faces; "
              f"{compare(out, key, resolution)}" + (f" (reference code: {r['faces']:,} faces)" if r else ""))
        if field in RATIO_FIELDS:
            print(f"   (best of {args.repeat} per path, the two paths taking turns in one process)")
        row("  density grid", d["grid_s"], f["grid_s"], r.get("grid_s"))
        row("  marching cubes", d["mc_s"], f["mc_s"], r.get("mc_s"))
        row("  vertex colours", d["color_s"], f["color_s"], r.get("color_s"))
        row("  mesh extraction total", d["extract_s"], f["extract_s"], r.get("extract_s"))
        print(f"{'  MLP evaluations':42} {d['evaluations']:>20,} {f['evaluations']:>10,} "
              f"{d['evaluations'] / f['evaluations']:6.1f}x")
        dense_mesh = np.load(out / f"dense_{key}.npz")
        print_surface_ratio(d, f, surface_points(dense_mesh["vertices"], resolution, RADIUS))
    shared_encode = min(encode.values())  # the same code in both paths: the gap between them is the machine's
    for field in FIELDS:
        key = f"{field}_{resolution}"
        dense_total, fast_total = (dense["prepare_s"] + shared_encode + extraction[field][0],
                                   fast["prepare_s"] + shared_encode + extraction[field][1])
        reference_total = reference["encode_s"] + reference[key]["extract_s"] if key in reference else None
        row(f"image → mesh, {field} field ({resolution}³, no load)", dense_total, fast_total, reference_total)
    print(f"   (image → mesh adds the faster of the two paths' encode times, {shared_encode:.2f} s, to both)")
    print_bfloat16(fast["bfloat16"], shared_encode, dense["prepare_s"] + shared_encode + extraction["smooth"][0],
                   fast["prepare_s"] + extraction["smooth"][1], resolution, row)
    row("peak memory, load + image → scene codes", dense["peak_encode_mb"], fast["peak_encode_mb"], None, "MB")
    row(f"peak memory, image → mesh, smooth field {resolution}³", dense["peak_smooth_mb"], fast["peak_smooth_mb"],
        reference.get("peak_mb"), "MB")
    row(f"peak memory, all three fields at {resolution}³", dense["peak_mb"], fast["peak_mb"], None, "MB")
    a = fast["asset"]
    print(f"default Output on the smooth field's {resolution}³ mesh ({a['faces_in']:,} → {a['faces']:,} faces, "
          f"{a['texture']}² texture): {a['total_s']:.2f} s = clean-up + face limit {a['finish_s']:.2f} s, UV unwrap "
          f"{a['unwrap_s']:.2f} s, texture from the field {a['paint_s']:.2f} s")
    if hires:
        h = fast[f"smooth_{hires}"]
        print(f"-- smooth field at {hires}³, fast path only: {h['faces']:,} faces; extraction {h['extract_s']:.2f} s "
              f"(density grid {h['grid_s']:.2f} s), {h['evaluations']:,} MLP evaluations "
              f"({h['evaluations'] / hires**3:.1%} of the grid); peak memory {fast['peak_hires_mb']:.0f} MB")
        print_surface_ratio(None, h, h["surface_points"])
    if reference:
        print("reference code: the reference TripoSR's own implementation (smooth field only; its image "
              "preprocessing not timed, the same prepared pixels as the other paths)")
    for key, value in setup.items():
        print(f"{key}: {value}")


def print_bfloat16(report: dict, dense_encode: float, dense_total: float, fast_rest: float, resolution: int, row):
    """The measured reason the encode stays float32 here, or, on a CPU with native bfloat16, image → mesh with
    a bfloat16 encode against the dense path with the float32 one (the faster of the two paths' encode times)."""
    flags = " or ".join(NATIVE_BFLOAT16_FLAGS)
    shape = f"{FEED_FORWARD_ROWS} × {report['dim']} → {4 * report['dim']}"
    product = (f"a bfloat16 product at the triplane transformer's feed-forward shape ({shape}) takes "
               f"{report['matmul_ratio']:.2f}× the float32 time here")
    if not report["native"]:
        print(f"native bfloat16: no ({flags} not in the CPU flags); {product}, so the encode stays float32 and "
              "image → mesh is the float32 figure above")
        return
    print(f"native bfloat16: yes; {product}")
    row("image → scene codes, bfloat16", dense_encode, report["encode_s"])
    row(f"image → mesh, smooth {resolution}³, bfloat16", dense_total, fast_rest + report["encode_s"])
    print(f"   (bfloat16 scene codes differ by up to {report['code_difference']:.3g}, the largest code being "
          f"{report['largest_code']:.3g}; its effect on a trained model's mesh: benchmarks/precision.py)")


def print_surface_ratio(dense: dict | None, fast: dict, points: int):
    """Density evaluations per grid point the surface touches (see surface_points): 1.0 would be no waste."""
    dense_part = f"{dense['density_evaluations'] / points:>20.2f}" if dense else f"{'':>20}"
    print(f"{'  density evaluations ÷ surface grid points':42} {dense_part} "
          f"{fast['density_evaluations'] / points:>10.2f}"
          f"   ({points:,} grid points at the ends of the grid edges the surface crosses)")


def run_reference(args, model: Path, out: Path, calibration) -> dict:
    """The reference's own code, in its own environment (see reference_triposr.py)."""
    pixels = out / "pixels.npy"
    np.save(pixels, prepare_image(args.image))
    report = out / "reference.json"
    print("running the reference's own code …", file=sys.stderr, flush=True)
    subprocess.run([args.reference_python, str(Path(__file__).with_name("reference_triposr.py")),
                    "--code", args.reference_code, "--model", str(model), "--pixels", str(pixels),
                    "--calibration", json.dumps(calibration), "--out", str(report),
                    "--resolution", str(args.resolution), "--repeat", str(args.repeat)], check=True)
    return json.loads(report.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="folder with config.yaml + model.ckpt (default: a full-size random model)")
    parser.add_argument("--image", default=str(REPO / "examples" / "robot.png"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--hires", type=int, default=512, help="also run the fast path at this resolution (0: no)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="synthetic-field extractions per path for the ratio, the paths taking turns (default 2)")
    parser.add_argument("--reference-code", help="a checkout of the reference TripoSR, to time its own code too")
    parser.add_argument("--reference-python", help="the Python that has the reference's requirements installed")
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--calibrations", help=argparse.SUPPRESS)
    parser.add_argument("--calibrate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpuinfo", default=str(CPUINFO), help=argparse.SUPPRESS)  # tests: a CPU with other flags
    args = parser.parse_args()
    if bool(args.reference_code) != bool(args.reference_python):
        parser.error("--reference-code and --reference-python go together")
    if args.path:
        run_path(args)
        return

    with tempfile.TemporaryDirectory(prefix="image_to_mesh_bench_") as tmp:
        out = Path(tmp)
        setup = {"machine": f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"}
        model = args.model
        if model is None:
            model = out / "model"
            model.mkdir()
            saved = save_random_model(model)
            setup["model"] = f"full-size random weights (seed 0), checkpoint {saved['ckpt_mb']:.0f} MB"
        reports = {}
        calibrations = None
        for path in ("dense", "fast"):
            command = [sys.executable, __file__, "--path", path, "--out", tmp, "--model", str(model),
                       "--image", args.image, "--resolution", str(args.resolution), "--hires", str(args.hires),
                       "--repeat", str(args.repeat), "--cpuinfo", args.cpuinfo]
            if args.model is None:
                command.append("--calibrate")
            if calibrations:
                command += ["--calibrations", json.dumps(calibrations)]
            print(f"running the {path} path …", file=sys.stderr, flush=True)
            subprocess.run(command, check=True)
            reports[path] = json.loads((out / f"{path}.json").read_text())
            calibrations = reports[path]["calibrations"]
        reference = None
        if args.reference_code:
            reference = run_reference(args, Path(model), out, calibrations["smooth"])
        print_table(reports["dense"], reports["fast"], reference, args, out, setup)


if __name__ == "__main__":
    main()
