"""The installable extension zip: built with Blender's extension tool, free of development files, carrying its
wheels, and working once installed — in a Python that, like Blender's own, has bpy and numpy but no torch.

Marked `package` (about a minute and a half): skip it locally with `-m "not package"`; `make test` runs it.
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.blender.support import extension_files

pytestmark = pytest.mark.package

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE_PACKAGES = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# What Blender's bundled Python has besides the standard library (the bpy wheel's own dependencies).
BLENDER_PYTHON_MODULES = ["bpy", "numpy", "numpy.libs", "requests", "urllib3", "certifi", "idna",
                          "charset_normalizer", "zstandard", "Cython", "cython.py"]


@pytest.fixture(scope="module")
def linux_zip(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "package.py"), "--platforms", "linux-x64",
         "--blender-lines", "4.5-5.0", "--output-dir", str(out_dir)],
        check=True, cwd=REPO_ROOT,
    )
    (zip_path,) = out_dir.glob("*.zip")
    return zip_path


def test_zip_holds_the_extension_and_its_wheels_but_no_development_files(linux_zip):
    with zipfile.ZipFile(linux_zip) as archive:
        names = archive.namelist()
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())

    assert {name for name in names if not name.startswith("wheels/")} == extension_files()

    wheels = sorted(name for name in names if name.startswith("wheels/"))
    assert sorted(w.removeprefix("./") for w in manifest["wheels"]) == wheels
    wheel_projects = {Path(w).name.split("-")[0].lower() for w in wheels}
    assert {"torch", "scikit_image", "scipy", "pillow", "huggingface_hub", "pyyaml", "fast_simplification", "xatlas",
            "trimesh"} <= wheel_projects
    assert "numpy" not in wheel_projects  # Blender ships its own
    (torch_wheel,) = [w for w in wheels if Path(w).name.startswith("torch-")]
    assert "+cpu" in torch_wheel and "cp311" in torch_wheel and "x86_64" in torch_wheel
    assert all(("linux" in w or "manylinux" in w or w.endswith("-none-any.whl") or "abi3" in w) for w in wheels)

    assert manifest["id"] == "image_to_mesh"
    assert manifest["platforms"] == ["linux-x64"]
    # The releases this zip is tested in (scripts/blender_matrix.py): 4.5 LTS and 5.0; 4.2 and 5.1+ have their own.
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.5.0", "5.1.0")


def test_zip_passes_blender_validation(linux_zip):
    scripts = SITE_PACKAGES / "bpy" / "5.0" / "scripts"
    result = subprocess.run(
        [sys.executable, str(scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"), "validate",
         str(linux_zip), "--valid-tags", str(scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def blender_like_python(root: Path) -> Path:
    """A virtual environment holding only what Blender's Python has (bpy, numpy, requests, ...): torch and the
    other runtime packages can come only from the extension's bundled wheels."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site_packages = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name in BLENDER_PYTHON_MODULES:
        if (SITE_PACKAGES / name).exists():
            (site_packages / name).symlink_to(SITE_PACKAGES / name)
    return root / "bin" / "python"


def test_installed_zip_generates_a_mesh_with_its_bundled_wheels(linux_zip, tmp_path, tiny_model_dir):
    python = blender_like_python(tmp_path / "blender-python")
    user_resources = tmp_path / "blender-user"
    out = tmp_path / "result.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(BLENDER_USER_RESOURCES=str(user_resources), IMAGE_TO_MESH_MODEL=str(tiny_model_dir))
    unpacked = subprocess.run(
        [str(python), "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert unpacked.returncode != 0, "the Blender-like Python must not see the test environment's torch"

    completed = subprocess.run(
        [str(python), str(REPO_ROOT / "scripts" / "install_and_generate.py"), str(linux_zip),
         str(tiny_model_dir / "input.png"), str(out)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["install"] == ["FINISHED"] and result["enabled"] and result["generate"] == ["FINISHED"]
    installed = user_resources / "extensions"
    assert Path(result["files"]["extension"]).is_relative_to(installed / "user_default" / "image_to_mesh")
    for name in ("torch", "skimage", "scipy", "PIL"):
        assert Path(result["files"][name]).is_relative_to(installed / ".local"), name
    # The installed copy made the same mesh as this checkout's core does with the same input and settings (the
    # panel's Output defaults: floaters removed, face limit, a texture baked with the bundled xatlas).
    from core import GenerateSettings, generate, load_model
    from core.asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE

    expected = generate(load_model(tiny_model_dir, device="cpu"), tiny_model_dir / "input.png",
                        GenerateSettings(resolution=32, remove_floaters=True, face_limit=DEFAULT_FACE_LIMIT,
                                         texture_size=DEFAULT_TEXTURE_SIZE))
    assert len(expected.vertices) > 0
    assert (result["vertices"], result["faces"]) == (len(expected.vertices), len(expected.faces))
