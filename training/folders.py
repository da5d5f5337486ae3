"""Training data from files, for fine-tuning on real assets.

ImageMeshPairs: a folder of pictures and their ground-truth meshes with the same file stem (chair.png +
chair.ply, or .jpg / .obj ...). The mesh must be in TripoSR's frame for that picture: Z up, the camera on +X,
image-right = +Y, framed the way prepare_image frames the picture (as the meshes the model itself makes are).

MeshViews: a folder of coloured meshes (.ply / .obj with vertex colours). Each sample turns a mesh about Z by a
random angle, frames it like the synthetic objects and renders its picture with the same ray caster and shading,
so one mesh gives pictures from every side."""

from pathlib import Path

import torch

from core.preprocess import prepare_image
from core.model import resize_images

from .data import DataConfig, fits, frame, make_sample, one_thread, sample_generator
from .meshes import MeshScene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
MESH_SUFFIXES = (".ply", ".obj")


def mesh_files(folder) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise SystemExit(f"{folder} holds no .ply or .obj meshes")
    return files


def image_mesh_pairs(folder) -> list[tuple[Path, Path]]:
    meshes = {p.stem: p for p in mesh_files(folder)}
    pairs = [(p, meshes[p.stem]) for p in sorted(Path(folder).iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in meshes]
    if not pairs:
        raise SystemExit(f"{folder} holds no picture with a mesh of the same name (e.g. chair.png + chair.ply)")
    return pairs


class ImageMeshPairs(torch.utils.data.Dataset):
    """Sample i: pair i mod n, with fresh points and rays for each i."""

    def __init__(self, folder, config: DataConfig, seed: int = 0):
        self.pairs, self.config, self.seed = image_mesh_pairs(folder), config, seed

    def __len__(self):
        return len(self.pairs)

    def scene(self, index: int) -> MeshScene:
        return MeshScene.load(self.pairs[index % len(self.pairs)][1], label=self.pairs[index % len(self.pairs)][1].stem)

    def image(self, index: int) -> torch.Tensor:
        pixels = prepare_image(self.pairs[index % len(self.pairs)][0], foreground_ratio=self.config.foreground_ratio)
        return resize_images(torch.from_numpy(pixels)[None], self.config.cond_image_size)[0].permute(1, 2, 0)

    def __getitem__(self, index: int) -> dict:
        with one_thread():
            sample = make_sample(self.scene(index), sample_generator("pairs", self.seed, index), self.config)
            sample["image"] = self.image(index)
        sample["label"] = 0
        return sample


class MeshViews(torch.utils.data.Dataset):
    """Sample i: mesh i mod n turned about Z by a random angle, framed, rendered."""

    def __init__(self, folder, config: DataConfig, seed: int = 0, length: int = 1 << 40):
        self.files, self.config, self.seed, self.length = mesh_files(folder), config, seed, length
        self.meshes = [MeshScene.load(path, label=path.stem) for path in self.files]

    def __len__(self):
        return self.length

    def scene(self, index: int) -> MeshScene:
        generator = sample_generator("mesh-views", self.seed, index)
        mesh = self.meshes[index % len(self.meshes)]
        centre = (mesh.vertices.amax(0) + mesh.vertices.amin(0)) / 2
        mesh = mesh.scaled(1.0, -centre).rotated_z(float(torch.rand(1, generator=generator)) * 360)
        scene = frame(mesh, self.config.foreground_ratio)
        return scene if fits(scene) else scene.scaled(0.8, torch.zeros(3))

    def __getitem__(self, index: int) -> dict:
        with one_thread():
            sample = make_sample(self.scene(index), sample_generator("mesh-views/rays", self.seed, index),
                                 self.config)
        sample["label"] = 0
        return sample
