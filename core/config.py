"""Model configuration: dataclasses for every part of TripoSR, and a reader of the official config.yaml.

The official file is an OmegaConf document; we read it with yaml.safe_load and resolve its `${a.b}`
interpolations ourselves. Fields absent from the file take the reference code's defaults.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ModelError


@dataclass
class ViTConfig:
    """The DINO ViT image tokenizer (transformers ViTConfig fields we use)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True


@dataclass
class TriplaneConfig:
    plane_size: int = 32
    num_channels: int = 1024


@dataclass
class BackboneConfig:
    """Transformer1D: self-attention over triplane tokens, cross-attention to image tokens, GEGLU."""

    in_channels: int = 1024
    num_attention_heads: int = 16
    attention_head_dim: int = 64
    num_layers: int = 16
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    # Camera-aligned sin-cos position codes (core/position_codes.py); not part of the released model.
    position_codes: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass
class UpsamplerConfig:
    in_channels: int = 1024
    out_channels: int = 40


@dataclass
class DecoderConfig:
    """NeRF MLP: in_channels → n_neurons, n_hidden_layers × (n_neurons → n_neurons), → 4."""

    in_channels: int = 120
    n_neurons: int = 64
    n_hidden_layers: int = 9
    activation: str = "silu"


@dataclass
class RendererConfig:
    radius: float = 0.87
    feature_reduction: str = "concat"
    density_bias: float = -1.0


@dataclass
class ModelConfig:
    """Everything needed to build a TripoSR model. Defaults are the released stabilityai/TripoSR model."""

    cond_image_size: int = 512
    vit: ViTConfig = field(default_factory=ViTConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)


# The class strings of the released config; our modules implement exactly these.
KNOWN_CLASSES = {
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}

BUILTIN_VITS = {"facebook/dino-vitb16": ViTConfig()}

# Reference fields we accept only at the value our implementation computes (their code defaults).
_FIXED_FIELDS = {
    "image_tokenizer": {"enable_gradient_checkpointing": False},
    "backbone": {
        "out_channels": None,
        "dropout": 0.0,
        "attention_bias": False,
        "activation_fn": "geglu",
        "num_embeds_ada_norm": None,
        "only_cross_attention": False,
        "double_self_attention": False,
        "upcast_attention": False,
        "norm_type": "layer_norm",
        "norm_elementwise_affine": True,
        "gradient_checkpointing": False,
    },
    "decoder": {"bias": True},
    "renderer": {"color_activation": "sigmoid"},
}
# Reference fields that do not change what inference computes (weight init, ray sampling).
_IGNORED_FIELDS = {
    "decoder": {"weight_init", "bias_init"},
    "renderer": {"num_samples_per_ray", "randomized"},
}
_DENSITY_ACTIVATIONS = ("exp", "trunc_exp")  # trunc_exp only differs in its gradient
_ACTIVATIONS = ("silu", "relu")
_CODE_DEFAULTS = {"norm_num_groups", "position_codes"}  # dataclass fields the official file leaves to the code
_MISSING = object()
_INTERPOLATION = re.compile(r"\$\{([^${}]+)\}")


def load_config(path) -> ModelConfig:
    """Read an official-format config.yaml. Raises ModelError naming the file and the field on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"Cannot read the model config file {path}: {error}.") from None
    except yaml.YAMLError as error:
        raise ModelError(f"The model config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"The model config file {path} does not hold a mapping of settings.")
    return _Reader(raw, path).model_config()


def load_vit_config(path) -> ViTConfig:
    """Read a ViT config in transformers' config.json format."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The ViT config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(f"Cannot read the ViT config file {path}: {error}.") from None
    if not isinstance(raw, dict):
        raise ModelError(f"The ViT config file {path} does not hold a JSON object.")
    reader = _Reader(raw, path)
    if raw.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"{path}: field 'hidden_act' is {raw['hidden_act']!r}; only 'gelu' is supported.")
    if raw.get("model_type", "vit") != "vit":
        raise ModelError(f"{path}: field 'model_type' is {raw['model_type']!r}; only 'vit' is supported.")
    defaults = ViTConfig()
    values = {f.name: reader.get(raw, f.name, f.type, getattr(defaults, f.name)) for f in dataclasses.fields(ViTConfig)}
    config = ViTConfig(**values)
    if config.hidden_size % config.num_attention_heads:
        raise ModelError(f"{path}: hidden_size {config.hidden_size} is not a multiple of num_attention_heads.")
    return config


class _Reader:
    """Typed, interpolation-resolving access to a config mapping; every error names the file and field."""

    def __init__(self, root: dict, path: Path):
        self.root = root
        self.path = path

    def model_config(self) -> ModelConfig:
        for key, expected in KNOWN_CLASSES.items():
            value = self.get(self.root, key, str)
            if value != expected:
                raise ModelError(
                    f"{self.path}: field '{key}' names the class {value!r}, which this add-on does not implement "
                    f"(expected {expected!r}). Use a TripoSR config.yaml."
                )
        sections = ("image_tokenizer", "tokenizer", "backbone", "post_processor", "decoder", "renderer")
        known = set(KNOWN_CLASSES) | set(sections) | {"cond_image_size"}
        self._reject_unknown(self.root, "", known)

        vit_source = self.get(self.section("image_tokenizer"), "image_tokenizer.pretrained_model_name_or_path", str)
        backbone = self.dataclass_section("backbone", BackboneConfig)
        decoder = self.dataclass_section("decoder", DecoderConfig)
        renderer = self.dataclass_section("renderer", RendererConfig, extra={"density_activation"})
        config = ModelConfig(
            cond_image_size=self.get(self.root, "cond_image_size", int),
            vit=self.vit_config(vit_source),
            triplane=self.dataclass_section("tokenizer", TriplaneConfig),
            backbone=backbone,
            upsampler=self.dataclass_section("post_processor", UpsamplerConfig),
            decoder=decoder,
            renderer=renderer,
        )
        self._check_choices(config)
        return config

    def vit_config(self, source: str) -> ViTConfig:
        if source in BUILTIN_VITS:
            return dataclasses.replace(BUILTIN_VITS[source])
        if source.endswith(".json"):
            vit_path = Path(source)
            return load_vit_config(vit_path if vit_path.is_absolute() else self.path.parent / vit_path)
        raise ModelError(
            f"{self.path}: field 'image_tokenizer.pretrained_model_name_or_path' is {source!r}; expected "
            f"{' or '.join(map(repr, BUILTIN_VITS))} or the name of a ViT config .json file beside config.yaml."
        )

    def section(self, name: str) -> dict:
        value = self.resolve(self.root.get(name), name)
        if value is None:
            raise ModelError(f"{self.path}: the section '{name}' is missing.")
        if not isinstance(value, dict):
            raise ModelError(f"{self.path}: '{name}' must be a mapping of settings, not {type(value).__name__}.")
        return value

    def dataclass_section(self, name: str, cls, extra=frozenset()):
        section = self.section(name)
        fixed = _FIXED_FIELDS.get(name, {})
        for key, allowed in fixed.items():
            if key in section and self.resolve(section[key], f"{name}.{key}") != allowed:
                raise ModelError(
                    f"{self.path}: field '{name}.{key}' is {section[key]!r}; this add-on supports only {allowed!r}."
                )
        names = {f.name for f in dataclasses.fields(cls)}
        self._reject_unknown(section, f"{name}.", names | set(fixed) | _IGNORED_FIELDS.get(name, set()) | set(extra))
        values = {}
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name) if f.name in _CODE_DEFAULTS else _MISSING
            values[f.name] = self.get(section, f"{name}.{f.name}", f.type, default)
        return cls(**values)

    def get(self, mapping: dict, dotted: str, kind, default=_MISSING):
        key = dotted.rsplit(".", 1)[-1]
        if key not in mapping:
            if default is _MISSING:
                raise ModelError(f"{self.path}: the required field '{dotted}' is missing.")
            return default
        value = self.resolve(mapping[key], dotted)
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind)
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            bool: isinstance(value, bool),
            object: True,
        }[kind]
        if not ok:
            raise ModelError(
                f"{self.path}: field '{dotted}' must be {kind.__name__}, but it is {value!r} ({type(value).__name__})."
            )
        if kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise ModelError(f"{self.path}: field '{dotted}' must be a finite number, not {value}.")
        if kind is int and value <= 0:
            raise ModelError(f"{self.path}: field '{dotted}' must be a positive integer, not {value}.")
        return value

    def resolve(self, value, where: str, seen=()):
        """Resolve `${a.b}` references the way OmegaConf does: a whole-string reference keeps the target's type."""
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _INTERPOLATION.fullmatch(value)
        if whole:
            return self._lookup(whole.group(1), where, seen)
        return _INTERPOLATION.sub(lambda m: str(self._lookup(m.group(1), where, seen)), value)

    def _lookup(self, reference: str, where: str, seen):
        reference = reference.strip()
        if reference in seen:
            raise ModelError(f"{self.path}: field '{where}' has a circular reference '${{{reference}}}'.")
        node = self.root
        for part in reference.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelError(f"{self.path}: field '{where}' refers to '${{{reference}}}', which does not exist.")
            node = node[part]
        return self.resolve(node, where, seen + (reference,))

    def _reject_unknown(self, mapping: dict, prefix: str, known: set):
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            raise ModelError(f"{self.path}: unknown field(s) {', '.join(prefix + k for k in unknown)}.")

    def _check_choices(self, config: ModelConfig):
        activation = self.get(self.section("renderer"), "renderer.density_activation", str)
        if activation not in _DENSITY_ACTIVATIONS:
            raise ModelError(f"{self.path}: field 'renderer.density_activation' is {activation!r}; expected 'exp'.")
        if config.renderer.feature_reduction not in ("concat", "mean"):
            raise ModelError(
                f"{self.path}: field 'renderer.feature_reduction' is {config.renderer.feature_reduction!r}; "
                "expected 'concat' or 'mean'."
            )
        if config.decoder.activation not in _ACTIVATIONS:
            raise ModelError(
                f"{self.path}: field 'decoder.activation' is {config.decoder.activation!r}; expected 'silu' or 'relu'."
            )
        planes = 3 if config.renderer.feature_reduction == "concat" else 1
        if config.decoder.in_channels != planes * config.upsampler.out_channels:
            raise ModelError(
                f"{self.path}: 'decoder.in_channels' ({config.decoder.in_channels}) must equal "
                f"{planes} × 'post_processor.out_channels' ({config.upsampler.out_channels})."
            )
        if config.upsampler.in_channels != config.triplane.num_channels:
            raise ModelError(f"{self.path}: 'post_processor.in_channels' must equal 'tokenizer.num_channels'.")
        if config.backbone.in_channels != config.triplane.num_channels:
            raise ModelError(f"{self.path}: 'backbone.in_channels' must equal 'tokenizer.num_channels'.")
        if config.backbone.cross_attention_dim != config.vit.hidden_size:
            raise ModelError(f"{self.path}: 'backbone.cross_attention_dim' must equal the ViT hidden size.")
        from . import position_codes  # imports torch: only when a config is read to build a model

        if config.backbone.position_codes and (config.backbone.attention_head_dim < 4 * position_codes.FREQUENCIES
                                               or config.backbone.in_channels < 6 * position_codes.FREQUENCIES):
            raise ModelError(f"{self.path}: 'backbone.position_codes' needs attention_head_dim ≥ "
                             f"{4 * position_codes.FREQUENCIES} and in_channels ≥ {6 * position_codes.FREQUENCIES}.")
        if config.backbone.in_channels % config.backbone.norm_num_groups:
            raise ModelError(f"{self.path}: 'backbone.in_channels' must be a multiple of 'backbone.norm_num_groups'.")




def save_config(config: ModelConfig, folder) -> Path:
    """Write config.yaml in the official format (plus vit_config.json when the ViT is not the built-in DINO
    ViT-B/16) into folder, e.g. to ship a checkpoint made with this code. Returns the config.yaml path."""
    folder = Path(folder)
    vit_name = next((name for name, vit in BUILTIN_VITS.items() if vit == config.vit), None)
    if vit_name is None:
        vit_name = "vit_config.json"
        vit = dict(dataclasses.asdict(config.vit), model_type="vit", hidden_act="gelu", architectures=["ViTModel"])
        (folder / vit_name).write_text(json.dumps(vit, indent=2), encoding="utf-8")
    sections = {
        "image_tokenizer": {"pretrained_model_name_or_path": vit_name},
        "tokenizer": dataclasses.asdict(config.triplane),
        "backbone": dict(dataclasses.asdict(config.backbone), in_channels="${tokenizer.num_channels}"),
        "post_processor": dataclasses.asdict(config.upsampler),
        "decoder": dataclasses.asdict(config.decoder),
        "renderer": dict(dataclasses.asdict(config.renderer), density_activation="exp", num_samples_per_ray=128),
    }
    for name in _CODE_DEFAULTS:  # left to the code when at their defaults, as upstream does
        if getattr(config.backbone, name) == getattr(BackboneConfig, name):
            del sections["backbone"][name]
    raw = {"cond_image_size": config.cond_image_size}
    for name, section in sections.items():
        raw[f"{name}_cls"] = KNOWN_CLASSES[f"{name}_cls"]
        raw[name] = section
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
