"""The image TripoSR sees: square, foreground centred at a given size ratio, on 0.5 gray — as the reference's
run.py prepares it (tests/fixtures/triposr_tiny/README.md lists its steps), from whatever picture a user
hands us."""

import contextlib
import math
import os
import struct
import warnings
import zlib
from numbers import Real
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .background import foreground_alpha
from .errors import InputError
from .settings import FOREGROUND_RATIO, MAX_SIDE

MIN_SIDE = 16  # the ViT's patch size; anything smaller carries too little to reconstruct
MAX_ASPECT = 64  # beyond this, downscaling to MAX_SIDE would leave the short side below MIN_SIDE
# Our own decompression-bomb limit (Pillow's global limit is process-wide state we leave alone): 150 megapixels
# admits a 12000×12000 picture; decoding one that large needs up to 4 bytes a pixel before we downscale it.
MAX_PIXELS = 150_000_000
MIN_FOREGROUND = 4  # px, the longer side of the cropped foreground

# What Pillow raises on a damaged or truncated file (its own fuzzing tests list these; UnidentifiedImageError is an
# OSError). Anything else (MemoryError, a bug) is not the file's fault and propagates as it is.
DECODING_ERRORS = (OSError, SyntaxError, ValueError, EOFError, NotImplementedError, struct.error, zlib.error)

_EXR_MAGIC = b"v/1\x01"
_HDR_MAGICS = (b"#?RADIANCE", b"#?RGBE")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_KEPT_MODES = ("L", "LA", "RGB", "RGBA", "F")
_MODE_CONVERSIONS = {"1": "L", "La": "LA", "P": "RGBA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB"}


def prepare_image(image, *, remove_background=True, foreground_ratio=0.85) -> np.ndarray:
    """Return the model's input image, float32 (H, W, 3) in [0, 1].

    image: a file path (anything Pillow reads), a PIL image, or a numpy array (H, W), (H, W, 1) gray,
    (H, W, 2) gray + alpha, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16 (0..65535), bool or float (display
    values, clipped to [0, 1]; NaN → 0, +inf → 1, -inf → 0). Pictures longer than MAX_SIDE are downscaled first.

    An image whose alpha is below 1 somewhere is cut out by its alpha; otherwise the background is removed
    (rembg if installed with its weights, else a plain-background model). The foreground is then cropped, padded
    to a square whose side is side / foreground_ratio, and composited on 0.5 gray: the result is square.

    remove_background=False is the reference's --no-remove-bg: the picture as is, not cropped or made square;
    an alpha channel, if any, is composited on 0.5 gray (the reference would drop it and show the model the
    colours hidden under transparent pixels).
    """
    if isinstance(foreground_ratio, bool) or not isinstance(foreground_ratio, Real) or not 0 < foreground_ratio <= 1:
        raise InputError(f"foreground_ratio must be a number in (0, 1], got {foreground_ratio!r}; 0.85 is the usual.")
    rgba = load_rgba(image)
    if not rgba[..., 3].max() > 0:
        raise InputError("The image is fully transparent: there is nothing to reconstruct. Use an image whose "
                         "object is opaque (alpha 0 marks background).")
    if remove_background:
        if rgba[..., 3].min() >= 1:
            rgba[..., 3] = foreground_alpha(rgba[..., :3])
        rgba = frame_foreground(rgba, foreground_ratio)
    return composite_on_gray(rgba)


def frame_foreground(rgba: np.ndarray, ratio: float) -> np.ndarray:
    """The reference's resize_foreground: crop to the alpha > 0 box, pad to a square, pad to int(side / ratio).

    The reference crops rows ymin:ymax and columns xmin:xmax with the maxima exclusive, dropping the last
    foreground row and column. We keep that on purpose: the model was trained on images made this way, and it
    keeps us pixel-identical to the reference (tests/fixtures/triposr_tiny/preprocessed.png).
    """
    rows = np.flatnonzero((rgba[..., 3] > 0).any(axis=1))
    cols = np.flatnonzero((rgba[..., 3] > 0).any(axis=0))
    if rows.size == 0:
        raise InputError("No foreground found: every pixel is transparent after background removal. Use an "
                         "image with a plain background or with transparency around the object.")
    crop = rgba[rows[0]:rows[-1], cols[0]:cols[-1]]
    if max(crop.shape[:2]) < MIN_FOREGROUND or not crop[..., 3].any():
        raise InputError(f"The foreground is only {rows[-1] - rows[0] + 1}×{cols[-1] - cols[0] + 1} pixels: too "
                         "small to reconstruct. Use an image in which the object is larger.")
    side = max(crop.shape[:2])
    square = _pad_centred(crop, side)
    new_side = int(side / ratio)
    if new_side > 2 * MAX_SIDE:  # a tiny ratio: shrink the foreground first so the padded image stays bounded
        factor = math.ceil(new_side / (2 * MAX_SIDE))
        if side // factor < MIN_FOREGROUND:
            raise InputError(f"foreground_ratio {ratio} would leave the object only a few pixels wide. Use a "
                             f"ratio {FOREGROUND_RATIO.span()} ({FOREGROUND_RATIO.default} is the usual).")
        square = _shrink(square, factor)
        side = square.shape[0]
        new_side = int(side / ratio)
    return _pad_centred(square, new_side)


def composite_on_gray(rgba: np.ndarray) -> np.ndarray:
    """rgb·a + (1 − a)·0.5 in float32, quantised to uint8 by truncation as run.py saves it, back to [0, 1]."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    composite = rgb * alpha + (1 - alpha) * 0.5
    return (composite * 255.0).astype(np.uint8).astype(np.float32) / 255.0


def _pad_centred(image: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad (transparent black) to side × side; an odd remainder goes to the bottom/right, as the reference."""
    top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
    padded = np.zeros((side, side, image.shape[2]), image.dtype)
    padded[top:top + image.shape[0], left:left + image.shape[1]] = image
    return padded


# ---- loading: anything a user hands us → float32 RGBA (H, W, 4), straight alpha, longest side ≤ MAX_SIDE ----

def load_rgba(image) -> np.ndarray:
    """A path, PIL image or numpy array → float32 RGBA (H, W, 4) in [0, 1], longest side ≤ MAX_SIDE."""
    if isinstance(image, (str, os.PathLike)):
        return _rgba_from_file(Path(image))
    if isinstance(image, Image.Image):
        return _rgba_from_pil(image, "The image")
    if isinstance(image, np.ndarray):
        return _rgba_from_array(image)
    raise InputError(f"Cannot use a {type(image).__name__} as an image: pass a file path, a PIL image or a "
                     "numpy array.")


def check_image_file(path) -> None:
    """The checks that need no decoding: the file exists, can be read and holds a format this module reads.
    Raises InputError with the message loading would give; a damaged file's body is found only when loaded."""
    path = Path(path)
    _check_file_head(path)
    try:
        with _opened(path):
            pass
    except Image.DecompressionBombError as err:
        raise InputError(_too_large_message(path, err)) from err
    except UnidentifiedImageError as err:
        raise InputError(_unreadable_message(path)) from err
    except OSError as err:
        raise InputError(f"Cannot read the image file {path}: {err.strerror or err}.") from err


@contextlib.contextmanager
def _opened(path: Path):
    """Pillow's image of the file, not yet decoded, once its size is known to be usable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as pil:
            _check_size(pil.width, pil.height, str(path))
            yield pil


def _too_large_message(path: Path, error) -> str:
    return (f"{path} is too large to open safely ({error}). Scale it down to at most {MAX_SIDE} px on the longest "
            "side in an image editor.")


def _unreadable_message(path: Path) -> str:
    return (f"{path} is not an image file that can be read (PNG, JPEG, TIFF, WebP, BMP and GIF work). Check that "
            "it is an image, or convert it to PNG.")


def _check_file_head(path: Path) -> None:
    if not path.exists():
        raise InputError(f"Image file not found: {path}. Check the path.")
    if not path.is_file():
        raise InputError(f"{path} is not a file. Choose an image file (PNG, JPEG, TIFF, WebP, BMP, ...).")
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError as err:
        raise InputError(f"Cannot read the image file {path}: {err.strerror or err}.") from err
    if head.startswith(_EXR_MAGIC) or path.suffix.lower() == ".exr" or head.startswith(_HDR_MAGICS):
        raise InputError(f"{path} is an HDR image (OpenEXR/Radiance), which cannot be read here. Save it as PNG or "
                         "16-bit TIFF, or open it in Blender and generate from the Blender image.")


def _rgba_from_file(path: Path) -> np.ndarray:
    _check_file_head(path)
    try:
        with _opened(path) as pil:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly; a no-op for other formats
            pil.draft(None, _shrunk_size(pil.width, pil.height))
            return _rgba_from_pil(pil, str(path))
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(_too_large_message(path, err)) from err
    except UnidentifiedImageError as err:
        raise InputError(_unreadable_message(path)) from err
    except DECODING_ERRORS as err:
        raise InputError(f"The image file {path} is damaged or incomplete and cannot be read ({err}). Re-export "
                         "or re-download it.") from err


def _rgba_from_pil(pil: Image.Image, name: str) -> np.ndarray:
    _check_size(pil.width, pil.height, name)
    try:
        pil = ImageOps.exif_transpose(pil)  # a phone's portrait photo stands upright, as every viewer shows it
        if pil.mode in _SIXTEEN_BIT_MODES:
            pil = pil.convert("I")
        elif pil.mode not in _KEPT_MODES:
            pil = pil.convert(_MODE_CONVERSIONS.get(pil.mode, "RGBA"))
        target = _shrunk_size(pil.width, pil.height)
        if target != pil.size:
            pil = pil.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        pixels = np.asarray(pil)
    except DECODING_ERRORS as err:  # Pillow decodes lazily: a damaged file fails here
        raise InputError(f"{name} cannot be decoded ({err}). Re-export it as PNG or JPEG.") from err
    if pil.mode == "I":  # 16-bit gray (PNG/TIFF) arrives as int32
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
    _check_size(pixels.shape[1], pixels.shape[0], name, pixel_limit=False)
    return _unit_rgba(pixels)


def _rgba_from_array(array: np.ndarray) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and not 1 <= array.shape[2] <= 4):
        raise InputError(f"An image array must be (H, W) or (H, W, C) with C = 1 to 4 channels, got shape "
                         f"{array.shape}.")
    if not (array.dtype in (np.uint8, np.uint16, np.bool_) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"An image array must be uint8, uint16 or float, got {array.dtype}. Convert it first.")
    _check_size(array.shape[1], array.shape[0], "The image", pixel_limit=False)  # already in memory
    width, height = _shrunk_size(array.shape[1], array.shape[0])
    if (width, height) == (array.shape[1], array.shape[0]):
        return _unit_rgba(array)
    factor = math.ceil(max(array.shape[:2]) / MAX_SIDE)
    rows_per_band = max(1, (1 << 22) // (factor * factor * array.shape[1]))  # ~64 MB float32 RGBA per band
    bands = [_shrink(_unit_rgba(array[row * factor:(row + rows_per_band) * factor]), factor)
             for row in range(0, array.shape[0] // factor, rows_per_band)]
    return np.concatenate(bands)


def _check_size(width: int, height: int, name: str, pixel_limit: bool = True) -> None:
    if pixel_limit and width * height > MAX_PIXELS:
        raise InputError(f"{name} is {width}×{height} px ({width * height / 1e6:.0f} megapixels), more than the "
                         f"{MAX_PIXELS // 1_000_000} megapixels this tool opens. Scale it down to at most "
                         f"{MAX_SIDE} px on the longest side first (the model works at 512×512).")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name} is {width}×{height} px, too small: at least {MIN_SIDE} px on each side is "
                         "needed (512 px or more gives good results).")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"{name} is {width}×{height} px, too elongated (more than {MAX_ASPECT}:1). Crop it "
                         "around the object.")


def _shrunk_size(width: int, height: int) -> tuple[int, int]:
    scale = MAX_SIDE / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _unit_rgba(pixels: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / bool / float pixels with 1–4 channels → float32 RGBA in [0, 1], straight alpha."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype == np.uint8:
        values = pixels.astype(np.float32) / 255.0  # as the reference: bit-identical for uint8 inputs
    elif pixels.dtype == np.uint16:
        values = pixels.astype(np.float32) / 65535.0
    elif pixels.dtype == np.bool_:
        values = pixels.astype(np.float32)
    else:
        values = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
        values = np.clip(values, 0.0, 1.0).astype(np.float32)
    rgba = np.ones(pixels.shape[:2] + (4,), np.float32)
    channels = pixels.shape[2]
    rgba[..., :3] = values[..., :1] if channels <= 2 else values[..., :3]
    if channels in (2, 4):
        rgba[..., 3] = values[..., -1]
    return rgba


def _shrink(rgba: np.ndarray, factor: int) -> np.ndarray:
    """Box-downscale float32 RGBA by an integer factor, averaging premultiplied colour so that the colour under
    transparent pixels does not bleed into the edge."""
    alpha = rgba[..., 3]
    mean_alpha = _box_mean(alpha, factor)
    shrunk = np.empty(mean_alpha.shape + (4,), np.float32)
    shrunk[..., 3] = mean_alpha
    for channel in range(3):  # plane by plane: several times faster than reducing the interleaved array
        premultiplied = _box_mean(rgba[..., channel] * alpha, factor)
        shrunk[..., channel] = np.divide(premultiplied, mean_alpha, out=np.zeros_like(premultiplied),
                                         where=mean_alpha > 0)
    return np.clip(shrunk, 0.0, 1.0, out=shrunk)


def _box_mean(plane: np.ndarray, factor: int) -> np.ndarray:
    height, width = plane.shape[0] // factor, plane.shape[1] // factor
    blocks = plane[:height * factor, :width * factor].reshape(height, factor, width, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)
