"""The DINO ViT image tokenizer: a plain pre-LayerNorm vision transformer, numerically equal to transformers 4.35's
ViTModel called with interpolate_pos_encoding=True (pooler output unused)."""

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig
from .heap import release_file_pages


class ViTAttention(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        width = config.hidden_size
        self.query = nn.Linear(width, width, bias=config.qkv_bias)
        self.key = nn.Linear(width, width, bias=config.qkv_bias)
        self.value = nn.Linear(width, width, bias=config.qkv_bias)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = (
            projection(x).view(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)
            for projection in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, width))


class ViTBlock(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = ViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Normalised images (B, 3, H, W) → tokens (B, 1 + (H/p)·(W/p), hidden): CLS first, then patches row-major."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch_size
        self.cls_token = normal_parameter(1, 1, config.hidden_size)
        self.position_embeddings = normal_parameter(1, 1 + grid * grid, config.hidden_size)
        self.patch_embed = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        self.blocks = nn.ModuleList(ViTBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False  # training: recompute each block's activations in the backward pass

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixels)
        rows, cols = patches.shape[-2:]
        x = torch.cat([self.cls_token.expand(len(pixels), -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        x = x + self.interpolated_position_embeddings(rows, cols)
        for block in self.blocks:
            x = run_block(block, self.gradient_checkpointing, x)
        return self.norm(x)

    def interpolated_position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        grid = self.config.image_size // self.config.patch_size
        if rows == grid and cols == grid:
            return self.position_embeddings
        cls, patches = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        patches = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        # transformers 4.35 passes a scale factor of (n + 0.1) / grid, not the target size; PyTorch then maps
        # output to input coordinates with that factor, which shifts the samples (on the tiny test model,
        # interpolating to the target size instead changes the scene codes by up to 1e-2).
        patches = F.interpolate(
            patches.float(),
            scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid),
            mode="bicubic",
            align_corners=False,
        ).to(patches.dtype)
        return torch.cat([cls, patches.flatten(2).transpose(1, 2)], dim=1)


def normal_parameter(*shape: int, std: float = 0.02) -> nn.Parameter:
    """A parameter drawn from N(0, std²); left undrawn on the meta device, where load_model builds the model before
    the checkpoint fills it: drawing there loads PyTorch's Python meta kernels (about 800 modules, 67 MB)."""
    value = torch.empty(shape)
    if not value.is_meta:
        value.normal_(std=std)
    return nn.Parameter(value)


def run_block(block: nn.Module, checkpointing: bool, *inputs):
    """block(*inputs) for a transformer's loop over its blocks: with activation checkpointing when enabled and
    gradients are being recorded. In inference mode (an encode, which runs each block once) the block's
    memory-mapped weights are then dropped from resident memory until the next encode maps them again
    (core.heap.release_file_pages), so an encode holds one block's weights at a time, not the whole model's."""
    if checkpointing and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *inputs, use_reentrant=False)
    output = block(*inputs)
    if torch.is_inference_mode_enabled():
        release_file_pages(block.parameters())
    return output
