"""core.preprocess.check_image_file: what the command line checks before loading the model, without decoding."""

import pytest

from core.errors import InputError
from core.preprocess import check_image_file, load_rgba


def test_a_readable_image_passes(tiny_model_dir):
    check_image_file(tiny_model_dir / "input.png")


@pytest.mark.parametrize("name, content", [("missing.png", None), ("notes.png", b"just text, no image"),
                                           ("scan.exr", b"v/1\x01" + bytes(12))])
def test_the_same_message_as_loading(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as checked:
        check_image_file(path)
    with pytest.raises(InputError) as loaded:
        load_rgba(path)
    assert str(checked.value) == str(loaded.value)


def test_a_cut_off_file_is_found_only_when_loaded(tiny_model_dir, tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes((tiny_model_dir / "input.png").read_bytes()[:200])
    check_image_file(path)  # the header is whole
    with pytest.raises(InputError, match="cannot be decoded"):
        load_rgba(path)
