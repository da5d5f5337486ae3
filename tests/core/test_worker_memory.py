"""Repeated use: 20 generates in a row through one worker keep both processes' memory flat after the first."""

import gc
import os
from pathlib import Path

import numpy as np
from PIL import Image

from core.pipeline import GenerateSettings
from core.worker import ModelSpec, WorkerClient
from tests.procfs import linux_only, rss_mb

pytestmark = linux_only

RUNS = 20
# A 64³ mesh of the tiny model is ~50k vertices (~1.8 MB of arrays): keeping each run's mesh or image anywhere
# would add > 30 MB over the runs, far above this bound; allocator noise is ~2 MB.
GROWTH_BOUND_MB = 12.0


def test_twenty_generates_keep_memory_flat(tiny_model_dir):
    spec = ModelSpec(source=str(tiny_model_dir), device="cpu", allow_download=False)
    pixels = np.asarray(Image.open(tiny_model_dir / "input.png"), dtype=np.float32) / 255.0
    settings = GenerateSettings(resolution=64)
    client = WorkerClient()
    worker_rss, parent_rss = [], []
    try:
        for _ in range(RUNS):
            mesh = client.run(pixels, settings, spec)
            assert len(mesh.vertices) > 10000
            del mesh
            gc.collect()
            worker_rss.append(rss_mb(client.pid))
            parent_rss.append(rss_mb(os.getpid()))
        pid = client.pid
    finally:
        client.close()
    assert not Path(f"/proc/{pid}").exists()
    report = f"worker RSS MB {np.round(worker_rss, 1)}, parent RSS MB {np.round(parent_rss, 1)}"
    assert max(worker_rss[1:]) - worker_rss[1] < GROWTH_BOUND_MB, report
    assert max(parent_rss[1:]) - parent_rss[1] < GROWTH_BOUND_MB, report
    print(report)
