"""TripoSR in plain PyTorch: image → DINO ViT tokens → triplane transformer → triplanes (scene codes) → NeRF MLP
field → mesh. Numerically follows the reference (VAST-AI-Research/TripoSR, transformers 4.35) stage by stage;
tests/core/test_model.py compares each stage with the reference's outputs in tests/fixtures/triposr_tiny/."""

import contextlib
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig, DecoderConfig, ModelConfig
from . import position_codes
from .errors import ModelError
from .heap import return_freed_memory
from .vit import ViT, normal_parameter, run_block

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_DECODER_ROWS = 256
FEED_FORWARD_ROWS = 1024  # tokens per feed-forward pass when not training: bounds its (rows, 8·dim) intermediates
TABLE_SAMPLES = 1 << 14  # grid-point tables: plane samples taken at once (at 40 channels, 2.6 MB beside the tables)
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# encode_precision choices besides PRECISIONS' keys: "auto" = float16 on CUDA, float32 elsewhere; "native" = as
# "auto", but bfloat16 on a CPU that multiplies it natively (opt-in until trained meshes are shown unchanged by it:
# benchmarks/precision.py).
PRECISION_CHOICES = ("auto", "native", *PRECISIONS)
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_has_native_bfloat16(cpuinfo: Path | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512_BF16 or AMX-BF16), from the kernel's CPU flags (in
    cpuinfo, default CPUINFO); False where they cannot be read (not Linux). Without it bfloat16 matmul is emulated
    and several times slower."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) in [0, 1] → (B, 3, size, size) float32, antialiased bilinear like the reference."""
    pixels = images.permute(0, 3, 1, 2).to(torch.float32)
    if pixels.shape[-2:] == (size, size):
        return pixels
    return F.interpolate(pixels, (size, size), mode="bilinear", align_corners=False, antialias=True)


class Attention(nn.Module):
    """Multi-head attention without q/k/v biases; cross-attention when context_dim is given.

    q, k and v stay separate matmuls: fusing them saves under 1 % of encode time on a CPU but would keep a
    second copy of their weights (390 MB) next to the memory-mapped checkpoint."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, query_code: torch.Tensor | None = None,
                key_code: torch.Tensor | None = None) -> torch.Tensor:
        """query_code (N, c) and key_code (M, c), c ≤ head_dim, are added to every head's queries and keys."""
        context = x if context is None else context
        batch = len(x)
        q = self.to_q(x).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        if query_code is not None:
            q = q + F.pad(query_code, (0, self.head_dim - query_code.shape[1])).to(q.dtype)
            k = k + F.pad(key_code, (0, self.head_dim - key_code.shape[1])).to(k.dtype)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(y.transpose(1, 2).reshape(batch, x.shape[1], -1))


class TransformerBlock(nn.Module):
    """diffusers' BasicTransformerBlock as TripoSR configures it: pre-LN self-attention, cross-attention, GEGLU."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=config.cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, 2 * 4 * dim)  # GEGLU: first half value, second half gate
        self.ff_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, codes=None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # a new x: the caller's is never changed
        x = residual(x, self.attn2(self.norm2(x), context, *(codes or (None, None))))
        return residual(x, self.feed_forward(self.norm3(x)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) → (B, N, dim). Each token on its own, so inference runs FEED_FORWARD_ROWS tokens at a time:
        at TripoSR's size the whole (B, 3072, 4096) value and gate would be 100 MB at the encode's peak."""
        if torch.is_grad_enabled():  # training: autograd needs the tensors the in-place path overwrites
            value, gate = self.geglu_halves(x)
            return self.ff_out(value * F.gelu(gate))
        out = None
        for start in range(0, x.shape[-2], FEED_FORWARD_ROWS):
            value, gate = self.geglu_halves(x[..., start:start + FEED_FORWARD_ROWS, :])
            part = self.ff_out(value.mul_(torch.ops.aten.gelu_(gate)))
            if out is None:  # the parts' dtype: under autocast not x's
                out = part.new_empty(*x.shape[:-1], part.shape[-1])
            out[..., start:start + part.shape[-2], :] = part
        return out

    def geglu_halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Two half-width products instead of one, then GELU and the product in place: about 10 % faster on a
        # CPU than slicing one (tokens, 8192) result, and no third (tokens, 4096) tensor.
        half, weight, bias = self.ff_out.in_features, self.ff_in.weight, self.ff_in.bias
        return F.linear(x, weight[:half], bias[:half]), F.linear(x, weight[half:], bias[half:])


def residual(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """x + update; when not training and the dtypes agree, into x itself: one (B, N, dim) tensor fewer at a time."""
    if torch.is_grad_enabled() or update.dtype != x.dtype:
        return x + update
    return x.add_(update)


class Transformer1D(nn.Module):
    """Channels-first tokens (B, C, N) → (B, C, N); GroupNorm, proj_in, blocks, proj_out, plus the input."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=1e-6)
        self.proj_in = nn.Linear(config.in_channels, config.inner_dim)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(config.inner_dim, config.in_channels)
        self.gradient_checkpointing = False  # training: recompute each block's activations in the backward pass

    def forward(self, tokens: torch.Tensor, context: torch.Tensor, progress=None, codes=None) -> torch.Tensor:
        """codes: (query codes, key codes) for the cross-attention, or None."""
        x = self.proj_in(self.norm(tokens).transpose(1, 2))
        for index, block in enumerate(self.blocks):
            x = run_block(block, self.gradient_checkpointing, x, context, codes)
            if progress is not None:
                progress((index + 1) / len(self.blocks))
        return self.proj_out(x).transpose(1, 2) + tokens


class NeRFDecoder(nn.Module):
    """Per-point MLP: triplane features → (raw density, 3 colour logits); n_hidden_layers counts the SiLUs."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        widths = [config.in_channels] + [config.n_neurons] * config.n_hidden_layers + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = {"silu": F.silu, "relu": F.relu}[config.activation]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # In place when not training: the decoder is memory-bound and this skips a tensor per layer.
        inplace = not torch.is_grad_enabled()
        for layer in self.layers[:-1]:
            features = self.activation(layer(features), inplace=inplace)
        return self.layers[-1](features)


class TripoSR(nn.Module):
    """The TripoSR model. `encode` turns images into scene codes (triplanes); `query` evaluates the field."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        planes = config.triplane
        self.image_tokenizer = ViT(config.vit)
        planes_shape = (3, planes.num_channels, planes.plane_size, planes.plane_size)
        self.triplane_tokens = normal_parameter(*planes_shape)
        self.backbone = Transformer1D(config.backbone)
        self.upsampler = nn.ConvTranspose2d(config.upsampler.in_channels, config.upsampler.out_channels, 2, stride=2)
        self.decoder = NeRFDecoder(config.decoder)
        # Points per decoder batch: bounds query memory (about 1.5 kB per point at the official size).
        self.query_chunk_size = 16384
        # Autocast dtype for encode: one of PRECISION_CHOICES.
        self.encode_precision = "auto"

    @property
    def device(self) -> torch.device:
        return self.triplane_tokens.device

    # Parity stages (compared one by one with the reference in the tests).

    def resize_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] → (B, 3, S, S), S = cond_image_size, antialiased bilinear like the reference."""
        return resize_images(images.to(self.device), self.config.cond_image_size)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → (B, 1 + patches, vit hidden)."""
        mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
        return self.image_tokenizer((pixels - mean) / std)

    def backbone_tokens(self, image_tokens: torch.Tensor, progress=None) -> torch.Tensor:
        """Image tokens → triplane tokens (B, C, 3·P·P), channels first, ordered plane, row, column."""
        tokens = self.triplane_tokens.permute(1, 0, 2, 3).reshape(1, self.config.triplane.num_channels, -1)
        codes = None
        if self.config.backbone.position_codes:
            token_code, query_code = position_codes.token_codes(
                self.config.triplane.plane_size, self.config.renderer.radius, self.config.triplane.num_channels)
            grid = round((image_tokens.shape[1] - 1) ** 0.5)
            key_code = position_codes.patch_codes(grid, grid)
            tokens = tokens + token_code.T.to(tokens.device)
            codes = tuple(position_codes.CODE_SCALE * code.to(tokens.device) for code in (query_code, key_code))
        tokens = tokens.expand(len(image_tokens), -1, -1).to(image_tokens.dtype)
        return self.backbone(tokens, image_tokens, progress, codes)

    def scene_codes(self, backbone_tokens: torch.Tensor) -> torch.Tensor:
        """(B, C, 3·P·P) → upsampled triplanes (B, 3, C', 2P, 2P)."""
        batch, channels, _ = backbone_tokens.shape
        size = self.config.triplane.plane_size
        planes = backbone_tokens.view(batch, channels, 3, size, size).transpose(1, 2)
        planes = planes.reshape(3 * batch, channels, size, size)
        planes = self.upsampler(planes)
        return planes.view(batch, 3, *planes.shape[1:])

    # Public API.

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, progress=None) -> torch.Tensor:
        """Images (B, H, W, 3) float in [0, 1] → scene codes (B, 3, C, H', W') float32 on the model's device.
        progress(fraction), if given, is called as the backbone advances (it may raise to stop)."""
        pixels = self.resize_images(images)
        with self._autocast():
            tokens = self.image_tokens(pixels)
            return_freed_memory()  # the ViT's activations, before the backbone's larger ones
            tokens = self.backbone_tokens(tokens, progress)
            codes = self.scene_codes(tokens)
        return_freed_memory()  # the backbone's, before extraction
        return codes.float()

    @torch.inference_mode()
    def query(self, scene_code: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One scene code (3, C, H, W) and world points (N, 3) → density after activation (N,), colour (N, 3) in
        [0, 1]. Runs in chunks of `query_chunk_size` points; results are on the points' device."""
        if len(points) == 0:
            return points.new_zeros(0), points.new_zeros(0, 3)
        scene_code = scene_code.to(self.device, torch.float32)
        densities, colors = [], []
        for chunk in points.split(self.query_chunk_size):
            raw = self._decode(self._triplane_features(scene_code, chunk.to(self.device, torch.float32)))
            densities.append(torch.exp(raw[:, 0] + self.config.renderer.density_bias).to(points.device))
            colors.append(torch.sigmoid(raw[:, 1:4]).to(points.device))
        return torch.cat(densities), torch.cat(colors)

    @torch.inference_mode()
    def grid_density(self, scene_code: torch.Tensor, axis: torch.Tensor):
        """The density at the points of a grid: axis (R,) world coordinates → density_at(indices (N, 3) int64 into
        axis) → (N,) on the indices' device, bitwise what `query` gives at those points. Each plane is sampled once
        at every pair of axis coordinates (3·R² rows), so a grid point's features are three row lookups instead of
        three bilinear samples."""
        scene_code = scene_code.to(self.device, torch.float32)
        size, channels = len(axis), scene_code.shape[1]
        coords = (axis / self.config.renderer.radius).to(self.device, torch.float32)
        pairs = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)[None]
        tables = torch.empty(3, size, size, channels, device=self.device)  # plane, first, second → row
        step = max(1, TABLE_SAMPLES // size)
        for plane, first in itertools.product(range(3), range(0, size, step)):  # beside the tables: a few rows
            tables[plane, first:first + step] = F.grid_sample(
                scene_code[plane:plane + 1], pairs[:, first:first + step], mode="bilinear", padding_mode="zeros",
                align_corners=False)[0].permute(1, 2, 0)
        tables = tables.view(3 * size * size, channels)
        plane_offsets = torch.arange(3, device=self.device) * size * size

        @torch.inference_mode()
        def density_at(indices: torch.Tensor) -> torch.Tensor:
            i, j, k = indices.to(self.device).unbind(1)
            rows = torch.stack([i * size + j, i * size + k, j * size + k], dim=1) + plane_offsets
            densities = []
            for chunk in rows.split(self.query_chunk_size):
                samples = tables.index_select(0, chunk.reshape(-1)).view(len(chunk), 3, channels)
                raw = self._decode(self._reduce_features(samples))
                densities.append(torch.exp(raw[:, 0] + self.config.renderer.density_bias))
            return torch.cat(densities).to(indices.device)

        return density_at

    @torch.inference_mode()
    def extract_mesh(self, scene_code: torch.Tensor, resolution: int = 256, threshold: float = 25.0, progress=None,
                     coarse_to_fine=True, stats=None):
        """Marching cubes on the density field of one scene code, with vertex colours → core.mesh.Mesh."""
        from .extract import extract_mesh

        return extract_mesh(
            lambda points: self.query(scene_code, points)[0],
            lambda points: self.query(scene_code, points)[1],
            grid_density=lambda axis: self.grid_density(scene_code, axis),
            resolution=resolution,
            threshold=threshold,
            radius=self.config.renderer.radius,
            coarse_to_fine=coarse_to_fine,
            progress=progress,
            stats=stats,
        )

    def _decode(self, features: torch.Tensor) -> torch.Tensor:
        """Decoder output (N, 4). BLAS multiplies a handful of rows with other kernels, whose rounding differs: a
        short batch is padded so that a point's value never depends on the batch it came in (coarse-to-fine
        extraction asks for batches of any size and must reproduce the dense grid exactly)."""
        count = len(features)
        if count < MIN_DECODER_ROWS:
            features = torch.cat([features, features.new_zeros(MIN_DECODER_ROWS - count, features.shape[1])])
        return self.decoder(features)[:count]

    def _triplane_features(self, scene_code: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.triplane_features(scene_code[None], points[None])[0]

    def triplane_features(self, scene_codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Scene codes (B, 3, C, H, W), world points (B, N, 3) → decoder input (B, N, 3·C) (or (B, N, C) with
        mean reduction): bilinear samples of the three planes at the points' (x,y), (x,z), (y,z). Differentiable;
        the decoder turns it into raw (density, colour logits)."""
        batch, count = points.shape[:2]
        coords = points / self.config.renderer.radius
        grid = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [1, 2]]], dim=1)
        samples = F.grid_sample(scene_codes.flatten(0, 1), grid.flatten(0, 1).unsqueeze(1), mode="bilinear",
                                padding_mode="zeros", align_corners=False)  # (B·3, C, 1, N)
        samples = samples.view(batch, 3, -1, count).permute(0, 3, 1, 2).flatten(0, 1)
        return self._reduce_features(samples).view(batch, count, -1)

    def _reduce_features(self, samples: torch.Tensor) -> torch.Tensor:
        """(N, 3 planes, C) → decoder input: plane-major concatenation, or the mean of the planes."""
        if self.config.renderer.feature_reduction == "mean":
            return samples.mean(1)
        return samples.flatten(1)

    def encode_dtype(self) -> torch.dtype:
        """The dtype encode computes in on this model's device, from encode_precision."""
        precision = self.encode_precision
        if precision not in PRECISION_CHOICES:
            raise ModelError(f"Unknown encode precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}.")
        if precision == "native" and self.device.type == "cpu" and cpu_has_native_bfloat16():
            return torch.bfloat16
        if precision in ("auto", "native"):
            return torch.float16 if self.device.type == "cuda" else torch.float32
        return PRECISIONS[precision]

    def _autocast(self):
        dtype = self.encode_dtype()
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)
