"""prepare_image against the reference's preprocessing (tests/fixtures/triposr_tiny: input.png → preprocessed.png)."""

import numpy as np
import pytest
from PIL import Image

from core import InputError, prepare_image
from core.preprocess import composite_on_gray, frame_foreground


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    return np.asarray(Image.open(tiny_model_dir / "preprocessed.png")).astype(np.float32) / 255


@pytest.mark.parametrize("kind", ["path", "str", "pil", "array"])
def test_fixture_matches_reference_exactly(tiny_model_dir, expected, kind):
    path = tiny_model_dir / "input.png"
    image = {"path": path, "str": str(path), "pil": Image.open(path), "array": np.asarray(Image.open(path))}[kind]
    out = prepare_image(image)
    assert out.dtype == np.float32 and out.shape == (260, 260, 3)
    np.testing.assert_array_equal(out, expected)


def test_fixture_input_is_not_modified(tiny_model_dir):
    array = np.asarray(Image.open(tiny_model_dir / "input.png")).copy()
    before = array.copy()
    prepare_image(array)
    np.testing.assert_array_equal(array, before)


def test_keeps_the_reference_dropping_the_last_foreground_row_and_column():
    # We keep the reference's exclusive upper bound on purpose (the model was trained on images cropped this
    # way, and it keeps preprocessed.png pixel-identical). A 10×6 opaque red box: the crop is 9×5, the square 9,
    # the padded side int(9 / 0.9) = 10 — an inclusive crop would give 10 and int(10 / 0.9) = 11.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[12:22, 20:26] = (255, 0, 0, 255)
    out = prepare_image(rgba, foreground_ratio=0.9)
    assert out.shape == (10, 10, 3)
    red = np.all(out == (1.0, 0.0, 0.0), axis=-1)
    assert red.sum() == 9 * 5  # one row and one column of the 10×6 box are gone
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (0, 8, 2, 6)  # square pad: floor half on the left


def test_frame_foreground_pads_with_transparent_black_floor_half_top_left():
    rgba = np.zeros((30, 30, 4), np.float32)
    rgba[5:12, 3:7] = 1.0  # crop 6×3 → square 6 (pad 1 left, 2 right) → int(6 / 0.5) = 12 (3 each side)
    framed = frame_foreground(rgba, 0.5)
    assert framed.shape == (12, 12, 4)
    opaque = framed[..., 3] == 1
    rows, cols = np.flatnonzero(opaque.any(1)), np.flatnonzero(opaque.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (3, 8, 4, 6)
    assert np.all(framed[~opaque] == 0)


def test_composite_truncates_like_the_reference():
    rgba = np.array([[[1.0, 0.2, 0.0, 0.5]]], np.float32)  # 0.75, 0.35, 0.25 → ×255 = 191.25, 89.25, 63.75
    np.testing.assert_array_equal(composite_on_gray(rgba)[0, 0] * 255, np.float32([191, 89, 63]))


@pytest.mark.parametrize("ratio", [0, -0.5, 1.01, float("nan"), "0.85", None, True])
def test_foreground_ratio_outside_0_1_is_refused(tiny_model_dir, ratio):
    with pytest.raises(InputError, match="foreground_ratio"):
        prepare_image(tiny_model_dir / "input.png", foreground_ratio=ratio)


def test_foreground_ratio_one_and_small_ratios_work(tiny_model_dir):
    assert prepare_image(tiny_model_dir / "input.png", foreground_ratio=1.0).shape == (221, 221, 3)
    assert prepare_image(tiny_model_dir / "input.png", foreground_ratio=0.5).shape == (442, 442, 3)
    tiny_ratio = prepare_image(tiny_model_dir / "input.png", foreground_ratio=0.01)  # bounded, not 22100 px
    assert tiny_ratio.shape[0] <= 4100


def test_no_background_removal_keeps_the_picture_as_is(tiny_model_dir):
    rgb = np.asarray(Image.open(tiny_model_dir / "input.png").convert("RGB"))[:, :200]
    out = prepare_image(rgb, remove_background=False)
    assert out.shape == (300, 200, 3)  # no crop, not made square
    np.testing.assert_array_equal(out, rgb.astype(np.float32) / 255)


def test_no_background_removal_composites_alpha_on_gray(tiny_model_dir):
    rgba = np.asarray(Image.open(tiny_model_dir / "input.png"))
    out = prepare_image(rgba, remove_background=False)
    assert out.shape == (300, 300, 3)
    transparent = rgba[..., 3] == 0
    np.testing.assert_array_equal(out[transparent], np.float32(127 / 255))  # 0.5 gray, truncated
    opaque = rgba[..., 3] == 255
    np.testing.assert_array_equal(out[opaque], rgba[opaque][:, :3].astype(np.float32) / 255)
