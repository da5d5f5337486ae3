"""The worker's message format over a pair of pipes: no pickle, so a message can never run code.

A message is MAGIC, a little-endian uint32 header length, a UTF-8 JSON header, then the raw bytes of the
numpy arrays the header lists under "arrays" ([name, dtype, shape], in order). Only plain numeric dtypes
travel. The magic lets the reader skip stray bytes a library printed to the stream before the worker
redirected its stdout (the skipped text is handed to `on_stray` for the log).
"""

import json
import struct

import numpy as np

from .errors import WorkerError

MAGIC = b"I2M\x01"
MAX_HEADER_BYTES = 16 * 1024 * 1024
DTYPES = {"|u1", "<u2", "<u4", "<i4", "<i8", "<f2", "<f4", "<f8"}
_LENGTH = struct.Struct("<I")


def write_message(stream, header: dict, arrays: dict | None = None) -> None:
    """Write one message and flush. Arrays are sent as C-contiguous little-endian bytes."""
    arrays = {name: _little_endian(np.asarray(array)) for name, array in (arrays or {}).items()}
    header = dict(header, arrays=[[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()])
    encoded = json.dumps(header).encode("utf-8")
    stream.write(MAGIC + _LENGTH.pack(len(encoded)) + encoded)
    for array in arrays.values():
        if array.size:
            stream.write(memoryview(array.reshape(-1).view(np.uint8)))
    stream.flush()


def read_message(stream, on_stray=None) -> tuple[dict, dict[str, np.ndarray]] | None:
    """Read one message; None when the stream ended cleanly between messages.
    Raises WorkerError when the stream breaks off inside a message or holds something else."""
    if not _skip_to_magic(stream, on_stray):
        return None
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    if length > MAX_HEADER_BYTES:
        raise WorkerError(f"The worker sent a malformed message (header of {length} bytes).")
    try:
        header = json.loads(_read_exactly(stream, length).decode("utf-8"))
        specs = header.pop("arrays")
        arrays = {}
        for name, dtype, shape in specs:
            if dtype not in DTYPES:
                raise ValueError(f"dtype {dtype!r} is not allowed")
            arrays[name] = np.empty([int(n) for n in shape], dtype=np.dtype(dtype))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise WorkerError(f"The worker sent a malformed message ({error}).") from None
    for array in arrays.values():
        _read_into(stream, memoryview(array.reshape(-1).view(np.uint8)))
    return header, arrays


def _little_endian(array: np.ndarray) -> np.ndarray:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.str not in DTYPES:
        raise TypeError(f"arrays of dtype {array.dtype} cannot be sent to the worker")
    return np.ascontiguousarray(array, dtype=dtype)


def _skip_to_magic(stream, on_stray) -> bool:
    window = stream.read(len(MAGIC))
    stray = bytearray()
    while window != MAGIC:
        if len(window) < len(MAGIC):  # the stream ended
            _report_stray(stray + window, on_stray)
            return False
        stray.append(window[0])
        window = window[1:] + stream.read(1)
    _report_stray(stray, on_stray)
    return True


def _report_stray(stray: bytearray, on_stray) -> None:
    if stray and on_stray is not None:
        on_stray(stray.decode("utf-8", errors="replace"))


def _read_exactly(stream, size: int) -> bytes:
    data = bytearray(size)
    _read_into(stream, memoryview(data))
    return bytes(data)


def _read_into(stream, view: memoryview) -> None:
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            raise WorkerError("The worker's output broke off in the middle of a message.")
        filled += count
