"""A TripoSR checkpoint whose field is painted by hand: a known asymmetric shape, no training needed.

With backbone.proj_out zeroed, the backbone returns its residual input, i.e. the learned triplane embeddings;
the 2×2 transposed-conv upsampler copies four embedding channels into the four sub-pixels of one scene-code
channel; the decoder adds SHIFT to its inputs so every SiLU works in its (almost exactly) linear range. The
raw density is then the sum of scene-code channel 0 of the three planes, and the colour logits are channels
1..3 of plane 0 — so the field is what is painted into the planes.

The shape (TripoSR's frame, Z up, camera at +X, image-right +Y): a body cube |x|,|y|,|z| <= 0.3, a nose toward
+X (x up to NOSE_TIP), an arm toward +Y (y up to ARM_TIP) and a hat toward +Z (z up to HAT_TIP). Each plane holds
0 inside the shape's silhouette seen along its missing axis and OUTSIDE elsewhere, so the solid is the
intersection of the three silhouettes' extrusions — exactly this shape.

Variants (write_crafted_model's options): `checker` paints plane 0 with a ±1 checker of one texel per cell and
gives the colour outputs a gain of CHECKER_GAIN, so the colour is red or cyan with edges far sharper than a
texel (bilinear ±1 texels cross zero exactly half-way between texel centres); `blob` adds a separate small cube
(1 % of the main piece's area with plane_size 16; at resolution 128 the coarse-to-fine extraction sees it); `arm_tip` past the volume's edge (RADIUS) cuts the arm open there;
`plane_size` sets the tokenizer's plane size (the scene code has twice that many texels a side).
"""

import shutil
from pathlib import Path

import numpy as np

BODY, NOSE_TIP, ARM_TIP, HAT_TIP = 0.3, 0.6, 0.75, 0.7
NOSE_HALF_WIDTH, ARM_HALF_WIDTH, HAT_HALF_WIDTH = 0.1, 0.1, 0.15
SHIFT = 30.0  # SiLU(x + 30) = x + 30 to within 1e-11
INSIDE_RAW = 9.0  # raw density inside; the threshold 25 on exp(raw - 1) sits at raw 4.22
OUTSIDE = -20.0
RADIUS = 0.87
COLOURS = {"body": (0.9, 0.9, 0.9), "nose": (0.9, 0.1, 0.1), "arm": (0.1, 0.8, 0.1)}
CHECKER_GAIN = 40.0  # colour logits ±40: sigmoid gives 0 or 1 to within 5e-18, the edge is 1/40 texel wide
CHECKER_SIGNS = (1.0, -1.0, -1.0)  # per colour channel: checker +1 → (1, 0, 0) red, −1 → (0, 1, 1) cyan
BLOB_CENTRE, BLOB_HALF_WIDTH = -0.6, 0.05


def _box(u, v, u_range, v_range):
    return (u >= u_range[0]) & (u <= u_range[1]) & (v >= v_range[0]) & (v <= v_range[1])


def silhouettes(u, v, arm_tip=ARM_TIP, blob=False):
    """Inside-masks of the three planes; plane 0 = (x across, y down the rows), 1 = (x, z), 2 = (y, z)."""
    body = (-BODY, BODY)
    xy = _box(u, v, body, body) | _box(u, v, (BODY, NOSE_TIP), (-NOSE_HALF_WIDTH, NOSE_HALF_WIDTH)) \
        | _box(u, v, (-ARM_HALF_WIDTH, ARM_HALF_WIDTH), (BODY, arm_tip))
    xz = _box(u, v, body, body) | _box(u, v, (BODY, NOSE_TIP), (-NOSE_HALF_WIDTH, NOSE_HALF_WIDTH)) \
        | _box(u, v, (-HAT_HALF_WIDTH, HAT_HALF_WIDTH), (BODY, HAT_TIP))
    yz = _box(u, v, body, body) | _box(u, v, (BODY, arm_tip), (-ARM_HALF_WIDTH, ARM_HALF_WIDTH)) \
        | _box(u, v, (-HAT_HALF_WIDTH, HAT_HALF_WIDTH), (BODY, HAT_TIP))
    if blob:  # in the corner where every coordinate is negative, so it adds no other piece to the intersection
        span = (BLOB_CENTRE - BLOB_HALF_WIDTH, BLOB_CENTRE + BLOB_HALF_WIDTH)
        xy, xz, yz = (mask | _box(u, v, span, span) for mask in (xy, xz, yz))
    return xy, xz, yz


def scene_planes(size: int, channels: int, checker=False, arm_tip=ARM_TIP, blob=False) -> np.ndarray:
    """(3, channels, size, size) scene code: channel 0 density terms, plane 0 channels 1..3 colour logits."""
    centres = ((2 * np.arange(size) + 1) / size - 1) * RADIUS  # grid_sample texel centres, align_corners=False
    v, u = np.meshgrid(centres, centres, indexing="ij")  # rows follow the pair's second coordinate
    planes = np.zeros((3, channels, size, size), np.float32)
    for index, inside in enumerate(silhouettes(u, v, arm_tip, blob)):
        planes[index, 0] = np.where(inside, INSIDE_RAW / 3 + 1.0 / 3, OUTSIDE)  # + density_bias 1.0 shared out
    if checker:
        rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        sign = np.where((rows + columns) % 2 == 0, 1.0, -1.0)
        planes[0, 1:4] = np.array(CHECKER_SIGNS)[:, None, None] * sign  # times CHECKER_GAIN in the decoder
        return planes
    colour = np.broadcast_to(np.array(COLOURS["body"], np.float32)[:, None, None], (3, size, size)).copy()
    colour[:, _box(u, v, (BODY - 0.05, 1.0), (-0.2, 0.2))] = np.array(COLOURS["nose"])[:, None]
    colour[:, _box(u, v, (-0.2, 0.2), (BODY - 0.05, 1.0))] = np.array(COLOURS["arm"])[:, None]
    planes[0, 1:4] = np.log(colour / (1 - colour))  # sigmoid⁻¹
    return planes


def write_crafted_model(fixture_dir: Path, folder: Path, *, checker=False, arm_tip=ARM_TIP, blob=False,
                        plane_size=None) -> Path:
    import torch
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture_dir / "vit_config.json", folder / "vit_config.json")
    config = yaml.safe_load((fixture_dir / "config.yaml").read_text())
    n = plane_size or config["tokenizer"]["plane_size"]
    config["tokenizer"]["plane_size"] = n
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    state = torch.load(fixture_dir / "model.ckpt", map_location="cpu", weights_only=True)

    upsample = state["post_processor.upsample.weight"]  # (C_in, C_out, 2, 2)
    c_in, c_out = upsample.shape[:2]
    embeddings_shape = (3, c_in, n, n)
    planes = scene_planes(2 * n, c_out, checker=checker, arm_tip=arm_tip, blob=blob)

    painted = np.zeros(embeddings_shape, np.float32)
    weight = np.zeros(upsample.shape, np.float32)
    for channel in range(c_out):
        for a in range(2):
            for b in range(2):
                source = 4 * channel + 2 * a + b
                assert source < c_in
                painted[:, source] = planes[:, channel, a::2, b::2]
                weight[source, channel, a, b] = 1.0
    state["tokenizer.embeddings"] = torch.from_numpy(painted)
    state["post_processor.upsample.weight"] = torch.from_numpy(weight)
    state["post_processor.upsample.bias"] = torch.zeros(c_out)
    state["backbone.proj_out.weight"] = torch.zeros_like(state["backbone.proj_out.weight"])
    state["backbone.proj_out.bias"] = torch.zeros_like(state["backbone.proj_out.bias"])

    first, hidden, last = (state[f"decoder.layers.{i}.weight"] for i in (0, 2, 4))
    features, neurons = first.shape[1], first.shape[0]
    assert features <= neurons
    state["decoder.layers.0.weight"] = torch.eye(neurons, features)
    state["decoder.layers.0.bias"] = torch.full((neurons,), SHIFT)
    state["decoder.layers.2.weight"] = torch.eye(neurons)
    state["decoder.layers.2.bias"] = torch.zeros(neurons)
    out = torch.zeros_like(last)
    out[0, [0, c_out, 2 * c_out]] = 1.0  # density: channel 0 of each plane
    for k in range(1, 4):
        out[k, k] = CHECKER_GAIN if checker else 1.0  # colour: plane 0 channels 1..3
    state["decoder.layers.4.weight"] = out
    bias = torch.full((4,), -SHIFT * (CHECKER_GAIN if checker else 1.0))
    bias[0] = -3 * SHIFT
    state["decoder.layers.4.bias"] = bias
    torch.save(state, folder / "model.ckpt")
    return folder
