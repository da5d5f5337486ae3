"""The reference TripoSR's own code on the benchmark's model, image and smooth field: bench.py runs this with
--reference-python (an environment where the reference's requirements are installed) and --reference-code (its
checkout). Nothing here imports this project's core, so it runs in that environment as it is."""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from shared import peak_rss_mb, smooth_scene_code, timed

# facebook/dino-vitb16's config.json: the reference fetches it from the hub even for a local model folder.
DINO_CONFIG = {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12,
               "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
               "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
               "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02}


def offline_hub_with_dino_config(home: Path) -> None:
    revision = "0" * 40
    repo = home / "hub" / "models--facebook--dino-vitb16"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / "config.json").write_text(json.dumps(DINO_CONFIG))
    os.environ.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")


def main():
    parser = argparse.ArgumentParser()
    for name in ("--code", "--model", "--pixels", "--calibration", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    offline_hub_with_dino_config(Path(tempfile.mkdtemp(prefix="reference_hf_")))
    sys.path.insert(0, args.code)
    from tsr.system import TSR
    from tsr.utils import scale_tensor

    report = {}
    model, report["load_s"] = timed(lambda: TSR.from_pretrained(args.model, "config.yaml", "model.ckpt"))
    model.renderer.set_chunk_size(8192)  # run.py's default
    pixels = np.load(args.pixels)
    with torch.no_grad():
        codes, report["encode_s"] = timed(lambda: model([pixels], device="cpu"))
        code = smooth_scene_code(codes[0])
        scale, shift = json.loads(args.calibration)
        last = [layer for layer in model.decoder.layers if isinstance(layer, torch.nn.Linear)][-1]
        last.weight[0] *= scale
        last.bias[0] = scale * last.bias[0] + shift

        # TSR.extract_mesh, stage by stage, with the same calls.
        model.set_marching_cubes_resolution(args.resolution)
        helper, radius = model.isosurface_helper, model.renderer.cfg.radius
        best = None
        for _ in range(args.repeat):
            points = scale_tensor(helper.grid_vertices, helper.points_range, (-radius, radius))
            density, grid_s = timed(lambda: model.renderer.query_triplane(model.decoder, points, code)["density_act"])
            (vertices, faces), mc_s = timed(lambda: helper(-(density - 25.0)))
            vertices = scale_tensor(vertices, helper.points_range, (-radius, radius))
            _, color_s = timed(lambda: model.renderer.query_triplane(model.decoder, vertices, code)["color"])
            run = {"grid_s": grid_s, "mc_s": mc_s, "color_s": color_s, "extract_s": grid_s + mc_s + color_s,
                   "vertices": len(vertices), "faces": len(faces)}
            best = run if best is None or run["extract_s"] < best["extract_s"] else best
    report[f"smooth_{args.resolution}"] = best
    report["peak_mb"] = peak_rss_mb()
    Path(args.out).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
