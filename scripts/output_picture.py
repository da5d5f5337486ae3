"""The README's Output picture: one object at 20,000 faces with vertex colours (left) and with a 1024² texture
baked from the field (right), rendered with Cycles from the Front view. The model is the hand-painted checker
field of tests/blender/crafted_model.py (no trained weights needed).

    .venv/bin/python scripts/output_picture.py      # → docs/output_vertex_colours_vs_texture.png
"""

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "output_vertex_colours_vs_texture.png"


def main() -> int:
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="image_to_mesh_picture_")
    sys.path.insert(0, str(REPO))
    import bpy
    import numpy as np
    from PIL import Image

    from scripts.dev_extension import enable_from_checkout
    from tests.blender import crafted_model
    from tests.blender.test_orientation_and_render import render_front

    fixture = REPO / "tests" / "fixtures" / "triposr_tiny"
    with tempfile.TemporaryDirectory() as folder:
        model = crafted_model.write_crafted_model(fixture, Path(folder) / "checker", checker=True, plane_size=16)
        os.environ["IMAGE_TO_MESH_MODEL"] = str(model)
        enable_from_checkout(REPO)
        halves = []
        for texture_size in (0, 1024):
            bpy.ops.wm.read_homefile(use_empty=True)
            bpy.ops.image_to_mesh.generate(filepath=str(fixture / "input.png"), resolution=160,
                                           texture_size=texture_size, face_limit=20000)
            obj = bpy.context.active_object
            obj.rotation_euler = (0.35, 0.0, 0.6)  # show the top's checker and two sides' stripes
            pixels = render_front(obj, Path(folder) / f"{texture_size}.png", size=(400, 400))
            halves.append(np.round(pixels * 255).astype(np.uint8))
    Image.fromarray(np.concatenate(halves, axis=1)).save(OUTPUT)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
