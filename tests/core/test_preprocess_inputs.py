"""Every kind of picture a user can hand prepare_image, written to real files with Pillow: it works or raises
InputError with a message that says what to do."""

import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import InputError, prepare_image
from core.preprocess import MAX_SIDE, MIN_SIDE, load_rgba

BACKGROUND, OBJECT = (235, 235, 240), (200, 40, 30)


def object_on_plain_background(width=160, height=120) -> Image.Image:
    """A red ellipse on a light plain background; its bounding box is known."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=OBJECT)
    return image


def with_transparency(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).ellipse((image.width // 4, image.height // 4, 3 * image.width // 4,
                                   3 * image.height // 4), fill=255)
    rgba.putalpha(alpha)
    return rgba


def assert_model_input(out: np.ndarray) -> None:
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] == out.shape[1]
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def assert_ellipse_framed(out: np.ndarray, colour=OBJECT, tolerance=0.12) -> None:
    """The object fills the middle (ratio 0.85 → the foreground spans ~85 % of the side), gray at the corners."""
    assert_model_input(out)
    side = out.shape[0]
    centre = out[side // 2, side // 2]
    np.testing.assert_allclose(centre, np.float32(colour) / 255, atol=tolerance)
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
        np.testing.assert_allclose(corner, 0.5, atol=0.01)
    not_gray = np.abs(out - 127 / 255).max(axis=-1) > 0.05
    rows, cols = np.flatnonzero(not_gray.any(axis=1)), np.flatnonzero(not_gray.any(axis=0))
    assert 0.75 < max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / side < 0.9


@pytest.mark.parametrize("suffix, options", [
    (".png", {}), (".jpg", {"quality": 95}), (".tif", {}), (".webp", {"lossless": True}), (".bmp", {}),
    (".gif", {}), (".tiff", {"compression": "tiff_lzw"}), (".webp", {"quality": 90})])
def test_rgb_formats_go_through_background_removal(tmp_path, suffix, options):
    path = tmp_path / f"object{suffix}"
    object_on_plain_background().save(path, **options)
    assert_ellipse_framed(prepare_image(path), tolerance=0.15)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_rgba_formats_use_their_alpha(tmp_path, suffix):
    path = tmp_path / f"cutout{suffix}"
    image = with_transparency(object_on_plain_background())
    image.save(path, **({"lossless": True} if suffix == ".webp" else {}))
    out = prepare_image(path)
    assert_ellipse_framed(out)
    assert out.shape == prepare_image(image).shape


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "I;16", "I", "P"])
def test_modes_without_transparency(tmp_path, mode):
    image = object_on_plain_background()
    if mode == "1":
        image = image.convert("L").point(lambda v: 255 if v > 150 else 0).convert("1")
    elif mode in ("I;16", "I"):
        image = Image.fromarray((np.asarray(image.convert("L")).astype(np.uint16) * 257))
        image = image if mode == "I;16" else image.convert("I")
    else:
        image = image.convert(mode)
    path = tmp_path / f"object_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'tif' if mode == 'I' else 'png'}"
    image.save(path)
    out = prepare_image(path)
    assert_model_input(out)
    centre, corner = out[out.shape[0] // 2, out.shape[1] // 2], out[0, 0]
    np.testing.assert_allclose(corner, 0.5, atol=0.01)
    assert np.abs(centre - 0.5).max() > 0.05  # the object, not background


def test_sixteen_bit_keeps_its_precision(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    rgba = load_rgba(tmp_path / "ramp16.png")
    np.testing.assert_allclose(rgba[0, :, 0], ramp[0] / 65535, atol=1e-6)


def test_palette_with_transparency_and_gray_alpha(tmp_path):
    palette = object_on_plain_background().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    background_index = palette.getpixel((0, 0))  # the background's palette entry is the transparent one
    for suffix in (".png", ".gif"):
        palette.save(tmp_path / f"palette{suffix}", transparency=background_index)
        assert_ellipse_framed(prepare_image(tmp_path / f"palette{suffix}"), tolerance=0.15)

    gray_alpha = with_transparency(object_on_plain_background()).convert("LA")
    gray_alpha.save(tmp_path / "gray_alpha.png")
    out = prepare_image(tmp_path / "gray_alpha.png")
    assert_model_input(out)
    assert np.allclose(out[out.shape[0] // 2, out.shape[1] // 2], np.asarray(gray_alpha)[60, 80, 0] / 255,
                       atol=0.01)


def test_non_square_inputs_give_the_same_framing(tmp_path):
    wide, tall = object_on_plain_background(400, 100), object_on_plain_background(100, 400)
    for image in (wide, tall):
        assert_ellipse_framed(prepare_image(image), tolerance=0.15)


def test_lazily_opened_pil_image_of_the_caller_is_not_changed(tmp_path):
    object_on_plain_background(3000, 2400).save(tmp_path / "photo.jpg")
    with Image.open(tmp_path / "photo.jpg") as photo:
        assert_ellipse_framed(prepare_image(photo), tolerance=0.15)
        assert photo.size == (3000, 2400) and photo.mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    image = object_on_plain_background(200, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgba = load_rgba(tmp_path / "phone.jpg")
    assert rgba.shape[:2] == (200, 100)


@pytest.mark.parametrize("size", [(8, 8), (MIN_SIDE - 1, 200), (200, 3)])
def test_tiny_images_are_refused(tmp_path, size):
    Image.new("RGB", size, OBJECT).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small"):
        prepare_image(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small"):
        prepare_image(np.zeros(size[::-1] + (3,), np.uint8))


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(InputError, match="elongated"):
        prepare_image(np.zeros((20, 5000, 3), np.uint8))


def test_smallest_allowed_image_works():
    image = np.full((MIN_SIDE, MIN_SIDE, 4), 255, np.uint8)
    image[:3, :, 3] = 0
    assert_model_input(prepare_image(image))


def test_huge_png_is_downscaled_before_any_float_conversion(tmp_path):
    # 12000 × 12000 mostly-uniform gray PNG (144 megapixels, above Pillow's own bomb warning), a dark disc
    # in the middle; written cheaply at the lowest compression.
    path = tmp_path / "huge.png"
    huge = Image.new("L", (12000, 12000), 230)
    ImageDraw.Draw(huge).ellipse((3000, 4000, 9000, 8000), fill=40)
    huge.save(path, compress_level=1)
    del huge

    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not reach the user
        rgba = load_rgba(path)
        out = prepare_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert max(rgba.shape[:2]) == MAX_SIDE
    # numpy memory only (Pillow's decode buffer is its own): a float32 RGBA copy of the full picture would be
    # 2.3 GB; the working copies at 2048 px are 64 MB each.
    assert peak < 600e6, f"peak numpy memory {peak / 1e6:.0f} MB"
    assert_model_input(out)
    assert np.allclose(out[out.shape[0] // 2, out.shape[1] // 2], 40 / 255, atol=0.01)


def test_huge_array_is_downscaled_in_bands():
    huge = np.full((6200, 4000, 3), 230, np.uint8)
    huge[2000:4000, 1000:3000] = (30, 60, 90)
    tracemalloc.start()
    rgba = load_rgba(huge)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rgba.shape == (6200 // 4, 4000 // 4, 4)  # box factor ceil(6200 / 2048) = 4
    assert peak < 250e6, f"peak numpy memory {peak / 1e6:.0f} MB"  # whole-picture float RGBA: 397 MB
    np.testing.assert_allclose(rgba[750, 500], (30 / 255, 60 / 255, 90 / 255, 1.0), atol=1e-6)
    np.testing.assert_allclose(rgba[100, 100], (230 / 255, 230 / 255, 230 / 255, 1.0), atol=1e-6)


@pytest.mark.parametrize("side, message", [(12500, r"156 megapixels\), more than the 150"),  # our own limit
                                           (16000, "too large to open safely")])  # Pillow's, wrapped
def test_too_many_pixels_is_refused_before_decoding(tmp_path, side, message):
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # a few kB on disk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=f"bomb.png.*{message}"):
            prepare_image(path)


def test_fully_transparent_is_refused(tmp_path):
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(tmp_path / "empty.png")
    for remove_background in (True, False):
        with pytest.raises(InputError, match="fully transparent"):
            prepare_image(tmp_path / "empty.png", remove_background=remove_background)


@pytest.mark.parametrize("colour", [(128, 128, 128), (0, 0, 0), (255, 255, 255)])
def test_uniform_image_has_no_foreground(tmp_path, colour):
    Image.new("RGB", (64, 48), colour).save(tmp_path / "uniform.jpg")
    with pytest.raises(InputError, match="No foreground found.*plain background.*transparency"):
        prepare_image(tmp_path / "uniform.jpg")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="not found.*nothere.png"):
        prepare_image(tmp_path / "nothere.png")
    with pytest.raises(InputError, match="not a file"):
        prepare_image(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, this is text, not pixels\n" * 20, bytes(range(256)) * 4])
def test_not_an_image_is_named(tmp_path, content):
    (tmp_path / "notes.png").write_bytes(content)
    with pytest.raises(InputError, match="notes.png"):
        prepare_image(tmp_path / "notes.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"])
def test_truncated_file_is_named(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), np.uint8)  # incompressible
    Image.fromarray(noise).save(full)
    data = full.read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=f"broken\\{suffix}.*(damaged|cannot be)"):
        prepare_image(broken)


def test_corrupt_bytes_inside_a_png_are_named(tmp_path):
    path = tmp_path / "corrupt.png"
    object_on_plain_background().save(path)
    data = bytearray(path.read_bytes())
    data[60:90] = b"\xff" * 30  # inside the first IDAT chunk: zlib/CRC error
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt.png"):
        prepare_image(path)


def test_exr_gets_a_clear_message(tmp_path):
    path = tmp_path / "render.exr"
    path.write_bytes(b"v/1\x01" + bytes(200))  # OpenEXR magic number and a bare header
    with pytest.raises(InputError, match="render.exr.*OpenEXR.*PNG.*Blender"):
        prepare_image(path)
    renamed = tmp_path / "render.png"  # the magic number, not the name, decides
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(InputError, match="OpenEXR"):
        prepare_image(renamed)


@pytest.mark.parametrize("value", [None, 3, [[1, 2], [3, 4]], b"\x89PNG"])
def test_unsupported_python_objects_are_refused(value):
    with pytest.raises(InputError, match="file path, a PIL image or a numpy array"):
        prepare_image(value)


@pytest.mark.parametrize("array", [
    np.zeros((32, 32, 5), np.uint8), np.zeros((32, 32, 0), np.uint8), np.zeros((2, 32, 32, 3), np.uint8),
    np.zeros(32, np.uint8), np.zeros((32, 32, 3), np.int64), np.zeros((32, 32, 3), complex)])
def test_unusable_arrays_are_refused(array):
    with pytest.raises(InputError, match="image array"):
        prepare_image(array)


def test_float_arrays_are_clipped_and_cleaned():
    image = np.full((64, 64, 3), 0.9, np.float64)
    image[16:48, 16:48] = (4.0, -1.0, 0.2)  # HDR red-ish: clipped to (1, 0, 0.2)
    image[0, 0] = np.nan
    image[0, 1] = np.inf
    out = prepare_image(image)
    assert_model_input(out)
    np.testing.assert_allclose(out[out.shape[0] // 2, out.shape[1] // 2], (1.0, 0.0, 0.2), atol=1 / 255)


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float16, np.bool_])
def test_array_layouts_and_dtypes(channels, dtype):
    full = {np.uint8: 255, np.uint16: 65535, np.bool_: True}.get(dtype, 1.0)
    shape = (48, 64) if channels is None else (48, 64, channels)
    image = np.zeros(shape, dtype)
    image[12:36, 16:48] = full  # a white box on black (opaque where alpha is the last channel)
    out = prepare_image(image)
    assert_model_input(out)
    np.testing.assert_allclose(out[out.shape[0] // 2, out.shape[1] // 2], 1.0, atol=1 / 255)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the address space size from /proc (Linux)")
def test_running_out_of_memory_while_decoding_is_not_called_a_damaged_file(tmp_path):
    """A valid 8000×8000 PNG decoded with 32 MB of address space to spare: a MemoryError, not 'damaged'."""
    import subprocess
    from pathlib import Path

    path = tmp_path / "big.png"
    Image.new("L", (8000, 8000), 128).save(path)
    code = f"""
import resource
from core.preprocess import load_rgba
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (32 << 20), resource.RLIM_INFINITY))
try:
    load_rgba({str(path)!r})
except BaseException as error:
    print(type(error).__name__)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "MemoryError", result.stdout + result.stderr


def test_a_bug_while_decoding_is_not_called_a_damaged_file(tmp_path, monkeypatch):
    from PIL import ImageOps

    path = tmp_path / "fine.png"
    object_on_plain_background().save(path)

    def broken(image):
        raise AttributeError("'NoneType' object has no attribute 'getexif'")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with pytest.raises(AttributeError, match="getexif"):
        load_rgba(path)
