"""Read a picture for the model: pixels of a bpy.types.Image as display sRGB, or a file on disk."""

from pathlib import Path

import bpy
import numpy as np

from ..core.errors import InputError


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, None)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) float32 RGBA, top row first, straight alpha, colours in display sRGB."""
    value_count = len(image.pixels)  # loads the image's buffer if needed
    width, height = image.size
    channels = image.channels
    pixel_count = width * height
    if value_count == 0 or pixel_count == 0 or value_count != pixel_count * channels:
        raise InputError(
            f"The image '{image.name}' has no pixels (its file may be missing: '{image.filepath}'). "
            "Open the image again or choose another one."
        )
    buffer = np.empty(pixel_count * channels, dtype=np.float32)
    image.pixels.foreach_get(buffer)
    pixels = buffer.reshape(height, width, channels)[::-1]  # Blender stores the bottom row first.
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


def pillow_can_read(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


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
