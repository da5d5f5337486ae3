"""Pixels of Blender images reach the model as top-row-first display sRGB with straight alpha, whatever the
buffer: byte or float, sRGB, linear or non-colour, packed or generated, 16-bit files."""

import bpy
import numpy as np
import pytest
from PIL import Image

from tests.blender.support import INPUT_PNG


def srgb_to_linear(srgb):
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def blender_image(pixels_top_first, *, float_buffer=False, colorspace=None):
    height, width = pixels_top_first.shape[:2]
    image = bpy.data.images.new("test", width, height, alpha=True, float_buffer=float_buffer)
    if colorspace:
        image.colorspace_settings.name = colorspace
    image.pixels.foreach_set(np.ascontiguousarray(pixels_top_first[::-1]).ravel())
    return image


@pytest.fixture
def srgb_pixels():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (5, 7, 4)).astype(np.float32) / 255.0
    pixels[..., 3] = 1.0
    pixels[0, 0] = (1.0, 0.0, 0.0, 1.0)  # top-left red: catches a missing row flip
    return pixels


def test_byte_srgb_image_is_passed_as_is_top_row_first(ext, srgb_pixels):
    out = ext.image_source.image_pixels(blender_image(srgb_pixels))
    assert out.shape == (5, 7, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, srgb_pixels, atol=1e-6)


def test_float_linear_image_is_converted_to_srgb(ext, srgb_pixels):
    linear = srgb_pixels.copy()
    linear[..., :3] = srgb_to_linear(srgb_pixels[..., :3])
    out = ext.image_source.image_pixels(blender_image(linear, float_buffer=True))
    np.testing.assert_allclose(out, srgb_pixels, atol=1e-4)


def test_float_image_alpha_is_unpremultiplied(ext):
    premultiplied = np.array([[[0.1, 0.2, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    out = ext.image_source.image_pixels(blender_image(premultiplied, float_buffer=True, colorspace="Non-Color"))
    np.testing.assert_allclose(out[0, 0], [0.2, 0.4, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0, 0.0, 0.0])


def test_byte_image_in_linear_colour_space_is_converted(ext, srgb_pixels):
    linear = srgb_pixels.copy()
    linear[..., :3] = np.round(srgb_to_linear(srgb_pixels[..., :3]) * 255) / 255
    out = ext.image_source.image_pixels(blender_image(linear, colorspace="Linear Rec.709"))
    np.testing.assert_allclose(out[..., :3], srgb_pixels[..., :3], atol=0.05)  # 8-bit linear is coarse
    assert np.abs(out[..., :3] - linear[..., :3]).max() > 0.1  # i.e. it was converted


def test_non_colour_byte_image_is_passed_raw(ext, srgb_pixels):
    out = ext.image_source.image_pixels(blender_image(srgb_pixels, colorspace="Non-Color"))
    np.testing.assert_allclose(out, srgb_pixels, atol=1e-6)


def test_sixteen_bit_png_matches_the_8_bit_original(ext, tmp_path):
    original = np.asarray(Image.open(INPUT_PNG).convert("RGBA"), np.float32) / 255.0
    source = bpy.data.images.load(str(INPUT_PNG))
    assert len(source.pixels)  # loads the buffer
    path = tmp_path / "deep16.png"
    settings = bpy.context.scene.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGBA", "16"
    bpy.context.scene.view_settings.view_transform = "Standard"  # save_render applies the view transform
    source.save_render(str(path), scene=bpy.context.scene)
    deep = bpy.data.images.load(str(path))
    assert deep.is_float  # Blender keeps 16-bit PNGs in float buffers
    out = ext.image_source.image_pixels(deep)
    opaque = original[..., 3] > 0.99
    np.testing.assert_allclose(out[opaque], original[opaque], atol=2.5 / 255)


def test_generated_image_works_end_to_end():
    image = bpy.data.images.new("Checker", 128, 128, alpha=False)
    image.generated_type = "COLOR_GRID"
    result = bpy.ops.image_to_mesh.generate(image=image.name, resolution=32, remove_background=False)
    assert result == {"FINISHED"}
    assert [o.name for o in bpy.data.objects] == ["Checker"]
