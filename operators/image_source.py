"""Read a picture for the model: pixels of a bpy.types.Image as display sRGB, or a file on disk."""

import math
from pathlib import Path

import bpy
import numpy as np

from ..core.errors import InputError
from ..core.settings import MAX_SIDE


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, None)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) float32 RGBA, top row first, straight alpha, colours in display sRGB; longest side at most
    MAX_SIDE (the model works at 512 px), so a huge image never becomes a huge float array here or in the worker."""
    value_count = len(image.pixels)  # loads the image's buffer if needed
    width, height = image.size
    if value_count == 0 or width * height == 0 or value_count != width * height * image.channels:
        raise InputError(
            f"The image '{image.name}' has no pixels (its file may be missing: '{image.filepath}'). "
            "Open the image again or choose another one."
        )
    if max(width, height) > MAX_SIDE and not image.is_dirty:
        return _scaled_copy_pixels(image)
    pixels = _buffer(image)
    factor = math.ceil(max(width, height) / MAX_SIDE)
    if factor > 1:  # unsaved edits live only in this buffer: read it once, shrink it at once
        pixels = _box_shrink(pixels, factor)
    return _display_rgba(pixels, image)


def _scaled_copy_pixels(image: bpy.types.Image) -> np.ndarray:
    """Scale a temporary copy inside Blender (a copy reloads the file, packed data or generator, at the buffer's
    own bytes per pixel) and read that; the user's image is not touched and the copy is removed."""
    width, height = image.size
    scale = MAX_SIDE / max(width, height)
    copy = image.copy()
    try:
        copy.scale(max(1, round(width * scale)), max(1, round(height * scale)))
        return _display_rgba(_buffer(copy), copy)
    finally:
        bpy.data.images.remove(copy)


def _buffer(image: bpy.types.Image) -> np.ndarray:
    """The raw float buffer as (H, W, channels), top row first (Blender stores the bottom row first)."""
    width, height = image.size
    buffer = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, image.channels)[::-1]


def _box_shrink(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Average factor×factor blocks, a band of rows at a time so that no full-size temporary is made."""
    height, width, channels = pixels.shape[0] // factor, pixels.shape[1] // factor, pixels.shape[2]
    out = np.empty((height, width, channels), dtype=np.float32)
    rows = max(1, (1 << 20) // (factor * factor * width))
    for row in range(0, height, rows):
        band = pixels[row * factor:(row + rows) * factor, :width * factor]
        out[row:row + rows] = band.reshape(-1, factor, width, factor, channels).mean(axis=(1, 3))
    return out


def _display_rgba(pixels: np.ndarray, image: bpy.types.Image) -> np.ndarray:
    height, width, channels = pixels.shape
    rgba = np.ones((height, width, 4), dtype=np.float32)
    if channels >= 3:
        rgba[..., :3] = pixels[..., :3]
    else:
        rgba[..., :3] = pixels[..., :1]
    if channels in (2, 4):
        rgba[..., 3] = pixels[..., -1]

    is_data = image.colorspace_settings.is_data
    if image.is_float:
        # Float buffers hold premultiplied, scene-linear colour (raw values for non-colour data).
        alpha = rgba[..., 3:4]
        rgba[..., :3] = np.where(alpha > 0.0, rgba[..., :3] / np.maximum(alpha, 1e-8), 0.0)
        if not is_data:
            rgba[..., :3] = linear_to_srgb(rgba[..., :3])
    elif not is_data and "linear" in image.colorspace_settings.name.lower():
        rgba[..., :3] = linear_to_srgb(rgba[..., :3])
    return np.clip(rgba, 0.0, 1.0, out=rgba)


def file_pixels_via_blender(path: Path) -> np.ndarray:
    """For formats Pillow lacks (EXR, HDR, ...): load with Blender, read, and remove the datablock again."""
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as error:
        raise InputError(f"Cannot read the image file '{path}': {error}. Use a PNG, JPEG, TIFF, WebP or EXR.") from None
    try:
        return image_pixels(image)
    finally:
        bpy.data.images.remove(image)


def checked_file(filepath: str) -> Path:
    path = Path(bpy.path.abspath(filepath)).expanduser()
    if not path.is_file():
        raise InputError(f"The image file '{path}' does not exist. Check the path or choose another image.")
    return path


def object_name_for(source_name: str) -> str:
    stem = Path(source_name).stem if Path(source_name).suffix.lower() in IMAGE_SUFFIXES else source_name
    return stem or "Image Mesh"


IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".exr", ".bmp", ".tga", ".hdr", ".gif", ".jp2", ".dpx",
}
