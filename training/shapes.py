"""Procedural coloured objects with exact ground truth: signed distance, inside/outside and colour at any point.

A Shape is a union of primitives (sphere, box, cylinder, cone, torus, capsule), each with its own rotation,
position and one- or two-tone colour. Signed distances are exact for each primitive (Quílez's formulas), so the
union's minimum is a valid bound for sphere tracing and its sign is exact inside/outside."""

from dataclasses import dataclass, field

import torch

KINDS = ("sphere", "box", "cylinder", "cone", "torus", "capsule")
CLASSES = KINDS + ("composition",)


def _length(*parts):
    return torch.sqrt(sum(p * p for p in parts))


def sdf_local(kind: str, size: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Signed distance of a primitive centred at the origin, axis Z; p (N, 3) in its frame → (N,).

    size: sphere (r,), box (half x, half y, half z), cylinder (r, half h), cone (base r, half h; apex at +h),
    torus (major R, minor r), capsule (r, half segment length)."""
    x, y, z = p.unbind(-1)
    if kind == "sphere":
        return _length(x, y, z) - size[0]
    if kind == "box":
        q = p.abs() - size
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
    if kind == "cylinder":
        dx, dz = _length(x, y) - size[0], z.abs() - size[1]
        return torch.maximum(dx, dz).clamp(max=0) + _length(dx.clamp(min=0), dz.clamp(min=0))
    if kind == "cone":  # capped cone with top radius 0 (Quílez's sdCappedCone)
        r1, h = size[0], size[1]
        qx, qy = _length(x, y), z
        cax = qx - torch.minimum(qx, torch.where(qy < 0, r1, torch.zeros_like(r1)))
        cay = qy.abs() - h
        k1x, k1y, k2x, k2y = 0.0, h, -r1, 2 * h
        t = (((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0, 1)
        cbx, cby = qx - k1x + k2x * t, qy - k1y + k2y * t
        sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
        return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))
    if kind == "torus":
        return _length(_length(x, y) - size[0], z) - size[1]
    if kind == "capsule":
        return _length(x, y, z - z.clamp(-size[1], size[1])) - size[0]
    raise ValueError(f"unknown primitive {kind!r}")


@dataclass
class Primitive:
    kind: str
    size: torch.Tensor  # see sdf_local
    rotation: torch.Tensor  # (3, 3): local → world
    position: torch.Tensor  # (3,)
    colors: torch.Tensor  # (2, 3) albedo; the second applies where local · split_normal > split_offset
    split_normal: torch.Tensor  # (3,); zeros = one tone
    split_offset: float = 0.0

    def local(self, points: torch.Tensor) -> torch.Tensor:
        return (points - self.position) @ self.rotation

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return sdf_local(self.kind, self.size, self.local(points))

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        second = (self.local(points) @ self.split_normal) > self.split_offset
        return torch.where(second[:, None], self.colors[1], self.colors[0])

    def scaled(self, factor: float, shift: torch.Tensor) -> "Primitive":
        """The primitive after world points p → p·factor + shift (a similarity: distances scale by factor)."""
        return Primitive(self.kind, self.size * factor, self.rotation, self.position * factor + shift, self.colors,
                         self.split_normal, self.split_offset * factor)


@dataclass
class Shape:
    primitives: list[Primitive]
    label: str = field(default="")

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.sdf(points) for p in self.primitives]).min(dim=0).values

    def occupancy(self, points: torch.Tensor) -> torch.Tensor:
        return self.sdf(points) < 0

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """Colour of the nearest primitive (the one whose surface or inside the point belongs to)."""
        distances = torch.stack([p.sdf(points) for p in self.primitives])
        nearest = distances.argmin(dim=0)
        colors = torch.stack([p.albedo(points) for p in self.primitives])
        return colors[nearest, torch.arange(len(points))]

    def normals(self, points: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
        offsets = torch.eye(3) * eps
        gradient = torch.stack([self.sdf(points + o) - self.sdf(points - o) for o in offsets], dim=-1)
        return gradient / gradient.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def raycast(self, origins: torch.Tensor, directions: torch.Tensor, steps: int = 64, eps: float = 5e-4):
        """Sphere tracing: rays (N, 3) → (hit (N,) bool, t (N,)). Starts where the ray enters the unit ball."""
        b = (origins * directions).sum(-1)
        disc = b * b - ((origins * origins).sum(-1) - 1.0)
        t = (-b - disc.clamp(min=0).sqrt()).clamp(min=0)
        index = torch.nonzero(disc > 0).squeeze(1)
        o, d, t_a, t_far = origins[index], directions[index], t[index], (-b + disc.clamp(min=0).sqrt())[index]
        hit = torch.zeros(len(origins), dtype=torch.bool)
        for _ in range(steps):
            if len(index) == 0:
                break
            distance = self.sdf(torch.addcmul(o, t_a[:, None], d))
            done = distance < eps
            t_a = t_a + distance.clamp(min=eps / 2)
            if done.any():
                hit[index[done]] = True
                t[index[done]] = t_a[done]
            keep = ~done & (t_a < t_far)
            if not keep.all():
                index, o, d, t_a, t_far = index[keep], o[keep], d[keep], t_a[keep], t_far[keep]
        return hit, t

    def near_surface(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Points near the surface (count, 3): random points projected onto it, then moved by Gaussian noise of
        0.01 (first half) or 0.04 (second half)."""
        points = cube_points(count, 0.87, generator)
        for _ in range(2):
            points = points - self.sdf(points)[:, None] * self.normals(points)
        sigma = torch.where(torch.arange(count) < count // 2, 0.01, 0.04)[:, None]
        return points + torch.randn(count, 3, generator=generator) * sigma

    def scaled(self, factor: float, shift: torch.Tensor) -> "Shape":
        return Shape([p.scaled(factor, shift) for p in self.primitives], self.label)


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    """Uniform random rotation (3, 3) from a normalised quaternion."""
    q = torch.randn(4, generator=generator)
    w, x, y, z = q / q.norm()
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _uniform(generator, low, high, count=None):
    shape = (count,) if count else (1,)
    values = low + (high - low) * torch.rand(shape, generator=generator)
    return values if count else float(values)


def random_color(generator: torch.Generator) -> torch.Tensor:
    """A saturated-enough albedo: random hue, saturation 0.35–1, value 0.35–0.95 (HSV → RGB)."""
    h, s, v = _uniform(generator, 0, 1), _uniform(generator, 0.35, 1), _uniform(generator, 0.35, 0.95)
    k = (torch.tensor([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def random_primitive(kind: str, generator: torch.Generator, scale: float = 1.0) -> Primitive:
    u = lambda low, high: _uniform(generator, low, high) * scale  # noqa: E731
    size = {
        "sphere": lambda: [u(0.25, 0.5)],
        "box": lambda: [u(0.12, 0.5), u(0.12, 0.5), u(0.12, 0.5)],
        "cylinder": lambda: [u(0.12, 0.4), u(0.15, 0.5)],
        "cone": lambda: [u(0.2, 0.45), u(0.2, 0.5)],
        "torus": lambda: (lambda major: [major, major * _uniform(generator, 0.2, 0.45)])(u(0.25, 0.45)),
        "capsule": lambda: [u(0.1, 0.3), u(0.1, 0.4)],
    }[kind]()
    colors = torch.stack([random_color(generator), random_color(generator)])
    two_tone = torch.rand(1, generator=generator).item() < 0.5
    normal = torch.randn(3, generator=generator)
    normal = normal / normal.norm() if two_tone else torch.zeros(3)
    offset = _uniform(generator, -0.1, 0.1) * scale
    return Primitive(kind, torch.tensor(size), random_rotation(generator), torch.zeros(3), colors, normal, offset)


def random_shape(generator: torch.Generator, composition_probability: float = 0.0, label: str | None = None
                 ) -> Shape:
    """One primitive, or (with the given probability) a composition of 2–3 primitives with touching centres;
    label (one of CLASSES) fixes the class instead."""
    composition = torch.rand(1, generator=generator).item() < composition_probability
    if label is not None:
        composition = label == "composition"
    if not composition:
        kind = label or KINDS[int(torch.randint(len(KINDS), (1,), generator=generator))]
        return Shape([random_primitive(kind, generator)], kind)
    count = int(torch.randint(2, 4, (1,), generator=generator))
    primitives = []
    for index in range(count):
        kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=generator))]
        primitive = random_primitive(kind, generator, scale=0.7)
        if index:
            direction = torch.randn(3, generator=generator)
            primitive.position = primitives[0].position + direction / direction.norm() * _uniform(generator, 0.2, 0.4)
        primitives.append(primitive)
    return Shape(primitives, "composition")


def cube_points(count: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(count, 3, generator=generator) * 2 - 1) * radius

