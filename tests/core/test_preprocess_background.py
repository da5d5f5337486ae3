"""Background removal for pictures without transparency: the border-colour model and the optional rembg hook."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

from core import InputError, prepare_image
from core.background import foreground_alpha, plain_background_alpha

HEIGHT, WIDTH = 240, 320
ROWS, COLS = np.mgrid[:HEIGHT, :WIDTH]


def ellipse(centre_row, centre_col, radius_rows, radius_cols):
    return ((ROWS - centre_row) / radius_rows) ** 2 + ((COLS - centre_col) / radius_cols) ** 2 <= 1


def compose(background: np.ndarray, mask: np.ndarray, noise=0.0, seed=0) -> np.ndarray:
    """A shaded object (colour varies across it) on the given background, with optional sensor noise."""
    shaded = np.stack([np.full(mask.shape, 0.8), 0.3 + 0.4 * COLS / WIDTH, 0.15 + 0.2 * ROWS / HEIGHT], axis=-1)
    image = np.where(mask[..., None], shaded, background)
    image = image + np.random.default_rng(seed).normal(0, noise, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def iou(alpha, mask):
    found = alpha > 0.5
    return (found & mask).sum() / (found | mask).sum()


BACKGROUNDS = {
    "plain": np.broadcast_to(np.float32([0.92, 0.92, 0.95]), (HEIGHT, WIDTH, 3)),
    "dark": np.broadcast_to(np.float32([0.05, 0.05, 0.08]), (HEIGHT, WIDTH, 3)),
    "gradient": np.stack([0.45 + 0.4 * COLS / WIDTH, 0.55 + 0.35 * ROWS / HEIGHT, np.full((HEIGHT, WIDTH), 0.7)],
                         axis=-1),
    "vignette": 0.85 - 0.6 * (((ROWS - HEIGHT / 2) / HEIGHT) ** 2 + ((COLS - WIDTH / 2) / WIDTH) ** 2)[..., None]
    * np.ones(3),
}


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.035])
@pytest.mark.parametrize("background", BACKGROUNDS)
def test_object_is_recovered(background, noise):
    mask = ellipse(130, 150, 70, 95)
    alpha = plain_background_alpha(compose(BACKGROUNDS[background], mask, noise))
    assert iou(alpha, mask) > 0.95


def test_object_touching_the_border_is_recovered():
    mask = ellipse(200, 160, 110, 70)  # cut off by the bottom edge
    alpha = plain_background_alpha(compose(BACKGROUNDS["plain"], mask, 0.02))
    assert iou(alpha, mask) > 0.95


def test_enclosed_hole_stays_object_and_open_notch_is_background():
    # Semantics: background is what connects to the picture's border. A hole fully enclosed by the object (the
    # inside of a ring, a mug handle seen side-on) stays part of the object — the model reconstructs solids;
    # a notch open to the outside is background.
    ring = ellipse(120, 160, 90, 110)
    hole = ellipse(120, 160, 30, 40)
    notch = (ROWS > 100) & (ROWS < 140) & (COLS > 230)  # cuts the ring's right side through to the outside
    object_pixels = ring & ~hole & ~notch
    alpha = plain_background_alpha(compose(BACKGROUNDS["plain"], object_pixels, 0.01))
    assert (alpha[hole] == 1).all()
    notch_inside_ring = notch & ring & (COLS > 240)
    assert (alpha[notch_inside_ring] == 0).mean() > 0.9
    assert iou(alpha, object_pixels | hole) > 0.95


def test_separate_parts_are_kept_and_specks_dropped():
    cup, saucer = ellipse(100, 110, 50, 50), ellipse(200, 220, 25, 70)
    image = compose(BACKGROUNDS["plain"], cup | saucer)
    image[20, 300] = image[220, 15] = (0.0, 0.0, 0.0)  # dust
    alpha = plain_background_alpha(image)
    assert iou(alpha, cup | saucer) > 0.95
    assert alpha[20, 300] == 0 and alpha[220, 15] == 0


def test_edge_is_softened_a_little():
    mask = ellipse(120, 160, 80, 100)
    alpha = plain_background_alpha(compose(BACKGROUNDS["plain"], mask))
    partial = (alpha > 0) & (alpha < 1)
    assert partial.any()
    grown = np.zeros_like(mask)
    grown[1:-1, 1:-1] = mask[:-2, 1:-1] | mask[2:, 1:-1] | mask[1:-1, :-2] | mask[1:-1, 2:]
    assert (alpha[~grown] < 0.2).all()  # softness stays within a pixel or two of the edge
    assert (alpha[ellipse(120, 160, 75, 95)] == 1).all() and alpha[0, 0] == 0


@pytest.mark.parametrize("colour", [0.0, 0.5, 1.0])
def test_uniform_picture_has_no_foreground(colour):
    with pytest.raises(InputError, match="No foreground found"):
        plain_background_alpha(np.full((64, 64, 3), colour, np.float32))


def test_noisy_uniform_picture_has_no_foreground():
    noisy = compose(BACKGROUNDS["plain"], np.zeros((HEIGHT, WIDTH), bool), noise=0.03)
    with pytest.raises(InputError, match="No foreground found"):
        plain_background_alpha(noisy)


def test_busy_background_is_refused_with_advice():
    busy = np.random.default_rng(3).random((HEIGHT, WIDTH, 3)).astype(np.float32)
    with pytest.raises(InputError, match="not plain enough.*transparency.*rembg"):
        plain_background_alpha(busy)


def test_prepare_image_cuts_out_and_frames_the_object():
    mask = ellipse(60, 240, 40, 50)  # off-centre in the picture
    image = (compose(BACKGROUNDS["gradient"], mask) * 255).astype(np.uint8)
    out = prepare_image(image, foreground_ratio=0.8)
    side = out.shape[0]
    assert int(99 / 0.8) <= side <= int(103 / 0.8)  # the 81×101 object, its soft edge and the dropped last column
    not_gray = np.abs(out - 127 / 255).max(axis=-1) > 0.05
    rows, cols = np.flatnonzero(not_gray.any(1)), np.flatnonzero(not_gray.any(0))
    assert abs((rows[0] + rows[-1]) / 2 - side / 2) <= 2 and abs((cols[0] + cols[-1]) / 2 - side / 2) <= 2


# ---- rembg: not installed in the test environment. A stand-in module with rembg's call signature checks our
# glue: used when its weights are on disk, skipped (no download) when they are not, and a failure falls back.

@pytest.fixture
def fake_rembg(monkeypatch, tmp_path):
    calls = []

    def remove(image, session=None):
        calls.append((image.size, session))
        alpha = Image.new("L", image.size, 0)
        alpha.paste(255, (10, 10, 30, 40))
        cutout = image.convert("RGBA")
        cutout.putalpha(alpha)
        return cutout

    module = types.SimpleNamespace(remove=remove, new_session=lambda name: f"session:{name}")
    monkeypatch.setitem(sys.modules, "rembg", module)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    return module, calls, tmp_path


def test_rembg_is_used_when_installed_with_its_weights(fake_rembg):
    _, calls, home = fake_rembg
    (home / "u2net.onnx").write_bytes(b"weights")
    image = compose(BACKGROUNDS["plain"], ellipse(120, 160, 80, 100))
    alpha = foreground_alpha(image)
    assert calls == [((WIDTH, HEIGHT), "session:u2net")]
    assert alpha.sum() == 20 * 30 and (alpha[10:40, 10:30] == 1).all()


def test_rembg_without_weights_is_not_used(fake_rembg):
    _, calls, _ = fake_rembg
    mask = ellipse(120, 160, 80, 100)
    alpha = foreground_alpha(compose(BACKGROUNDS["plain"], mask))
    assert calls == [] and iou(alpha, mask) > 0.95


def test_rembg_failure_falls_back_to_the_border_model(fake_rembg):
    module, _, home = fake_rembg
    (home / "u2net.onnx").write_bytes(b"weights")

    def broken(image, session=None):
        raise RuntimeError("onnxruntime: out of memory")

    module.remove = broken
    mask = ellipse(120, 160, 80, 100)
    assert iou(foreground_alpha(compose(BACKGROUNDS["plain"], mask)), mask) > 0.95


def test_without_rembg_the_border_model_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", None)  # import rembg raises ImportError, as when not installed
    mask = ellipse(120, 160, 80, 100)
    image = compose(BACKGROUNDS["plain"], mask)
    np.testing.assert_array_equal(foreground_alpha(image), plain_background_alpha(image))
