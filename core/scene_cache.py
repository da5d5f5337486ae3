"""The worker's memory of recent scene codes, so that a job changing only extraction-side settings (resolution,
threshold, output options) skips preparing and encoding the image — about 85 % of a job on a CPU.

A scene code is found again only for the same pixels (an array's bytes or a file's bytes), the same model and
the same preprocessing settings (core.pipeline.PREPROCESS_FIELDS); any other setting never enters the key.
"""

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np

MAX_CODES = 16  # the full model's code is 3 × 40 × 64 × 64 float32 ≈ 2 MB
MAX_BYTES = 256 * 2**20


def scene_key(image, settings: dict, model: dict, preprocess_fields) -> str:
    """A digest of what the scene code depends on. image: a file path or a numpy array of pixels; settings: the
    job's settings (only preprocess_fields are used); model: the model's spec (source, revision, device, ...)."""
    digest = hashlib.blake2b(digest_size=20)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    else:
        pixels = np.ascontiguousarray(image)
        digest.update(f"{pixels.dtype.str}{pixels.shape}".encode())
        digest.update(memoryview(pixels.reshape(-1).view(np.uint8)))
    described = {"model": model, "settings": {name: settings[name] for name in preprocess_fields}}
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()


class SceneCodeCache:
    """Least-recently-used scene codes (torch tensors, kept on the CPU), bounded by count and bytes."""

    def __init__(self, max_codes: int = MAX_CODES, max_bytes: int = MAX_BYTES):
        self.max_codes, self.max_bytes = max_codes, max_bytes
        self.codes = OrderedDict()

    def get(self, key: str):
        code = self.codes.get(key)
        if code is not None:
            self.codes.move_to_end(key)
        return code

    def put(self, key: str, code):
        self.codes[key] = code.detach().to("cpu", copy=True)
        self.codes.move_to_end(key)
        while len(self.codes) > self.max_codes or (len(self.codes) > 1 and self.nbytes > self.max_bytes):
            self.codes.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(code.numel() * code.element_size() for code in self.codes.values())
