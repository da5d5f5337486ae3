"""The tested Blender matrix: each Linux zip installed into each Blender release it is built for, generating a mesh.

    python scripts/blender_matrix.py [--work-dir DIR] [--python3.11 PATH] [--python3.13 PATH] [--torch-source SRC]

For each release in RELEASES (the newest of each Blender line on PyPI):
  1. a virtual environment in the work folder (outside the repository, reused while its pins hold) with that
     release's bpy module and the NumPy that Blender ships (scripts/package.py's pin for its line), nothing else:
     in Blender the extension's bundled wheels are the only other packages;
  2. the zip of its line, built into dist/ by scripts/package.py as `make package` builds it;
  3. scripts/install_and_generate.py in that environment with a clean Blender user folder: Blender's own extension
     install, the add-on enabled, one mesh from the tiny test model (tests/fixtures/triposr_tiny) at resolution 32.
Prints one row per release and exits 1 unless every release made the mesh this checkout's core makes.

Where a line's zip cannot be built for want of its CPU torch wheel (Linux, Python 3.13, no PyTorch CPU index in
reach), the line is tested with a zip built without torch (kept in the work folder, not dist/), the worker running
in this Python as the add-on's External Python: that tests the add-on in that Blender, not the bundled torch.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import package  # noqa: E402  (scripts/package.py: the Blender lines and their pins)

REPO_ROOT = package.REPO_ROOT
TINY_MODEL = REPO_ROOT / "tests" / "fixtures" / "triposr_tiny"
INSTALL_AND_GENERATE = REPO_ROOT / "scripts" / "install_and_generate.py"
# The bpy release tested for each Blender line: the newest patch of each line on PyPI.
RELEASES = {"4.2.23": "4.2", "4.5.15": "4.5-5.0", "5.0.1": "4.5-5.0", "5.2.3": "5.2"}
PLATFORM = "linux-x64"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "image_to_mesh" / "blender-matrix",
                        help="where the per-release environments and logs live")
    parser.add_argument("--python3.11", dest="python311", default="python3.11")
    parser.add_argument("--python3.13", dest="python313", default="python3.13")
    parser.add_argument("--torch-source", default=os.environ.get("TORCH_SOURCE") or None)
    args = parser.parse_args(argv)
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        print("the Blender matrix runs on Linux x86-64 (the bpy wheels it installs are built for it)", file=sys.stderr)
        return 1
    interpreters = {"3.11": args.python311, "3.13": args.python313}
    for release, line in RELEASES.items():
        low, high = package.BLENDER_LINES[line].version_min, package.BLENDER_LINES[line].version_max
        assert version(low) <= version(release) < version(high), f"bpy {release} is outside its line {line}"

    started = time.monotonic()
    expected = reference_mesh()
    zips = {line: build_zip(line, args.torch_source, args.work_dir) for line in dict.fromkeys(RELEASES.values())}
    rows = []
    for release, line in RELEASES.items():
        print(f"--- Blender {release}", flush=True)
        rows.append(run_release(release, line, zips[line], interpreters, args.work_dir, expected))
    print_table(rows, expected)
    for line, (_, note) in zips.items():
        if note:
            print(f"* Blender {line}: {note}")
    print(f"Blender matrix: {time.monotonic() - started:.0f} s")
    return 0 if all(row["passed"] for row in rows) else 1


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def reference_mesh() -> tuple[int, int]:
    """(vertices, faces) that this checkout's core makes of the tiny model's input at resolution 32 with the panel's
    Output defaults (floaters removed, the face limit, a texture baked with the bundled xatlas), as the add-on does."""
    sys.path.insert(0, str(REPO_ROOT))
    from core import GenerateSettings, generate, load_model
    from core.asset import DEFAULT_FACE_LIMIT, DEFAULT_TEXTURE_SIZE

    settings = GenerateSettings(resolution=32, remove_floaters=True, face_limit=DEFAULT_FACE_LIMIT,
                                texture_size=DEFAULT_TEXTURE_SIZE)
    mesh = generate(load_model(TINY_MODEL, device="cpu"), TINY_MODEL / "input.png", settings)
    return len(mesh.vertices), len(mesh.faces)


def build_zip(line: str, torch_source, work_dir: Path) -> tuple[Path, str | None]:
    """The line's zip in dist/ or, where it had to be built without torch, that test build in the work folder and
    why."""
    command = [sys.executable, str(REPO_ROOT / "scripts" / "package.py"), "--platforms", PLATFORM,
               "--blender-lines", line, *(["--torch-source", torch_source] if torch_source else [])]
    print(f"--- building the zip for Blender {line}", flush=True)
    full = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if full.returncode == 0:
        return built_zip(full.stdout), None
    if full.returncode != package.EXIT_TORCH_UNAVAILABLE:
        raise SystemExit(f"could not build the zip for Blender {line}:\n{full.stdout}{full.stderr}")
    # "make package: not built: <platform>, Blender <line>: could not download <torch> for ... . Give ..."
    reason = full.stderr.strip().splitlines()[-1].split(": ", 3)[-1].split(". ")[0]
    print(reason, flush=True)
    bare = subprocess.run([*command, "--without-torch", "--output-dir", str(work_dir / "zips")], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    if bare.returncode != 0:
        raise SystemExit(f"could not build the zip for Blender {line} without torch:\n{bare.stdout}{bare.stderr}")
    return built_zip(bare.stdout), f"zip built without torch, worker on an External Python ({reason})"


def built_zip(package_output: str) -> Path:
    (name,) = [line.split()[1] for line in package_output.splitlines() if line.startswith("built ")]
    return REPO_ROOT / name  # package.py names it relative to the repository, or absolute


def run_release(release, line, zip_and_note, interpreters, work_dir: Path, expected) -> dict:
    zip_path, note = zip_and_note
    blender = package.BLENDER_LINES[line]
    numpy_version = package.line_pins(blender)["numpy"]
    row = {"release": release, "bpy": release, "numpy": numpy_version, "zip": zip_path.name, "passed": False}
    with zipfile.ZipFile(zip_path) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    row["range"] = f"{manifest['blender_version_min']} - <{manifest['blender_version_max']}"

    started = time.monotonic()
    try:
        python = environment(work_dir / f"bpy-{release}", interpreters[blender.python], blender.python,
                             [f"bpy=={release}", f"numpy=={numpy_version}"])
    except RuntimeError as error:
        row.update(result=f"FAIL: {error}", seconds=time.monotonic() - started)
        return row
    row["setup_seconds"] = time.monotonic() - started

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"blender-{release}-") as scratch:
        out = Path(scratch) / "result.json"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(BLENDER_USER_RESOURCES=str(Path(scratch) / "user"), IMAGE_TO_MESH_MODEL=str(TINY_MODEL))
        command = [str(python), str(INSTALL_AND_GENERATE), str(zip_path), str(TINY_MODEL / "input.png"), str(out),
                   *(["--external-python", sys.executable] if note else [])]
        completed = subprocess.run(command, env=env, cwd=scratch, capture_output=True, text=True, timeout=1800)
        log = work_dir / f"bpy-{release}" / "last-run.log"
        log.write_text(completed.stdout + completed.stderr)
        result = json.loads(out.read_text()) if out.exists() else {"error": f"no result (exit {completed.returncode})"}
        user_extensions = Path(scratch) / "user" / "extensions"
        row.update(check(result, user_extensions, expected, bundled_torch=note is None))
    row["seconds"] = time.monotonic() - started
    row["numpy"] = result.get("numpy", numpy_version)
    row["python"] = result.get("python", "?")
    if not row["passed"]:
        print(f"Blender {release} failed; its output ({log}) ends:\n{(completed.stdout + completed.stderr)[-4000:]}")
    return row


def check(result: dict, user_extensions: Path, expected, bundled_torch: bool) -> dict:
    """PASS when the extension installed and enabled from the user folder, generated the reference mesh and, unless
    torch was left out, Blender's Python found torch and scikit-image in the extension's unpacked wheels."""
    if "error" in result:
        return {"result": f"FAIL: {result['error']}", "passed": False}
    files = result["files"]
    wheel_folder = user_extensions / ".local"
    problems = []
    if not Path(files["extension"]).is_relative_to(user_extensions / "user_default" / "image_to_mesh"):
        problems.append(f"extension imported from {files['extension']}")
    for name in ("torch", "skimage", "scipy", "PIL") if bundled_torch else ("skimage", "scipy", "PIL"):
        if files[name] is None or not Path(files[name]).is_relative_to(wheel_folder):
            problems.append(f"{name} from {files[name]}")
    mesh = (result["vertices"], result["faces"])
    if mesh != expected:
        problems.append(f"mesh {mesh[0]} vertices / {mesh[1]} faces")
    if problems:
        return {"result": "FAIL: " + "; ".join(problems), "passed": False}
    worker = "bundled torch" if bundled_torch else "external torch*"
    return {"result": f"PASS ({worker})", "passed": True}


def environment(folder: Path, interpreter: str, python_version: str, requirements: list[str]) -> Path:
    """A virtual environment with exactly these requirements (and what they need), made once and reused."""
    python = folder / "venv" / "bin" / "python"
    stamp = folder / "venv" / "matrix-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if shutil.which(interpreter) is None and not Path(interpreter).is_file():
        raise RuntimeError(f"Python {python_version} not found as {interpreter!r} (give it with --python{python_version})")
    shutil.rmtree(folder / "venv", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([interpreter, "-m", "venv", str(folder / "venv")], check=True)
    found = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True).stdout.strip()
    if found != python_version:
        raise RuntimeError(f"{interpreter} is Python {found}, not {python_version}")
    print(f"installing {' '.join(requirements)} into {folder / 'venv'}", flush=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
                                "--only-binary=:all:", *requirements], capture_output=True, text=True)
    if installed.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{installed.stderr[-2000:]}")
    stamp.write_text(wanted)
    return python


def print_table(rows: list[dict], expected):
    header = ["Blender (bpy)", "Python", "NumPy", "zip", "zip's Blender range", "result", "setup s", "run s"]
    lines = [[row["bpy"], row.get("python", "?"), row["numpy"], row["zip"], row.get("range", "?"), row["result"],
              f"{row.get('setup_seconds', 0):.0f}", f"{row.get('seconds', 0):.0f}"] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    print(f"\nInstalled zip -> generate (tiny model, resolution 32, Output defaults; reference mesh {expected[0]} "
          f"vertices, {expected[1]} faces):")
    for cells in [header, ["-" * width for width in widths], *lines]:
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |")


if __name__ == "__main__":
    sys.exit(main())
