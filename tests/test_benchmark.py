"""The benchmark's one command runs and prints its table (on the tiny fixture, so in seconds; not timed)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_prints_the_comparison_table(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--model", str(tiny_model_dir),
         "--resolution", "32", "--hires", "48", "--repeat", "2"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in ("load model (mmap)", "image → scene codes", "density grid", "marching cubes", "vertex colours",
                "mesh extraction total", "image → mesh, smooth field (32³, no load)",
                "peak memory, load + image → scene codes", "peak memory, image → mesh, smooth field 32³"):
        assert row in table, row
    verdicts = re.findall(r"^-- (\w+) field at 32³: .*; (.*)$", table, re.MULTILINE)
    assert [field for field, _ in verdicts] == ["image", "smooth", "busy"]
    for _, verdict in verdicts:
        assert verdict.startswith("identical counts, max |Δv| = 0.0e+00") or verdict.endswith("nothing else"), verdict
    smooth = table[table.index("-- smooth field"):]
    dense_evaluations, fast_evaluations = (int(n.replace(",", "")) for n in
                                           re.search(r"MLP evaluations\s+([\d,]+)\s+([\d,]+)", smooth).groups())
    assert fast_evaluations < dense_evaluations
    assert "best of 2 per path" in smooth
    assert re.search(r"smooth field at 48³, fast path only: [\d,]+ faces; extraction [\d.]+ s", table)
    ratios = re.findall(r"density evaluations ÷ surface grid points +([\d.]*) +([\d.]+) +\(([\d,]+) grid points",
                        table)
    assert len(ratios) == 4 and all(float(fast) > 0 and int(points.replace(",", "")) > 0 for _, fast, points in ratios)
    assert all(float(dense) > float(fast) for dense, fast, _ in ratios[1:3]) and ratios[3][0] == ""
