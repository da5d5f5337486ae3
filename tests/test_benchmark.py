"""The benchmark's one command runs and prints its table (on the tiny fixture, so in seconds; not timed)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {extra}\n\n"


def run_benchmark(model, tmp_path, native: bool, *options) -> str:
    """bench.py's table, on a CPU whose flags say it has native bfloat16 or not (whatever this one has)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra="avx512f avx512_bf16" if native else ""))
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--model", str(model), "--resolution", "32",
         "--cpuinfo", str(cpuinfo), *options], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_benchmark_prints_the_comparison_table(tiny_model_dir, tmp_path):
    table = run_benchmark(tiny_model_dir, tmp_path, False, "--hires", "48", "--repeat", "2")
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

    # Without native bfloat16: the measured reason the encode stays float32 (bfloat16 emulated is slower).
    reason = re.search(r"^native bfloat16: no \(avx512_bf16 or amx_bf16 not in the CPU flags\); a bfloat16 product "
                       r"at the triplane transformer's feed-forward shape \(1024 × 64 → 256\) takes ([\d.]+)× the "
                       r"float32 time here, so the encode stays float32", table, re.MULTILINE)
    assert reason and float(reason.group(1)) > 0
    assert "bfloat16 encode" not in table and ", bfloat16 " not in table


def test_benchmark_times_a_bfloat16_encode_where_the_cpu_has_it(tiny_model_dir, tmp_path):
    table = run_benchmark(tiny_model_dir, tmp_path, True, "--hires", "0", "--repeat", "1")
    assert re.search(r"^native bfloat16: yes; a bfloat16 product .* takes [\d.]+× the float32 time here$", table,
                     re.MULTILINE)
    for label in ("image → scene codes, bfloat16", "image → mesh, smooth 32³, bfloat16"):
        assert re.search(rf"^{label} +[\d.]+ s +[\d.]+ s +[\d.]+x$", table, re.MULTILINE), label
    moved = re.search(r"bfloat16 scene codes differ by up to ([\d.e-]+), the largest code being ([\d.]+)", table)
    assert 0 < float(moved.group(1)) < 0.05 * float(moved.group(2))  # rounded, not broken
