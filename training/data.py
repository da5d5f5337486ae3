"""Training samples: an input picture made exactly as inference makes it (render → core.prepare_image → resize),
and ground truth for the losses: inside/outside and colour at 3D points, opacity and colour along camera rays.

A scene is anything with `sdf`-free ground-truth queries: occupancy(points), albedo(points), raycast(origins,
directions) → (hit, t), normals(points), near_surface(count, generator). Analytic shapes (training/shapes.py) and
meshes (training/meshes.py) both are. Every random choice of sample i comes from a generator seeded by
(split, seed, i), so a sample is the same whichever process, worker or batch makes it."""

import contextlib
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.model import resize_images
from core.preprocess import prepare_image

from . import camera, shapes

LIGHT = torch.tensor([0.55, 0.35, 0.75])  # key light in the input camera's frame: (toward camera, right, up)
AMBIENT = 0.35
RADIUS = 0.87  # TripoSR's field box: [-RADIUS, RADIUS]³


@dataclass
class DataConfig:
    image_size: int = 128  # the rendered picture, before prepare_image
    cond_image_size: int = 128  # what the model is fed (its config's cond_image_size)
    foreground_ratio: float = 0.85
    occupancy_points: int = 2048  # half uniform in the box, half near the surface
    rays_per_view: int = 256
    random_views: int = 1  # views besides the input view for the rendering loss
    render_samples: int = 64  # volume-rendering samples per ray
    supersampling: int = 1  # input picture rendered at image_size × this, then box-filtered
    composition_probability: float = 0.5  # at the end of the curriculum
    curriculum_steps: int = 2000  # compositions ramp in linearly over these steps


def sample_generator(split: str, seed: int, index: int) -> torch.Generator:
    digest = hashlib.sha256(f"{split}:{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def light_direction() -> torch.Tensor:
    _, right, up, forward = camera.camera_frame(0.0, 0.0)
    light = -forward * LIGHT[0] + right * LIGHT[1] + up * LIGHT[2]
    return light / light.norm()


def render(scene, size: int, azimuth=0.0, elevation=0.0, supersampling: int = 1) -> np.ndarray:
    """Lambert-shaded RGBA picture (size, size, 4) float32 of a scene, straight alpha, background transparent."""
    full = size * supersampling
    u, v = camera.pixel_grid(full)
    origins, directions = camera.image_rays(u.reshape(-1), v.reshape(-1), azimuth, elevation)
    hit, t = scene.raycast(origins, directions)
    rgba = torch.zeros(full * full, 4)
    if hit.any():
        points = origins[hit] + t[hit, None] * directions[hit]
        shade = AMBIENT + (1 - AMBIENT) * (scene.normals(points) @ light_direction()).clamp(min=0)
        rgba[hit, :3] = (scene.albedo(points) * shade[:, None]).clamp(0, 1)
        rgba[hit, 3] = 1.0
    rgba = rgba.view(full, full, 4)
    if supersampling > 1:
        premultiplied = torch.cat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], dim=-1).permute(2, 0, 1)
        premultiplied = F.avg_pool2d(premultiplied[None], supersampling)[0].permute(1, 2, 0)
        alpha = premultiplied[..., 3:]
        rgba = torch.cat([premultiplied[..., :3] / alpha.clamp(min=1e-6), alpha], dim=-1)
    return rgba.numpy()


def model_input(rgba: np.ndarray, config: DataConfig) -> torch.Tensor:
    """The picture as inference feeds it: core.prepare_image (crop, frame at the foreground ratio, 0.5 gray),
    then the model's own resize → (S, S, 3) float32."""
    pixels = prepare_image(rgba, remove_background=True, foreground_ratio=config.foreground_ratio)
    return resize_images(torch.from_numpy(pixels)[None], config.cond_image_size)[0].permute(1, 2, 0)


def frame(shape: shapes.Shape, ratio: float, size: int = 48, rounds: int = 2) -> shapes.Shape:
    """Scale and move a shape so that in the input view its silhouette is centred and its longer side spans
    `ratio` of the picture, as prepare_image frames any input (so the picture and the 3D truth agree)."""
    half = math.tan(math.radians(camera.INPUT_FOV_DEGREES) / 2)
    for _ in range(rounds):
        mask = render(shape, size)[..., 3] > 0
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            break
        u0, u1 = (cols[0]) / size * 2 - 1, (cols[-1] + 1) / size * 2 - 1
        v0, v1 = 1 - (rows[-1] + 1) / size * 2, 1 - rows[0] / size * 2
        factor = float(2 * ratio / max(u1 - u0, v1 - v0))
        depth = camera.INPUT_CAMERA_DISTANCE
        centre = [0.0, -(u0 + u1) / 2 * half * depth, -(v0 + v1) / 2 * half * depth]
        shift = torch.tensor(centre, dtype=torch.float32) * factor
        shape = shape.scaled(factor, shift)
    return shape


def fits(scene, margin: float = 0.02, count: int = 24) -> bool:
    """Whether the scene lies inside the field's box (no inside point on the box's faces, shrunk by margin)."""
    axis = torch.linspace(-1, 1, count) * (RADIUS - margin)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    side = torch.full_like(a, RADIUS - margin)
    faces = []
    for sign in (-1, 1):
        faces += [torch.stack([sign * side, a, b], -1), torch.stack([a, sign * side, b], -1),
                  torch.stack([a, b, sign * side], -1)]
    return not scene.occupancy(torch.stack(faces).reshape(-1, 3)).any()


def random_view(generator: torch.Generator) -> tuple[float, float]:
    """Azimuth anywhere, elevation −20°…50° (degrees)."""
    azimuth = float(torch.rand(1, generator=generator)) * 360
    elevation = -20 + float(torch.rand(1, generator=generator)) * 70
    return azimuth, elevation


def ray_targets(scene, generator, count: int, azimuth=0.0, elevation=0.0):
    """Random rays through the picture of a view → (origins (K, 3), directions (K, 3), opacity (K,), colour (K, 3)
    composited on white, the volume renderer's background)."""
    u, v = torch.rand(2, count, generator=generator) * 2 - 1
    origins, directions = camera.image_rays(u, v, azimuth, elevation)
    hit, t = scene.raycast(origins, directions)
    colors = torch.ones(count, 3)
    if hit.any():
        colors[hit] = scene.albedo(origins[hit] + t[hit, None] * directions[hit])
    return origins, directions, hit.float(), colors


def make_sample(scene, generator: torch.Generator, config: DataConfig) -> dict:
    """Ground truth and model input for one framed scene (see module docstring for what a scene offers)."""
    rgba = render(scene, config.image_size, supersampling=config.supersampling)
    half = config.occupancy_points // 2
    points = torch.cat([shapes.cube_points(config.occupancy_points - half, RADIUS, generator),
                        scene.near_surface(half, generator).clamp(-RADIUS, RADIUS)])
    views = [(0.0, 0.0)] + [random_view(generator) for _ in range(config.random_views)]
    rays = [ray_targets(scene, generator, config.rays_per_view, *view) for view in views]
    return {
        "image": model_input(rgba, config),
        "mask": torch.from_numpy(rgba[..., 3].copy()),
        "points": points,
        "occupancy": scene.occupancy(points).float(),
        "colors": scene.albedo(points),
        "ray_origins": torch.stack([r[0] for r in rays]),
        "ray_directions": torch.stack([r[1] for r in rays]),
        "ray_opacity": torch.stack([r[2] for r in rays]),
        "ray_colors": torch.stack([r[3] for r in rays]),
        "ray_jitter": torch.rand(len(views), config.rays_per_view, config.render_samples, generator=generator),
    }


def synthetic_shape(split: str, seed: int, index: int, composition_probability: float, ratio: float,
                    label: str | None = None) -> shapes.Shape:
    """The framed shape of sample `index`; drawn again (from the same generator) until it fits the box."""
    generator = sample_generator(split, seed, index)
    for _ in range(20):
        shape = shapes.random_shape(generator, composition_probability, label)
        shape = frame(shape, ratio)
        if fits(shape):
            return shape
    return shape.scaled(0.8, torch.zeros(3))  # rare: a last try that still pokes out is shrunk


class SyntheticObjects(torch.utils.data.Dataset):
    """Sample i of an endless stream of procedural objects. Training: compositions ramp in with the step
    (i // batch_size). Evaluation (`classes` given): object i is of class classes[i % len(classes)]."""

    def __init__(self, config: DataConfig, seed: int = 0, split: str = "train", batch_size: int = 1,
                 length: int = 1 << 40, classes: tuple[str, ...] | None = None):
        self.config, self.seed, self.split = config, seed, split
        self.batch_size, self.length, self.classes = batch_size, length, classes

    def __len__(self):
        return self.length

    def composition_probability(self, index: int) -> float:
        step = index // self.batch_size
        ramp = min(1.0, step / self.config.curriculum_steps) if self.config.curriculum_steps else 1.0
        return self.config.composition_probability * ramp

    def shape(self, index: int) -> shapes.Shape:
        label = self.classes[index % len(self.classes)] if self.classes else None
        return synthetic_shape(self.split, self.seed, index, self.composition_probability(index),
                               self.config.foreground_ratio, label)

    def __getitem__(self, index: int) -> dict:
        with one_thread():
            shape = self.shape(index)
            generator = sample_generator(self.split + "/views", self.seed, index)
            sample = make_sample(shape, generator, self.config)
        sample["label"] = shapes.CLASSES.index(shape.label)
        return sample


@contextlib.contextmanager
def one_thread():
    """Data making is thousands of small tensor operations: with several threads, synchronising them costs more
    than the work (many times more on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
