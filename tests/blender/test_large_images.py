"""A huge Blender image reaches the worker downscaled to MAX_SIDE, read with bounded memory, and the user's image
is left exactly as it was (size, pixels, unsaved edits, file path) with no temporary image left behind."""

import hashlib
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image

from core.preprocess import MAX_SIDE
from tests.blender.support import data_names
from tests.procfs import linux_only

WIDTH, HEIGHT = 5000, 3000  # 15 MP: as float32 RGBA 240 MB, the size a full read would hand on
FULL_FLOAT_MB = WIDTH * HEIGHT * 4 * 4 / 2**20


def rss_mb() -> tuple[float, float]:
    """(current, peak since the last reset) resident memory of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak():
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) restarts from the current RSS


def halves(width, height) -> np.ndarray:
    """Left half red, right half blue, top rows green: catches a flip or a swapped axis after downscaling."""
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., 3] = 255
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2:, 2] = 255
    pixels[: height // 10] = (0, 255, 0, 255)
    return pixels


def fingerprint(image) -> tuple:
    buffer = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(buffer)
    return (tuple(image.size), image.is_dirty, image.filepath, image.source, hashlib.sha256(buffer).hexdigest())


def assert_halves(out, width, height):
    assert out.dtype == np.float32 and out.shape[2] == 4
    assert MAX_SIDE // 2 < max(out.shape[:2]) <= MAX_SIDE  # scaled to fit, or by a whole factor
    assert abs(out.shape[1] / out.shape[0] - width / height) < 0.01
    rows, columns = out.shape[:2]
    np.testing.assert_allclose(out[rows // 2, 5], (1, 0, 0, 1), atol=0.02)
    np.testing.assert_allclose(out[rows // 2, -5], (0, 0, 1, 1), atol=0.02)
    np.testing.assert_allclose(out[2, columns // 2], (0, 1, 0, 1), atol=0.02)


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.fromarray(halves(WIDTH, HEIGHT)).save(path, compress_level=1)
    return path


@linux_only
def test_huge_image_from_a_file_is_scaled_in_blender_and_left_untouched(ext, huge_png):
    image = bpy.data.images.load(str(huge_png))
    before, names = fingerprint(image), data_names()
    assert not before[1]  # a file image without unsaved edits: the bounded path
    current, _ = rss_mb()
    reset_peak()

    request = ext.generate.build_request(bpy.context, image=image.name)

    _, peak = rss_mb()
    assert_halves(request.image, WIDTH, HEIGHT)
    # Only Blender's own temporary copy (4 bytes a pixel here) and the small result: far less than one float read.
    print(f"file image {WIDTH}x{HEIGHT}: peak RSS grew {peak - current:.0f} MB (a float read: {FULL_FLOAT_MB:.0f} MB)")
    assert peak - current < 0.6 * FULL_FLOAT_MB, f"peak grew {peak - current:.0f} MB"
    assert fingerprint(image) == before
    assert data_names() == names  # the temporary copy is gone
    assert bpy.data.images[image.name] == image and len(bpy.data.images) == len(names["images"])


@linux_only
def test_huge_image_with_unsaved_edits_keeps_them_and_is_shrunk(ext):
    image = bpy.data.images.new("Painted", WIDTH, HEIGHT, alpha=True)
    image.pixels.foreach_set((halves(WIDTH, HEIGHT)[::-1].astype(np.float32) / 255).ravel())
    before, names = fingerprint(image), data_names()
    assert before[1]  # its pixels exist only in memory: a copy would lose them
    current, _ = rss_mb()
    reset_peak()

    out = ext.image_source.image_pixels(image)

    _, peak = rss_mb()
    assert_halves(out, WIDTH, HEIGHT)
    # One read of the buffer is unavoidable (bpy has no partial read); no full-size temporaries beside it.
    print(f"edited image {WIDTH}x{HEIGHT}: peak RSS grew {peak - current:.0f} MB (a float read: {FULL_FLOAT_MB:.0f} MB)")
    assert peak - current < 1.4 * FULL_FLOAT_MB, f"peak grew {peak - current:.0f} MB"
    assert fingerprint(image) == before
    assert data_names() == names


def test_huge_image_generates(huge_png):
    image = bpy.data.images.load(str(huge_png))
    assert bpy.ops.image_to_mesh.generate(image=image.name, resolution=32, remove_background=False) == {"FINISHED"}
    assert [o.name for o in bpy.data.objects] == ["huge"]
    assert not image.is_dirty and tuple(image.size) == (WIDTH, HEIGHT)
