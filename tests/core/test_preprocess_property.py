"""Property: whatever picture prepare_image is handed, it returns a valid model input or raises InputError."""

import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from core import InputError, prepare_image

DTYPES = [np.uint8, np.uint16, np.float16, np.float32, np.float64, np.bool_]
CONTENTS = ["random", "constant", "box", "box_with_nan", "transparent_box", "all_transparent", "extremes"]
PIL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]
FORMATS = ["PNG", "TIFF", "WEBP", "BMP", "GIF", "JPEG"]
ERROR_KINDS = ["foreground is only", "too small", "elongated", "fully transparent", "No foreground", "not plain",
               "cannot be"]
EDGE_SIZES = [(16, 16), (1, 1), (3, 50), (12, 30), (15, 40), (16, 1030), (17, 1090), (1100, 17), (64, 16)]


def pixels(rng, shape, dtype, content):
    """Image content in the dtype's full range: top = 255, 65535, 1.0 or True."""
    top = {np.uint8: 255, np.uint16: 65535, np.bool_: 1}.get(dtype, 1.0)
    values = rng.random(shape)
    if content == "constant":
        values[:] = values.flat[0]
    elif content in ("box", "box_with_nan", "transparent_box", "all_transparent"):
        values[:] = 0.9
        height, width = shape[:2]
        values[height // 4:3 * height // 4 + 1, width // 4:3 * width // 4 + 1] = 0.2
    elif content == "extremes":
        values = rng.choice([0.0, 1.0], size=shape)
    if np.issubdtype(dtype, np.floating):
        image = (values * rng.choice([1.0, 4.0, -1.0])).astype(dtype)  # floats may leave [0, 1]
        if content == "box_with_nan":
            image.flat[rng.integers(0, image.size, max(1, image.size // 7))] = rng.choice([np.nan, np.inf, -np.inf])
    else:
        image = (values * top).round().astype(dtype)
    if len(shape) == 3 and shape[2] in (2, 4) and content in ("transparent_box", "all_transparent"):
        alpha = np.zeros(shape[:2], dtype)
        if content == "transparent_box":
            alpha[shape[0] // 4:3 * shape[0] // 4 + 1, shape[1] // 4:3 * shape[1] // 4 + 1] = top
        image[..., -1] = alpha
    return image


@st.composite
def any_picture(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    edge_case = draw(st.integers(0, 7)) == 7  # one in eight: tiny or extremely elongated
    height, width = draw(st.sampled_from(EDGE_SIZES) if edge_case else st.tuples(st.integers(16, 80),
                                                                                  st.integers(16, 80)))
    content = draw(st.sampled_from(CONTENTS))
    kind = draw(st.sampled_from(["array", "pil", "file"]))
    if kind == "array":
        channels = draw(st.sampled_from([None, 1, 2, 3, 4]))
        shape = (height, width) if channels is None else (height, width, channels)
        return pixels(rng, shape, draw(st.sampled_from(DTYPES)), content)
    mode = draw(st.sampled_from(PIL_MODES))
    rgba = pixels(rng, (height, width, 4), np.uint8, content)
    source = Image.fromarray(rgba[..., :2] if mode in ("LA", "PA") else rgba, "LA" if mode in ("LA", "PA") else
                             "RGBA")
    if mode == "I;16":
        image = Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    elif mode == "PA":
        image = source.convert("RGBA").convert("P")
    else:
        image = source.convert(mode)
    if kind == "pil":
        return image
    file_format = draw(st.sampled_from(FORMATS))
    buffer = io.BytesIO()
    try:
        image.save(buffer, file_format)
    except (OSError, ValueError, KeyError):  # that format cannot store that mode: store it as PNG instead
        buffer = io.BytesIO()
        image.convert("RGBA" if "A" in mode else "RGB").save(buffer, "PNG")
    return ("file", buffer.getvalue())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picture=any_picture(), remove_background=st.booleans(),
       foreground_ratio=st.floats(0.05, 1.0))  # ratios outside (0, 1]: test_preprocess.py
def test_prepare_image_returns_a_model_input_or_raises_input_error(picture, remove_background, foreground_ratio):
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(picture, tuple):
            path = Path(folder) / "picture"
            path.write_bytes(picture[1])
            picture = path
        try:
            out = prepare_image(picture, remove_background=remove_background, foreground_ratio=foreground_ratio)
        except InputError as error:
            assert str(error)  # a message for the user
            event("InputError: " + next((kind for kind in ERROR_KINDS if kind in str(error)), str(error)))
            return
    event("model input")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 1
    if remove_background:
        assert out.shape[0] == out.shape[1]
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
