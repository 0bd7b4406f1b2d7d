"""The codec against the protocol document's test vectors, and its refusals."""

import json
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from tunerl.env.external import protocol as p

DOC = Path(__file__).resolve().parents[2] / "docs" / "external_env_protocol.md"


def _vectors() -> list[tuple[str, str, bytes]]:
    text = DOC.read_text()
    found = re.findall(r"message: `(.+?)`\nbytes: `([0-9a-f]+)`", text)
    assert len(found) >= 5, "the document's test vectors were not found"
    return [(message, bytes.fromhex(hex_bytes)) for message, hex_bytes in found]


@pytest.mark.parametrize("message_text, frame", _vectors())
def test_document_vectors_decode_and_encode_exactly(message_text, frame):
    (length,) = p.HEADER.unpack_from(frame)
    assert length == len(frame) - 4
    decoded = p.decode_body(frame[4:])
    assert p.encode(decoded) == frame
    if "ndarray" in message_text:
        obs = decoded["envs"][0]["obs"]
        assert obs.dtype == np.float32 and obs.tolist() == [0.5, -1.0]
        assert decoded["envs"][0]["reward"] == 1.0
    else:
        assert decoded == json.loads(message_text)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, -2], dtype=np.int64),
        np.array(3.5, dtype=np.float64),
        np.array([True, False]),
        np.zeros((0, 4), np.float32),
    ],
)
def test_arrays_round_trip_with_dtype_and_shape(array):
    decoded = p.decode_body(p.encode({"type": "x", "a": array})[4:])["a"]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_arrays_are_sent_little_endian():
    array = np.array([1.0, 2.0], dtype=">f4")
    decoded = p.decode_body(p.encode({"type": "x", "a": array})[4:])["a"]
    assert decoded.tolist() == [1.0, 2.0]


def test_unsupported_dtype_is_refused_when_encoding():
    with pytest.raises(TypeError, match="complex64"):
        p.encode({"type": "x", "a": np.zeros(2, np.complex64)})


@pytest.mark.parametrize(
    "body, words",
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (msgpack.packb({"kind": "step"}), "string field 'type'"),
        (msgpack.packb({"type": 3}), "string field 'type'"),
        (msgpack.packb({"type": "x", "a": msgpack.ExtType(9, b"")}), "extension type 9"),
        (msgpack.packb({"type": "x", "a": msgpack.ExtType(1, b"\x63\x01")}), "dtype code 99"),
        (
            msgpack.packb({"type": "x", "a": msgpack.ExtType(1, b"\x01\x01\x02\x00\x00\x00ab")}),
            "needs 8 bytes, got 2",
        ),
    ],
)
def test_malformed_bodies_raise_malformed(body, words):
    with pytest.raises(p.ProtocolError, match=words) as caught:
        p.decode_body(body)
    assert caught.value.code == p.MALFORMED and not caught.value.fatal


def test_frame_reader_splits_partial_and_joined_frames():
    frames = p.encode({"type": "a"}) + p.encode({"type": "b", "x": 1})
    reader = p.FrameReader()
    assert reader.feed(frames[:3]) == []
    bodies = reader.feed(frames[3:])
    assert [p.decode_body(b)["type"] for b in bodies] == ["a", "b"]
    assert reader.pending_bytes == 0


def test_frame_reader_refuses_an_oversized_header_before_reading_it():
    reader = p.FrameReader(max_message_bytes=100)
    with pytest.raises(p.ProtocolError, match="101 bytes") as caught:
        reader.feed(p.HEADER.pack(101))
    assert caught.value.code == p.TOO_LARGE and caught.value.fatal
