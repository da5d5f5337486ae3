"""The README's first picture: an example image (left) and what `make demo` makes of it offline, with the bundled
demo model (right: its Cycles render).

    .venv/bin/python scripts/readme_picture.py      # → docs/demo_model.png (runs scripts/demo.py --offline)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "examples" / "mushroom.png"
OUTPUT = REPO / "docs" / "demo_model.png"
HEIGHT = 320


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--offline", "--model",
                        str(REPO / "models" / "demo"), "--image", str(IMAGE), "--out-dir", folder,
                        "--render-size", str(HEIGHT)], check=True)
        render = Image.open(Path(folder) / f"{IMAGE.stem}.png").convert("RGBA")
    picture = Image.open(IMAGE).convert("RGBA")
    picture = picture.resize((round(picture.width * HEIGHT / picture.height), HEIGHT), Image.LANCZOS)
    render = render.resize((round(render.width * HEIGHT / render.height), HEIGHT), Image.LANCZOS)
    sheet = Image.new("RGBA", (picture.width + 8 + render.width, HEIGHT), (255, 255, 255, 255))
    sheet.alpha_composite(picture, (0, 0))
    sheet.alpha_composite(render, (picture.width + 8, 0))
    sheet.convert("RGB").save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
