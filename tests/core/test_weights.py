"""Loading: config.yaml reading, strict checkpoint mapping, refusal of bad files, the HF cache path, devices."""

import builtins
import dataclasses
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from core.config import ModelConfig, load_config, save_config
from core.errors import ModelError
from core.model import TripoSR
from core.weights import PINNED_REVISIONS, load_model, official_state_dict, resolve_device
from tests.hub import add_to_hub_cache, tiny_hub_files

OFFICIAL_CONFIG = {
    "cond_image_size": 512,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 32, "num_channels": 1024},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {
        "in_channels": "${tokenizer.num_channels}",
        "num_attention_heads": 16,
        "attention_head_dim": 64,
        "num_layers": 16,
        "cross_attention_dim": 768,
    },
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 1024, "out_channels": 40},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {
        "radius": 0.87,
        "feature_reduction": "concat",
        "density_activation": "exp",
        "density_bias": -1.0,
        "num_samples_per_ray": 128,
    },
}


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path) -> Path:
    """A writable copy of the tiny model folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.yaml", "vit_config.json", "model.ckpt"):
        shutil.copy(tiny_model_dir / name, folder / name)
    return folder


def edit_config(folder: Path, edit):
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    edit(raw)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))


def edit_checkpoint(folder: Path, edit):
    state = torch.load(folder / "model.ckpt", weights_only=True)
    edit(state)
    torch.save(state, folder / "model.ckpt")


def load_error(folder, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        load_model(folder, device="cpu", **kwargs)
    return str(info.value)


# Config


def test_official_config_gives_the_full_size_model(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(OFFICIAL_CONFIG))
    assert load_config(path) == ModelConfig()


def test_saved_config_reads_back_equal(tmp_path, tiny_model_dir):
    assert save_config(ModelConfig(), tmp_path).name == "config.yaml"
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == OFFICIAL_CONFIG
    assert load_config(tmp_path / "config.yaml") == ModelConfig()
    tiny = load_config(tiny_model_dir / "config.yaml")
    save_config(tiny, tmp_path)
    assert (tmp_path / "vit_config.json").is_file() and load_config(tmp_path / "config.yaml") == tiny


def test_fixture_config_resolves_its_interpolation(tiny_model_dir):
    config = load_config(tiny_model_dir / "config.yaml")
    assert config.backbone.in_channels == 64 and isinstance(config.backbone.in_channels, int)
    assert config.vit.image_size == 64 and config.vit.hidden_size == 64
    assert config.decoder.n_hidden_layers == 2 and config.cond_image_size == 128


def test_interpolation_inside_a_string_and_chained(tmp_path):
    raw = dict(OFFICIAL_CONFIG, renderer=dict(OFFICIAL_CONFIG["renderer"], feature_reduction="con${x.tail}"))
    raw["x"] = {"tail": "${x.real}", "real": "cat"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelError, match="unknown field.*x"):  # an extra section is still not a TripoSR config
        load_config(path)
    del raw["x"]
    raw["renderer"]["feature_reduction"] = "${renderer.density_activation}"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelError, match="'renderer.feature_reduction' is 'exp'"):
        load_config(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["backbone"].pop("num_layers"), "required field 'backbone.num_layers' is missing"),
        (lambda c: c.pop("decoder"), "section 'decoder' is missing"),
        (lambda c: c.pop("cond_image_size"), "'cond_image_size' is missing"),
        (lambda c: c["backbone"].update(num_layers="two"), "'backbone.num_layers' must be int"),
        (lambda c: c["renderer"].update(radius="far"), "'renderer.radius' must be float"),
        (lambda c: c["tokenizer"].update(plane_size=True), "'tokenizer.plane_size' must be int"),
        (lambda c: c["backbone"].update(in_channels="${tokenizer.channels}"), "tokenizer.channels.*does not exist"),
        (lambda c: c["backbone"].update(in_channels="${backbone.in_channels}"), "circular reference"),
        (lambda c: c.update(backbone_cls="my.own.Transformer"), "'backbone_cls' names the class 'my.own.Transformer'"),
        (lambda c: c["backbone"].update(norm_type="ada_norm"), "'backbone.norm_type' is 'ada_norm'"),
        (lambda c: c["renderer"].update(density_activation="relu"), "'renderer.density_activation' is 'relu'"),
        (lambda c: c["decoder"].update(activation="tanh"), "'decoder.activation' is 'tanh'"),
        (lambda c: c["decoder"].update(in_channels=25), "'decoder.in_channels' \\(25\\) must equal"),
        (lambda c: c["decoder"].update(colour=1), "unknown field\\(s\\) decoder.colour"),
        (lambda c: c["image_tokenizer"].update(pretrained_model_name_or_path="facebook/dino-vits8"), "dino-vits8"),
        (lambda c: c["image_tokenizer"].update(pretrained_model_name_or_path="x.json"), "x.json does not exist"),
    ],
)
def test_bad_config_is_refused_naming_field_and_file(model_dir, edit, message):
    edit_config(model_dir, edit)
    text = load_error(model_dir)
    assert str(model_dir / "config.yaml") in text or "x.json" in text
    assert re.search(message, text), text


def test_unparsable_config_and_vit_json(model_dir):
    (model_dir / "vit_config.json").write_text("{not json")
    assert "Cannot read the ViT config file" in load_error(model_dir)
    (model_dir / "config.yaml").write_text("a: [unclosed")
    assert "is not valid YAML" in load_error(model_dir)
    (model_dir / "config.yaml").write_text("- just\n- a list\n")
    assert "does not hold a mapping" in load_error(model_dir)


# Checkpoint


def test_loads_strictly_and_maps_every_key(model_dir):
    model = load_model(model_dir, device="cpu")
    assert isinstance(model, TripoSR) and not model.training and model.device == torch.device("cpu")
    assert not any(p.requires_grad for p in model.parameters())
    original = torch.load(model_dir / "model.ckpt", weights_only=True)
    saved = official_state_dict(model)
    assert saved.keys() == original.keys() and len(saved) == 95
    for key, value in original.items():
        if "pooler" not in key:
            assert torch.equal(saved[key], value), key


def test_wrong_key_is_named(model_dir):
    edit_checkpoint(model_dir, lambda s: s.__setitem__("backbone.proj_in.wieght", s.pop("backbone.proj_in.weight")))
    text = load_error(model_dir)
    assert "missing keys: backbone.proj_in.weight" in text and "unexpected keys: backbone.proj_in.wieght" in text


def test_missing_key_is_named(model_dir):
    edit_checkpoint(model_dir, lambda s: s.pop("backbone.transformer_blocks.1.attn2.to_k.weight"))
    assert "missing keys: backbone.transformer_blocks.1.attn2.to_k.weight" in load_error(model_dir)


def test_missing_pooler_is_named(model_dir):
    edit_checkpoint(model_dir, lambda s: s.pop("image_tokenizer.model.pooler.dense.bias"))
    assert "missing keys: image_tokenizer.model.pooler.dense.bias" in load_error(model_dir)


def test_unexpected_key_is_named(model_dir):
    edit_checkpoint(model_dir, lambda s: s.__setitem__("extra.thing", torch.zeros(2)))
    assert "unexpected keys: extra.thing" in load_error(model_dir)


def test_wrong_shape_is_named(model_dir):
    edit_checkpoint(model_dir, lambda s: s.__setitem__("decoder.layers.2.weight", torch.zeros(32, 31)))
    assert "wrong shapes: decoder.layers.2.weight (32, 31) (expected (32, 32))" in load_error(model_dir)


def test_non_float_tensor_is_refused(model_dir):
    edit_checkpoint(model_dir, lambda s: s.__setitem__("decoder.layers.2.bias", torch.zeros(32, dtype=torch.int64)))
    assert "non-float tensors: decoder.layers.2.bias" in load_error(model_dir)


def test_half_precision_checkpoint_loads_as_float32(model_dir):
    edit_checkpoint(model_dir, lambda s: s.update({k: v.half() for k, v in s.items()}))
    model = load_model(model_dir, device="cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_truncated_checkpoint(model_dir):
    data = (model_dir / "model.ckpt").read_bytes()
    (model_dir / "model.ckpt").write_bytes(data[: len(data) // 2])
    assert "damaged or not a PyTorch checkpoint" in load_error(model_dir)


@pytest.mark.parametrize("content", [b"", b"<html>404 not found</html>", b"\x80\x02}q\x00."])
def test_not_a_checkpoint(model_dir, content):
    (model_dir / "model.ckpt").write_bytes(content)
    assert "model.ckpt" in load_error(model_dir)


def test_pickle_of_something_else(model_dir):
    torch.save([torch.zeros(2)], model_dir / "model.ckpt")
    assert "does not hold a state dict of named tensors" in load_error(model_dir)


class WritesMarker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(model_dir, tmp_path, zip_format):
    marker = tmp_path / "pwned"
    state = torch.load(model_dir / "model.ckpt", weights_only=True)
    state["backbone.proj_in.weight"] = WritesMarker(marker)
    if zip_format:
        torch.save(state, model_dir / "model.ckpt")
    else:
        (model_dir / "model.ckpt").write_bytes(pickle.dumps(state))
    assert not marker.exists()
    text = load_error(model_dir)
    assert "Refused to load" in text and "Nothing from it was executed" in text
    assert not marker.exists()


def test_legacy_checkpoint_format_loads(model_dir):
    state = torch.load(model_dir / "model.ckpt", weights_only=True)
    torch.save(state, model_dir / "model.ckpt", _use_new_zipfile_serialization=False)
    load_model(model_dir, device="cpu")


@pytest.mark.parametrize("name", ["model.ckpt", "config.yaml"])
def test_missing_file_in_folder(model_dir, name):
    (model_dir / name).unlink()
    text = load_error(model_dir)
    assert f"has no {name}" in text and str(model_dir) in text


def test_missing_folder(tmp_path):
    text = load_error(tmp_path / "nowhere")
    assert "does not exist" in text and "nowhere" in text


# Devices


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ModelError, match="Unknown device"):
        resolve_device("abacus")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="'cuda' is not available"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ModelError, match="'mps' is not available"):
            resolve_device("mps")


# The Hugging Face cache (a real huggingface_hub cache layout; no network: allow_download=False)


def test_loads_from_hub_cache_without_network(tiny_model_dir, tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    add_to_hub_cache(tmp_path, "someone/tiny-triposr", revision, tiny_hub_files(tiny_model_dir))
    model = load_model("someone/tiny-triposr", device="cpu", cache_dir=tmp_path, allow_download=False)
    assert model.config.cond_image_size == 128
    model = load_model("someone/tiny-triposr", revision=revision, cache_dir=tmp_path, allow_download=False)
    assert model.config.triplane.plane_size == 8


def test_corrupt_cached_checkpoint_is_deleted_not_used(tiny_model_dir, tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = add_to_hub_cache(
        tmp_path, "someone/tiny-triposr", revision, tiny_hub_files(tiny_model_dir, corrupt_checkpoint=True)
    )
    blob = Path(os.path.realpath(snapshot / "model.ckpt"))
    with pytest.raises(ModelError, match="cached model.ckpt of someone/tiny-triposr was damaged.*deleted"):
        load_model("someone/tiny-triposr", device="cpu", cache_dir=tmp_path, allow_download=False)
    assert not blob.exists() and not (snapshot / "model.ckpt").is_symlink()
    with pytest.raises(ModelError, match="not in the local cache"):  # gone, so the next try asks for a download
        load_model("someone/tiny-triposr", device="cpu", cache_dir=tmp_path, allow_download=False)


def test_official_checkpoint_is_checked_against_its_known_sha256(tiny_model_dir, tmp_path):
    # A cached file at the pinned official revision whose content is not the official checkpoint (here: the
    # tiny one, stored under the official blob name) must be refused and deleted before it is loaded.
    revision = PINNED_REVISIONS["stabilityai/TripoSR"]
    files = tiny_hub_files(tiny_model_dir)
    files["model.ckpt"] = (files["model.ckpt"][0], "429e2c6b22a0923967459de24d67f05962b235f79cde6b032aa7ed2ffcd970ee")
    snapshot = add_to_hub_cache(tmp_path, "stabilityai/TripoSR", revision, files)
    with pytest.raises(ModelError, match="damaged \\(sha256 [0-9a-f]{64}, expected 429e2c6b"):
        load_model(device="cpu", cache_dir=tmp_path, allow_download=False)
    assert not (snapshot / "model.ckpt").exists()


def test_not_cached_and_no_download_explains_what_to_do(tmp_path):
    text = load_error("stabilityai/TripoSR", cache_dir=tmp_path, allow_download=False)
    assert "not in the local cache" in text and "downloads are not allowed" in text
    assert "IMAGE_TO_MESH_MODEL" in text and "--model PATH" in text and "preference" in text


def test_full_size_config_builds_on_meta_with_the_official_parameter_count():
    with torch.device("meta"):
        model = TripoSR(ModelConfig())
    pooler = 768 * 768 + 768  # in the official checkpoint, unused
    assert sum(p.numel() for p in model.parameters()) + pooler == 419_275_628
    assert len(official_state_dict_keys(model)) == 549


def official_state_dict_keys(model):
    from core.weights import checkpoint_key_map

    return [key for _, key in checkpoint_key_map(model)]


def test_config_dataclasses_are_plain():
    assert dataclasses.asdict(ModelConfig())["backbone"]["num_layers"] == 16


@pytest.mark.slow  # huggingface_hub retries for about 25 s before it gives up
def test_unreachable_hub_explains_what_to_do(tmp_path):
    import subprocess
    import sys

    code = "from core.weights import load_model; load_model(cache_dir=__import__('sys').argv[1], device='cpu')"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"},
    )
    assert "core.errors.ModelError" in result.stderr and "huggingface.co could not be reached" in result.stderr
    assert "IMAGE_TO_MESH_MODEL" in result.stderr
