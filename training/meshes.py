"""A triangle mesh as a ground-truth scene: inside/outside by the generalised winding number (robust to small
holes), colour of the nearest vertex, ray casting by Möller–Trumbore, surface samples by area."""

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from core.mesh import Mesh

PAIRS_PER_CHUNK = 1 << 20  # (points or rays) × triangles per batched evaluation


class MeshScene:
    def __init__(self, vertices, faces, colors, label: str = "mesh"):
        self.vertices = torch.as_tensor(np.asarray(vertices, np.float32))
        self.faces = torch.as_tensor(np.asarray(faces, np.int64))
        self.colors = torch.as_tensor(np.asarray(colors, np.float32))
        self.label = label
        self.triangles = self.vertices[self.faces]  # (F, 3, 3)
        self._tree = cKDTree(self.vertices.numpy())
        cross = torch.linalg.cross(self.triangles[:, 1] - self.triangles[:, 0],
                                   self.triangles[:, 2] - self.triangles[:, 0])
        self.areas = cross.norm(dim=-1) / 2
        normals = torch.zeros_like(self.vertices).index_add_(0, self.faces.reshape(-1), cross.repeat_interleave(3, 0))
        self.vertex_normals = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    @classmethod
    def load(cls, path, label: str = "mesh") -> "MeshScene":
        mesh = Mesh.load(path)
        return cls(mesh.vertices, mesh.faces, mesh.colors, label)

    def scaled(self, factor: float, shift: torch.Tensor) -> "MeshScene":
        return MeshScene(self.vertices * factor + shift, self.faces, self.colors, self.label)

    def rotated_z(self, degrees: float) -> "MeshScene":
        a = math.radians(degrees)
        rotation = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        return MeshScene(self.vertices @ rotation.T, self.faces, self.colors, self.label)

    def winding_number(self, points: torch.Tensor) -> torch.Tensor:
        """Generalised winding number (N,): 1 inside a closed surface, 0 outside (Jacobson et al. 2013)."""
        total = torch.zeros(len(points))
        chunk = max(1, PAIRS_PER_CHUNK // max(1, len(self.faces)))
        for start in range(0, len(points), chunk):
            p = points[start:start + chunk, None, None, :]
            a, b, c = (self.triangles[None] - p).unbind(2)  # (n, F, 3) each
            la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
            numerator = (a * torch.linalg.cross(b, c)).sum(-1)
            denominator = (la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb)
            total[start:start + chunk] = (2 * torch.atan2(numerator, denominator)).sum(-1) / (4 * math.pi)
        return total

    def occupancy(self, points: torch.Tensor) -> torch.Tensor:
        return self.winding_number(points) > 0.5

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        _, nearest = self._tree.query(points.numpy())
        return self.colors[torch.from_numpy(nearest)]

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        _, nearest = self._tree.query(points.numpy())
        return self.vertex_normals[torch.from_numpy(nearest)]

    def raycast(self, origins: torch.Tensor, directions: torch.Tensor):
        """Nearest hit along each ray (Möller–Trumbore): (hit (N,) bool, t (N,))."""
        v0, e1, e2 = self.triangles[:, 0], self.triangles[:, 1] - self.triangles[:, 0], \
            self.triangles[:, 2] - self.triangles[:, 0]
        hit = torch.zeros(len(origins), dtype=torch.bool)
        t_best = torch.full((len(origins),), math.inf)
        chunk = max(1, PAIRS_PER_CHUNK // max(1, len(self.faces)))
        for start in range(0, len(origins), chunk):
            o, d = origins[start:start + chunk, None], directions[start:start + chunk, None]
            p = torch.linalg.cross(d.expand(-1, len(e2), -1), e2[None].expand(len(d), -1, -1))
            det = (e1[None] * p).sum(-1)
            inverse = 1 / torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
            s = o - v0[None]
            u = (s * p).sum(-1) * inverse
            q = torch.linalg.cross(s, e1[None].expand_as(s))
            v = (d * q).sum(-1) * inverse
            t = (e2[None] * q).sum(-1) * inverse
            valid = (det.abs() >= 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
            t = torch.where(valid, t, torch.full_like(t, math.inf)).min(dim=1).values
            t_best[start:start + chunk] = t
            hit[start:start + chunk] = torch.isfinite(t)
        return hit, torch.where(hit, t_best, torch.zeros_like(t_best))

    def surface_samples(self, count: int, generator: torch.Generator):
        """Area-weighted random points on the surface, their face normals and interpolated colours."""
        face = torch.multinomial(self.areas, count, replacement=True, generator=generator)
        r1, r2 = torch.rand(2, count, generator=generator)
        s = r1.sqrt()
        weights = torch.stack([1 - s, s * (1 - r2), s * r2], dim=-1)  # barycentric, uniform on the triangle
        points = (self.triangles[face] * weights[..., None]).sum(1)
        tri = self.triangles[face]
        normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        colors = (self.colors[self.faces[face]] * weights[..., None]).sum(1)
        return points, normals, colors

    def near_surface(self, count: int, generator: torch.Generator) -> torch.Tensor:
        points = self.surface_samples(count, generator)[0]
        sigma = torch.where(torch.arange(count) < count // 2, 0.01, 0.04)[:, None]
        return points + torch.randn(count, 3, generator=generator) * sigma
