"""The external env protocol's codec: frames, messages and arrays (docs/external_env_protocol.md).

A frame is a 4-byte big-endian length followed by that many bytes of one msgpack map with a
`type` field. Arrays travel as msgpack extension type 1 (dtype code, shape, raw
little-endian bytes) or as plain msgpack numbers and lists. Nothing here runs code named in
a message: decoding yields only numbers, strings, bytes, lists, maps and numpy arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np

PROTOCOL_NAME = "tunerl-external"
# (major, minor): a client with another major is refused; minors differ only by optional
# fields that the other side ignores.
PROTOCOL_VERSION = (1, 0)
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
NDARRAY_EXT = 1
# Extension-type dtype codes; the array's bytes are little-endian, C order.
DTYPE_CODES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("<i8"),
    5: np.dtype("u1"),
    6: np.dtype("bool"),
    7: np.dtype("i1"),
    8: np.dtype("<i2"),
    9: np.dtype("<f2"),
}
_CODE_OF = {dtype.str.lstrip("<|"): code for code, dtype in DTYPE_CODES.items()}
MAX_NDIM = 32

# Message types.
HELLO, WELCOME, ERROR, PING, PONG, BYE = "hello", "welcome", "error", "ping", "pong", "bye"
STEP, ACTIONS = "step", "actions"
GET_WEIGHTS, WEIGHTS, EPISODES, ACK = "get_weights", "weights", "episodes", "ack"
# Inference modes a client asks for in its hello.
REMOTE_INFERENCE, LOCAL_INFERENCE = "remote", "local"
INFERENCE_MODES = (REMOTE_INFERENCE, LOCAL_INFERENCE)

# Error codes (the `code` field of an error message).
VERSION_MISMATCH = "version_mismatch"
BAD_TOKEN = "bad_token"
MALFORMED = "malformed"
TOO_LARGE = "too_large"
BAD_REQUEST = "bad_request"
UNSUPPORTED = "unsupported"
TIMEOUT = "timeout"
SHUTTING_DOWN = "shutting_down"


class ProtocolError(ValueError):
    """A message that breaks the protocol; `code` is the error code the reply carries and
    `fatal` whether the connection is closed after the reply."""

    def __init__(self, code: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


class RemoteError(RuntimeError):
    """An error message the other side sent (its code and text)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code


# ------------------------------------------------------------------------------- arrays
def _ext_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return array_to_ext(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in a protocol message")


def array_to_ext(array: np.ndarray) -> msgpack.ExtType:
    """A numpy array as extension type 1: dtype code, ndim, ndim uint32 dims, raw bytes."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    code = _CODE_OF.get(dtype.str.lstrip("<|="))
    if code is None:
        allowed = ", ".join(str(d) for d in DTYPE_CODES.values())
        raise TypeError(f"cannot send an array of dtype {array.dtype}; allowed: {allowed}")
    data = np.ascontiguousarray(array, dtype=DTYPE_CODES[code])
    head = struct.pack(f"<BB{array.ndim}I", code, array.ndim, *array.shape)
    return msgpack.ExtType(NDARRAY_EXT, head + data.tobytes())


def _ext_hook(code: int, payload: bytes) -> np.ndarray:
    if code != NDARRAY_EXT:
        raise ProtocolError(MALFORMED, f"unknown msgpack extension type {code} (only 1: ndarray)")
    if len(payload) < 2:
        raise ProtocolError(MALFORMED, "ndarray extension shorter than its 2-byte header")
    dtype_code, ndim = payload[0], payload[1]
    dtype = DTYPE_CODES.get(dtype_code)
    if dtype is None:
        raise ProtocolError(
            MALFORMED, f"ndarray dtype code {dtype_code} is unknown; allowed 1-{len(DTYPE_CODES)}"
        )
    if ndim > MAX_NDIM or len(payload) < 2 + 4 * ndim:
        raise ProtocolError(MALFORMED, f"ndarray header: ndim {ndim} does not fit the payload")
    shape = struct.unpack_from(f"<{ndim}I", payload, 2)
    data = memoryview(payload)[2 + 4 * ndim :]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(
            MALFORMED,
            f"ndarray of shape {list(shape)} and dtype {dtype} needs {expected} bytes, got "
            f"{len(data)}",
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# ------------------------------------------------------------------------------ messages
def encode(message: dict[str, Any]) -> bytes:
    """One frame: the length header and the msgpack body (numpy arrays as extension 1)."""
    body = msgpack.packb(message, default=_ext_default, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The message in a frame's body; ProtocolError(MALFORMED) if it is not a msgpack map
    with a string `type`."""
    try:
        message = msgpack.unpackb(body, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except ProtocolError:
        raise
    except Exception as error:  # noqa: BLE001 - msgpack raises several types for bad bytes
        raise ProtocolError(MALFORMED, f"the body is not valid msgpack ({error})") from None
    if not isinstance(message, dict):
        raise ProtocolError(
            MALFORMED, f"a message must be a msgpack map, got {type(message).__name__}"
        )
    if not isinstance(message.get("type"), str):
        raise ProtocolError(MALFORMED, "a message needs a string field 'type'")
    return message


class FrameReader:
    """Splits received bytes into frame bodies. A header announcing more than
    `max_message_bytes` raises ProtocolError(TOO_LARGE, fatal): the stream cannot be
    trusted after it."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        bodies = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_message_bytes:
                raise ProtocolError(
                    TOO_LARGE,
                    f"a message of {length} bytes announced; this server takes at most "
                    f"max_message_bytes={self.max_message_bytes}",
                    fatal=True,
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[HEADER.size : end]))
            del self._buffer[:end]
        return bodies

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


def error_message(code: str, text: str, fatal: bool) -> dict[str, Any]:
    return {"type": ERROR, "code": code, "message": text, "fatal": fatal}


def as_array(value: Any, where: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A number, (nested) list or ndarray as an array of `dtype`; ProtocolError naming
    `where` otherwise."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - ragged lists and other odd values
            raise ProtocolError(BAD_REQUEST, f"{where} is not an array of numbers") from None
    if array.dtype.kind not in "biuf":
        raise ProtocolError(
            BAD_REQUEST, f"{where} must hold numbers, got {array.dtype} ({str(value)[:80]})"
        )
    return array.astype(dtype, copy=False)
