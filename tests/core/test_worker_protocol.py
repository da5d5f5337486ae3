"""The worker's message framing on its own: round trips, stray output, broken streams, refused dtypes."""

import io
import json
import struct

import numpy as np
import pytest

from core.errors import WorkerError
from core.worker_protocol import MAGIC, read_message, write_message


def _round_trip(header, arrays=None, on_stray=None):
    stream = io.BytesIO()
    write_message(stream, header, arrays)
    stream.seek(0)
    return read_message(stream, on_stray), stream


def test_header_and_arrays_come_back_identical():
    rng = np.random.default_rng(0)
    arrays = {
        "vertices": rng.normal(size=(100, 3)).astype(np.float32),
        "faces": rng.integers(0, 100, size=(50, 3)).astype(np.int32),
        "pixels": rng.integers(0, 65535, size=(7, 5, 4)).astype(np.uint16),
        "empty": np.zeros((0, 3), np.float32),
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "strided": np.arange(24, dtype=np.uint8).reshape(4, 6)[:, ::2],
    }
    (header, received), stream = _round_trip({"type": "result", "job": 3, "stage": "Ünïcode"}, arrays)
    assert header == {"type": "result", "job": 3, "stage": "Ünïcode"}
    assert list(received) == list(arrays)
    for name, array in arrays.items():
        assert received[name].shape == array.shape
        assert received[name].dtype == array.dtype.newbyteorder("<")
        np.testing.assert_array_equal(received[name], array)
    assert read_message(stream) is None  # clean end between messages


def test_several_messages_in_a_row_with_stray_output_between():
    stream = io.BytesIO()
    stream.write(b"a library printed this\n")
    write_message(stream, {"n": 1}, {"x": np.ones(3, np.float32)})
    stream.write(b"and this")
    write_message(stream, {"n": 2})
    stream.seek(0)
    stray = []
    first = read_message(stream, stray.append)
    second = read_message(stream, stray.append)
    assert first[0] == {"n": 1} and second == ({"n": 2}, {})
    assert stray == ["a library printed this\n", "and this"]
    assert read_message(stream, stray.append) is None


def test_output_that_breaks_off_inside_a_message_is_an_error():
    stream = io.BytesIO()
    write_message(stream, {"type": "result"}, {"x": np.arange(1000, dtype=np.float32)})
    data = stream.getvalue()
    for cut in (len(MAGIC) + 2, len(data) - 1):
        with pytest.raises(WorkerError, match="broke off"):
            read_message(io.BytesIO(data[:cut]))


def test_stray_text_then_end_is_a_clean_end():
    stray = []
    assert read_message(io.BytesIO(b"Segmentation fault\n"), stray.append) is None
    assert stray == ["Segmentation fault\n"]


def _raw_message(header: dict) -> bytes:
    encoded = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(encoded)) + encoded


@pytest.mark.parametrize("header", [
    {"type": "x", "arrays": [["a", "|O", [1]]]},  # objects would mean pickle
    {"type": "x", "arrays": [["a", "<f4", "bad"]]},
    {"type": "x"},  # no array list
])
def test_malformed_headers_are_refused(header):
    with pytest.raises(WorkerError, match="malformed"):
        read_message(io.BytesIO(_raw_message(header) + b"\0" * 64))


def test_huge_header_length_is_refused_before_reading_it():
    with pytest.raises(WorkerError, match="malformed"):
        read_message(io.BytesIO(MAGIC + struct.pack("<I", 2**31) + b"{}"))


def test_object_arrays_cannot_be_sent():
    with pytest.raises(TypeError, match="cannot be sent"):
        write_message(io.BytesIO(), {}, {"a": np.array([object()])})
