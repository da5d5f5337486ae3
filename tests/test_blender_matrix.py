"""The Blender matrix and the zips agree: every zip's Blender range is tested by at least one release of the matrix
(scripts/blender_matrix.py, run by `make blender-matrix`), every release falls in exactly one zip's range, and no
Blender version is claimed by two zips."""

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


def test_every_zip_range_is_tested_by_the_matrix_and_ranges_do_not_overlap():
    matrix = load("blender_matrix")
    lines = matrix.package.BLENDER_LINES
    version = matrix.version

    tested = {line: [] for line in lines}
    for release in matrix.RELEASES:
        holding = [line for line, b in lines.items() if version(b.version_min) <= version(release) < version(b.version_max)]
        assert holding == [matrix.RELEASES[release]], release
        tested[holding[0]].append(release)
    assert all(tested.values()), tested

    ranges = sorted((version(b.version_min), version(b.version_max)) for b in lines.values())
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:])), ranges


def test_a_line_takes_the_tested_versions_but_its_own_pins():
    package = load("package")
    tested = package.line_pins(package.BLENDER_LINES["4.5-5.0"])  # no pins of its own: requirements/constraints.txt
    assert (tested["numpy"], tested["scipy"], tested["torch"]) == ("1.26.4", "1.17.1", "2.13.0")
    blender_42 = package.line_pins(package.BLENDER_LINES["4.2"])
    assert {name: v for name, v in blender_42.items() if tested[name] != v} == {"numpy": "1.24.3", "scipy": "1.15.3"}
