"""Foreground masks for pictures without transparency, offline: rembg when the user has it installed with its
weights already on disk, otherwise a model of a plain background (uniform, noisy or a smooth gradient) fitted
to the picture's border."""

import functools
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import InputError

log = logging.getLogger(__name__)

_NO_FOREGROUND = ("No foreground found: the picture looks like plain background everywhere. Use an image of an "
                  "object on a plain background, or one with transparency (alpha) around the object.")


def foreground_alpha(rgb: np.ndarray) -> np.ndarray:
    """Alpha (H, W) float32 in [0, 1] separating the object from the background of an RGB float image."""
    alpha = _rembg_alpha(rgb)
    return plain_background_alpha(rgb) if alpha is None else alpha


def plain_background_alpha(rgb: np.ndarray, *, edge_softness: float = 0.7) -> np.ndarray:
    """Everything that differs from a smooth background colour field fitted to the border, and everything that
    the border-connected background encloses (a hole inside the object stays object), with a slightly soft edge."""
    foreground = _foreground_mask(rgb)
    if foreground is None:  # busy at pixel level: dithering or heavy noise evens out on a slightly blurred copy
        foreground = _foreground_mask(ndimage.gaussian_filter(rgb, (1.0, 1.0, 0)))
    if foreground is None:
        raise InputError("The background is not plain enough to remove automatically (the picture's border has no "
                         "dominant colour). Use an image with transparency around the object, install rembg for "
                         "learned background removal, or turn background removal off for a prepared image.")
    if not foreground.any():
        raise InputError(_NO_FOREGROUND)
    alpha = ndimage.gaussian_filter(foreground.astype(np.float32), edge_softness)
    alpha[alpha < 0.05] = 0.0  # the filter's faint tail would widen the crop box with invisible pixels
    alpha[foreground & (alpha > 0.99)] = 1.0
    return alpha


def _foreground_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Pixels unlike the border's colour field and not connected to the border through background-coloured
    pixels; None when the border has no dominant smooth colour."""
    height, width = rgb.shape[:2]
    ring = max(1, min(height, width) // 64)
    on_border = np.zeros((height, width), bool)
    on_border[:ring], on_border[-ring:], on_border[:, :ring], on_border[:, -ring:] = True, True, True, True

    distance = np.linalg.norm(rgb - _fit_border_colours(rgb, on_border), axis=-1)
    border_distance = distance[on_border]
    spread = np.quantile(border_distance[border_distance <= _robust_cutoff(border_distance)], 0.99)
    threshold = max(0.05, 1.6 * spread)  # 0.05 ≈ 13/255: quantisation and compression noise never count
    if threshold > 0.25 or np.mean(border_distance <= threshold) < 0.5:
        return None

    labels, _ = ndimage.label(distance <= threshold)  # 4-connected: the background cannot leak through a corner
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return _without_specks(~np.isin(labels, edge_labels[edge_labels > 0]))


def _fit_border_colours(rgb: np.ndarray, on_border: np.ndarray) -> np.ndarray:
    """Least-squares quadratic colour field c(x, y) over the border pixels, refitted without outliers (the
    object where it touches the border), evaluated over the whole picture."""
    height, width = rgb.shape[:2]
    u = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    v = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    terms = (np.ones((1, 1), np.float32), u, v, u * u, u * v, v * v)  # broadcast, never a full (H, W, 6) basis
    points = np.stack([np.broadcast_to(term, (height, width))[on_border] for term in terms], axis=-1)
    colours = rgb[on_border]
    inliers = np.ones(len(points), bool)
    for _ in range(4):
        coefficients = np.linalg.lstsq(points[inliers], colours[inliers], rcond=None)[0].astype(np.float32)
        residual = np.linalg.norm(colours - points @ coefficients, axis=-1)
        inliers = residual <= _robust_cutoff(residual)
    background = np.zeros_like(rgb)
    for term, coefficient in zip(terms, coefficients):
        background += term[..., None] * coefficient
    return background


def _robust_cutoff(residual: np.ndarray) -> float:
    """Median + 3 robust standard deviations (MAD-based), never below 2/255."""
    median = np.median(residual)
    return max(2 / 255, median + 3 * 1.4826 * np.median(np.abs(residual - median)))


def _without_specks(foreground: np.ndarray) -> np.ndarray:
    """Drop foreground islands far smaller than the largest part: background noise, dust, JPEG artefacts."""
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    if count == 0:
        return foreground
    areas = np.bincount(labels.ravel())[1:]
    keep = areas >= max(0.02 * areas.max(), 1e-4 * foreground.size)
    return np.concatenate([[False], keep])[labels]


# ---- rembg (optional): a learned matting model, used only if installed and its weights are already present ----

def _rembg_alpha(rgb: np.ndarray) -> np.ndarray | None:
    try:
        import rembg
    except Exception:  # not installed, or its onnxruntime is broken: the built-in model does the job
        return None
    weights = Path(os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"),
                                                                          ".u2net")))) / "u2net.onnx"
    if not weights.is_file():
        log.info("rembg is installed but %s is missing; using the plain-background model (no download).", weights)
        return None
    try:
        cutout = rembg.remove(Image.fromarray((rgb * 255.0).astype(np.uint8)), session=_rembg_session())
        return np.asarray(cutout.convert("RGBA"))[..., 3].astype(np.float32) / 255.0
    except Exception as err:  # third-party runtime failure: fall back rather than fail the user's job
        log.warning("rembg failed (%s); using the plain-background model instead.", err)
        return None


@functools.cache
def _rembg_session():
    import rembg
    return rembg.new_session("u2net")
