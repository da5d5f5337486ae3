"""Orientation proven with a hand-painted model (no training needed), and Cycles renders of results from
Blender's Front view showing the object's colours."""

import math

import bpy
import numpy as np
import pytest
from mathutils import Vector

from tests.blender import crafted_model as shape
from tests.blender.support import FIXTURE_DIR, INPUT_PNG

CURSOR = (2.0, -1.0, 0.5)


@pytest.fixture(scope="module")
def crafted_dir(tmp_path_factory):
    return shape.write_crafted_model(FIXTURE_DIR, tmp_path_factory.mktemp("crafted_model"))


@pytest.fixture
def crafted_object(crafted_dir, monkeypatch):
    monkeypatch.setenv("IMAGE_TO_MESH_MODEL", str(crafted_dir))
    bpy.context.scene.cursor.location = CURSOR
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=64) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def local_vertices(obj):
    coordinates = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", coordinates)
    return coordinates.reshape(-1, 3)


def test_nose_faces_the_front_view_arm_points_right_hat_up(crafted_object):
    assert tuple(crafted_object.location) == pytest.approx(CURSOR)
    assert crafted_object.rotation_euler[:] == (0.0, 0.0, 0.0) and crafted_object.scale[:] == (1.0, 1.0, 1.0)
    v = local_vertices(crafted_object)
    x, y, z = v.T
    reach = shape.BODY + 0.12  # clearly outside the body cube
    texel = 2 * shape.RADIUS / 16

    nose = v[y < -reach]  # TripoSR +X (toward its camera) → Blender -Y (toward the Front view's camera)
    arm = v[x > reach]  # TripoSR +Y (image right) → Blender +X (right in the Front view)
    hat = v[z > reach]  # up stays up
    assert len(nose) > 20 and len(arm) > 20 and len(hat) > 20
    assert y.min() == pytest.approx(-shape.NOSE_TIP, abs=texel)
    assert x.max() == pytest.approx(shape.ARM_TIP, abs=texel)
    assert z.max() == pytest.approx(shape.HAT_TIP, abs=texel)
    for part, (a, b) in ((nose, (0, 2)), (arm, (1, 2)), (hat, (0, 1))):  # each part is thin across the others
        assert np.abs(part[:, [a, b]]).max() < shape.HAT_HALF_WIDTH + texel
    # Nothing sticks out of the body on the other sides.
    assert y.max() < reach and x.min() > -reach and z.min() > -reach

    colors = np.empty(len(v) * 4, np.float32)
    crafted_object.data.color_attributes["Color"].data.foreach_get("color_srgb", colors)
    colors = colors.reshape(-1, 4)[:, :3]
    nose_tip, arm_tip = colors[y < -shape.NOSE_TIP + 0.1], colors[x > shape.ARM_TIP - 0.1]
    np.testing.assert_allclose(nose_tip.mean(0), shape.COLOURS["nose"], atol=0.05)
    np.testing.assert_allclose(arm_tip.mean(0), shape.COLOURS["arm"], atol=0.05)


def render_front(obj, path, *, size=(320, 240)):
    """Cycles on the CPU, orthographic camera looking from -Y (Blender's Front view), transparent film."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"

    world = bpy.data.worlds.new("White light")  # even light from every side keeps the colours' hues
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    scene.world = world
    camera = bpy.data.objects.new("Front camera", bpy.data.cameras.new("Front camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 2.0
    camera.location = obj.location + Vector((0.0, -5.0, 0.15))
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along +Y, image-right = +X
    bpy.context.collection.objects.link(camera)
    scene.camera = camera

    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), np.float32) / 255.0


def test_render_of_the_crafted_object_shows_nose_in_front_and_arm_on_the_right(crafted_object, output_dir):
    pixels = render_front(crafted_object, output_dir / "crafted_front.png")
    height, width = pixels.shape[:2]
    alpha = pixels[..., 3]
    assert 0.05 < (alpha > 0.5).mean() < 0.6  # an object, not an empty or a filled frame

    def mean_colour(column, row):  # world offsets from the object's origin → pixel (ortho scale 2 over width)
        px = int(width / 2 + column * width / 2)
        py = int(height / 2 - (row - 0.15) * width / 2)
        patch = pixels[py - 2:py + 3, px - 2:px + 3]
        assert (patch[..., 3] > 0.9).all(), (column, row)
        return patch[..., :3].mean(axis=(0, 1))

    nose = mean_colour(0.0, 0.0)  # the nose points at the camera: red in the middle of the body
    arm = mean_colour(0.6, 0.0)  # the arm reaches to image-right
    hat = mean_colour(0.0, 0.55)
    assert nose[0] > 2 * nose[1] and nose[0] > 2 * nose[2]
    assert arm[1] > 2 * arm[0] and arm[1] > 2 * arm[2]
    assert abs(hat[0] - hat[1]) < 0.1 and hat.min() > 0.3  # white-grey body colour
    assert (alpha[:, : int(width * 0.25)] < 0.5).all()  # nothing on the left: the arm is on the right only


def test_render_of_a_generated_object_shows_its_vertex_colours(output_dir):
    assert bpy.ops.image_to_mesh.generate(filepath=str(INPUT_PNG), resolution=64) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    pixels = render_front(obj, output_dir / "fixture_front.png")
    covered = pixels[..., 3] > 0.99
    assert covered.mean() > 0.2
    rendered = pixels[covered][:, :3].mean(0)

    colors = np.empty(len(obj.data.vertices) * 4, np.float32)
    obj.data.color_attributes["Color"].data.foreach_get("color_srgb", colors)
    vertex_mean = colors.reshape(-1, 4)[:, :3].mean(0)
    # The tiny model's colours are purple-grey (red and blue above green); a plain grey material would give
    # equal channels, and the transparent background none at all.
    assert vertex_mean[0] - vertex_mean[1] > 0.03 and vertex_mean[2] - vertex_mean[1] > 0.03
    assert rendered[0] - rendered[1] > 0.02 and rendered[2] - rendered[1] > 0.02
