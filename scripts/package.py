"""Build the installable extension zip(s) with Blender's own extension tool.

For each platform and Blender line (BLENDER_LINES): download the runtime wheels (requirements/extension.txt and
what they need, resolved against the NumPy that Blender line ships, which is never bundled), stage the checkout's
files, write a build copy of blender_manifest.toml listing the wheels and that line's Blender versions, then build
(leaving out what the manifest's paths_exclude_pattern lists) and validate with blender_ext.py from the bpy wheel.
The zips land in dist/.

    python scripts/package.py --platforms linux-x64 windows-x64 macos-arm64 --blender-lines 4.2 4.5-5.0 5.2

The CPU torch wheel for Linux is not on PyPI (PyPI's Linux torch is the CUDA build, gigabytes): by default
pip's own configuration is tried first (a find-links folder or mirror that holds torch==X+cpu), then
PyTorch's CPU index. --torch-source (or TORCH_SOURCE) names a folder of wheels or an index URL instead.
"""

import argparse
import email.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Blender's Python already has these; bundling them would shadow or duplicate its own copies.
SHIPPED_WITH_BLENDER = {"numpy", "requests", "urllib3", "certifi", "idna", "charset_normalizer", "zstandard", "cython"}
# Torch declares setuptools for building C++ extensions at run time, which the extension never does.
NOT_NEEDED_AT_RUNTIME = {"setuptools"}

PIP_PLATFORMS = {
    "linux-x64": [f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)] + ["manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64"],  # pip widens a macOS tag to every older release
}


@dataclass(frozen=True)
class BlenderLine:
    """Blender releases one zip serves: their Python, the manifest's version range (max exclusive: exactly the
    releases scripts/blender_matrix.py tests), and the pins that differ from requirements/constraints.txt so the
    bundled packages work with the NumPy those releases ship (the numpy pin itself is never bundled)."""
    python: str
    version_min: str
    version_max: str
    pins: dict = field(default_factory=dict)


BLENDER_LINES = {
    # Blender 4.2 LTS ships NumPy 1.24.3; SciPy 1.16 and later need NumPy >= 1.25.2.
    "4.2": BlenderLine("3.11", "4.2.0", "4.3.0", {"numpy": "1.24.3", "scipy": "1.15.3"}),
    # Blender 4.5 LTS and 5.0 ship NumPy 1.26.4: the versions the tests run with.
    "4.5-5.0": BlenderLine("3.11", "4.5.0", "5.1.0"),
    # Blender 5.2 LTS ships Python 3.13 and NumPy 2.3.4.
    "5.2": BlenderLine("3.13", "5.2.0", "5.3.0", {"numpy": "2.3.4"}),
}



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platforms", nargs="+", default=["linux-x64"], choices=sorted(PIP_PLATFORMS))
    parser.add_argument("--blender-lines", nargs="+", default=list(BLENDER_LINES), choices=list(BLENDER_LINES))
    parser.add_argument("--without-torch", action="store_true",
                        help="leave torch out (a test build: the add-on then needs an External Python with torch)")
    parser.add_argument("--torch-source", default=os.environ.get("TORCH_SOURCE") or None,
                        help="folder of wheels or package index URL for the CPU torch wheel")
    parser.add_argument("--wheel-cache", type=Path, default=REPO_ROOT / ".whl", help="downloaded wheels are kept here")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "dist")
    args = parser.parse_args(argv)

    zips, failed = [], []
    for line in args.blender_lines:
        for platform in args.platforms:
            try:
                zips.append(build(platform, line, args))
            except BuildError as error:
                failed.append((f"{platform}, Blender {line}", error))
    for path in zips:
        print(f"built {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}"
              f" ({path.stat().st_size / 1e6:.0f} MB)")
    for what, error in failed:
        print(f"make package: not built: {what}: {error}", file=sys.stderr)
    if failed and all(isinstance(error, TorchUnavailable) for _, error in failed):
        return EXIT_TORCH_UNAVAILABLE
    return 1 if failed else 0


class BuildError(Exception):
    pass


class TorchUnavailable(BuildError):
    """The CPU torch wheel for that platform and Python could not be had from any source tried."""


# make package's exit status when every zip it could not build lacked only its torch wheel.
EXIT_TORCH_UNAVAILABLE = 3


def build(platform: str, line: str, args) -> Path:
    blender = BLENDER_LINES[line]
    tag = f"{platform}-blender{line}{'-without-torch' if args.without_torch else ''}"
    print(f"--- {tag}: downloading wheels", flush=True)
    wheel_dir = args.wheel_cache / tag
    wheels = download_wheels(platform, blender, wheel_dir, None if args.without_torch else args.torch_source,
                             with_torch=not args.without_torch)

    stage = REPO_ROOT / "build" / tag
    shutil.rmtree(stage, ignore_errors=True)
    copy_extension_files(stage)
    (stage / "wheels").mkdir()
    for wheel in wheels:
        link_or_copy(wheel, stage / "wheels" / wheel.name)
    write_build_manifest(stage, platform, blender, [f"./wheels/{w.name}" for w in wheels])

    print(f"--- {tag}: building the zip", flush=True)
    out_dir = REPO_ROOT / "build" / f"{tag}-zip"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    extension_tool("build", "--source-dir", str(stage), "--output-dir", str(out_dir), "--split-platforms")
    built = sorted(out_dir.glob("*.zip"))
    if len(built) != 1:
        raise BuildError(f"expected one zip for {tag}, the extension tool wrote {[p.name for p in built]}")
    extension_tool("validate", str(built[0]))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    final = args.output_dir / f"{built[0].stem}-{tag.removeprefix(platform + '-')}.zip"
    shutil.move(built[0], final)
    shutil.rmtree(out_dir)
    return final


def download_wheels(platform: str, blender: BlenderLine, wheel_dir: Path, torch_source, with_torch=True) -> list[Path]:
    """Every wheel the extension needs on that platform and Blender line, minus the modules Blender ships.

    pip download evaluates dependency markers (platform_system == "Linux", ...) for the machine it runs on, not
    for --platform: so torch's own dependencies are given explicitly, and the result is closed over the
    dependencies that apply to the target platform (adding what pip skipped, dropping what it added for this host).
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    python_version = blender.python
    environment = target_environment(platform, python_version)
    requirements = read_requirements(REPO_ROOT / "requirements" / "extension.txt")
    torch_spec = requirements.pop("torch")
    constraints = ["-c", str(write_line_constraints(blender, wheel_dir / "constraints.txt"))]
    torch_wheels, torch_dependencies = [], []
    if with_torch:
        torch_wheels = [download_torch(platform, python_version, wheel_dir, torch_spec, torch_source)]
        torch_dependencies = [f"{r.name}{r.specifier}" for r in wheel_dependencies(torch_wheels[0], environment)]

    # The versions the tests ran with, numpy as that Blender ships it (resolved against, never bundled).
    resolved = pip_download(platform, python_version, wheel_dir,
                            [*requirements.values(), *torch_dependencies, *constraints])
    wheels = {normalize(project_name(w)): w for w in [*torch_wheels, *resolved]}
    roots = ["torch", *requirements] if with_torch else list(requirements)
    for _ in range(5):
        needed, missing = dependency_closure(roots, wheels, environment)
        if not missing:
            break
        for wheel in pip_download(platform, python_version, wheel_dir, [*sorted(missing.values()), *constraints]):
            wheels.setdefault(normalize(project_name(wheel)), wheel)
    else:
        raise BuildError(f"could not complete the dependencies for {platform}: {sorted(missing)}")
    return sorted((wheels[name] for name in needed if name not in SHIPPED_WITH_BLENDER | NOT_NEEDED_AT_RUNTIME),
                  key=lambda wheel: wheel.name.lower())


def line_pins(blender: BlenderLine) -> dict[str, str]:
    """Exact versions for that Blender line: requirements/constraints.txt with the line's own pins over it."""
    pins = {}
    for line in (REPO_ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalize(name)] = version
    return pins | {normalize(name): version for name, version in blender.pins.items()}


def write_line_constraints(blender: BlenderLine, path: Path) -> Path:
    path.write_text("".join(f"{name}=={version}\n" for name, version in line_pins(blender).items()))
    return path


def target_environment(platform: str, python_version: str) -> dict[str, str]:
    """Marker values (PEP 508) of Blender's Python on that platform."""
    system, sys_platform, machine = {
        "linux-x64": ("Linux", "linux", "x86_64"),
        "windows-x64": ("Windows", "win32", "AMD64"),
        "macos-arm64": ("Darwin", "darwin", "arm64"),
    }[platform]
    return {
        "python_version": python_version, "python_full_version": f"{python_version}.0",
        "platform_system": system, "sys_platform": sys_platform, "platform_machine": machine,
        "os_name": "nt" if system == "Windows" else "posix", "implementation_name": "cpython",
        "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
        "implementation_version": f"{python_version}.0", "extra": "",
    }


def wheel_dependencies(wheel: Path, environment: dict) -> list:
    """The wheel's Requires-Dist entries that apply on the target (no extras)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        metadata = email.parser.BytesParser().parsebytes(archive.read(metadata_name), headersonly=True)
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def dependency_closure(roots, wheels: dict[str, Path], environment) -> tuple[list[str], dict[str, str]]:
    """Names reachable from the roots on the target, and the requirements no downloaded wheel satisfies yet."""
    needed, missing, todo = [], {}, [normalize(name) for name in roots]
    while todo:
        name = todo.pop()
        if name in needed or name in missing:
            continue
        if name not in wheels:
            missing[name] = name
            continue
        needed.append(name)
        for requirement in wheel_dependencies(wheels[name], environment):
            dependency = normalize(requirement.name)
            if dependency not in wheels and dependency not in SHIPPED_WITH_BLENDER:
                missing[dependency] = f"{requirement.name}{requirement.specifier}"  # the marker held on the target
            else:
                todo.append(dependency)
    return needed, missing


def project_name(wheel: Path) -> str:
    return wheel.name.split("-")[0]


def download_torch(platform, python_version, wheel_dir, spec, torch_source) -> Path:
    """The CPU build of torch: PyPI has it for Windows and macOS; Linux needs the +cpu build."""
    if platform.startswith("linux"):
        spec += "+cpu"
    attempts = []
    if torch_source:
        source = Path(torch_source)
        attempts.append(["--no-index", "--find-links", str(source)] if source.is_dir() else ["--index-url", torch_source])
    else:
        attempts.append([])  # pip's configuration: PyPI plus any find-links / mirror set up on this machine
        if platform.startswith("linux"):
            attempts.append(["--index-url", PYTORCH_CPU_INDEX])
    for extra in attempts:
        try:
            return pip_download(platform, python_version, wheel_dir, [spec], ["--no-deps", *extra], quiet=True)[0]
        except BuildError:
            continue
    raise TorchUnavailable(
        f"could not download {spec} for {platform}, Python {python_version}. Give a folder holding the wheel or a "
        f"package index with it: make package TORCH_SOURCE=/path/to/wheels (or TORCH_SOURCE={PYTORCH_CPU_INDEX})."
    )


def pip_download(platform, python_version, dest: Path, requirements, extra_args=(), quiet=False) -> list[Path]:
    """Download (or find already downloaded) the wheels; returns the files pip resolved."""
    abi = "cp" + python_version.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", "--abi", abi,
        "--abi", "abi3", "--abi", "none", "--dest", str(dest),
        *[arg for tag in PIP_PLATFORMS[platform] for arg in ("--platform", tag)],
        *extra_args, *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        if not quiet:
            print(result.stdout + result.stderr, file=sys.stderr)
        raise BuildError(f"pip download failed for {platform}, Python {python_version}")
    # pip says "Saved <path>" or "File was already downloaded <path>" once per resolved file.
    found = re.findall(r"^\s*(?:Saved|File was already downloaded) (.+\.whl)\s*$", result.stdout, re.MULTILINE)
    wheels = [Path(path) for path in dict.fromkeys(found)]
    if not wheels or not all(wheel.is_file() for wheel in wheels):
        raise BuildError(f"pip download reported no usable wheels for {platform}:\n{result.stdout}")
    return wheels


def read_requirements(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {normalize(line.split("==")[0]): line for line in lines if line}


def normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def copy_extension_files(stage: Path):
    """The checkout's files (tracked and new, as git sees them). Blender's extension tool then leaves out the
    development ones: blender_manifest.toml's paths_exclude_pattern is the one list of them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    if listed.returncode == 0:
        files = [Path(p) for p in listed.stdout.split("\0") if p]
    else:  # not a git checkout: take everything that is not hidden
        files = [p.relative_to(REPO_ROOT) for p in REPO_ROOT.rglob("*")
                 if p.is_file() and not p.relative_to(REPO_ROOT).parts[0].startswith(".")]
    for relative in files:
        source = REPO_ROOT / relative
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def write_build_manifest(stage: Path, platform: str, blender: BlenderLine, wheels: list[str]):
    manifest = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())
    manifest["wheels"] = wheels
    manifest["platforms"] = [platform]
    manifest["blender_version_min"] = blender.version_min
    manifest["blender_version_max"] = blender.version_max
    (stage / "blender_manifest.toml").write_text(to_toml(manifest))


def to_toml(data: dict) -> str:
    """TOML for the manifest's shapes: strings, lists of strings, one level of tables."""
    def value(v):
        if isinstance(v, list):
            return "[\n" + "".join(f"  {json.dumps(item)},\n" for item in v) + "]" if v else "[]"
        return json.dumps(v)  # a JSON string, bool or number is valid TOML

    lines = [f"{key} = {value(v)}" for key, v in data.items() if not isinstance(v, dict)]
    for table, entries in ((k, v) for k, v in data.items() if isinstance(v, dict)):
        lines += ["", f"[{table}]"] + [f"{key} = {value(v)}" for key, v in entries.items()]
    return "\n".join(lines) + "\n"


def extension_tool(*args: str):
    command = [sys.executable, str(bpy_scripts() / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"), *args,
               "--valid-tags", str(bpy_scripts() / "modules" / "_bpy_internal" / "extensions" / "tags.py")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"Blender's extension tool failed ({' '.join(args[:1])}):\n{result.stdout}{result.stderr}")


def bpy_scripts() -> Path:
    """Blender's scripts folder inside the installed bpy wheel, found without importing bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise BuildError("the bpy module is not installed in this Python: run make package (it sets up .venv)")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise BuildError(f"Blender's extension tool is not in {Path(spec.origin).parent}")
    return found[-1].parents[3]


def link_or_copy(source: Path, target: Path):
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


if __name__ == "__main__":
    sys.exit(main())
