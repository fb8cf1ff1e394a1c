"""The wire format of every FedIoT message: no code-executing deserializer, ever.

    b"FIOT1" | header length (4 bytes, little-endian) | JSON header | tensor bytes

The JSON header holds the message type, sender, receiver and the fields. Plain values (None, bool,
int, finite float, str, lists, dicts with string keys) are JSON; tensors are described in the
header (`{"__tensor__": [dtype, shape, offset, nbytes]}`) and travel as raw little-endian bytes
after it. Decoding parses JSON (NaN and Infinity refused) and copies tensor bytes into arrays of an
allowed dtype; nothing in a message can make the receiver run code. Anything else is a `WireError`
naming what was wrong.
"""
from __future__ import annotations

import json
import math
import struct
from typing import Any, Callable

import numpy as np
import torch

MAGIC = b"FIOT1"
_LEN = struct.Struct("<I")
_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8"), "int64": np.dtype("<i8")}
_MAX_DEPTH = 8
_MAX_DIMS = 4


def header_length_bytes(n: int) -> bytes:
    """The header-length field that follows the magic."""
    return _LEN.pack(n)


class WireError(ValueError):
    """Bytes that are not a well-formed FedIoT message."""


def encode(msg_type: str, sender: int, receiver: int, params: dict[str, Any]) -> bytes:
    """Serialise one message (tensors as raw bytes, the rest as JSON)."""
    blobs: list[bytes] = []
    offset = 0

    def plain(value: Any, depth: int) -> Any:
        nonlocal offset
        if depth > _MAX_DEPTH:
            raise WireError("message nests deeper than allowed")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            name = str(value.dtype)
            if name not in _DTYPES:
                raise WireError(f"tensor dtype {name} cannot be sent")
            data = np.ascontiguousarray(value, dtype=_DTYPES[name]).tobytes()
            ref = {"__tensor__": [name, list(value.shape), offset, len(data)]}
            blobs.append(data)
            offset += len(data)
            return ref
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise WireError("non-finite number in a message")
            return value
        if isinstance(value, (list, tuple)):
            if all(type(v) is float or type(v) is int for v in value):  # a vector (bool is not int here): no
                return list(value)  # call per number; json.dumps(allow_nan=False) below refuses NaN and Inf in it
            return [plain(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v, depth + 1) for k, v in value.items()}
        raise WireError(f"a {type(value).__name__} cannot be sent")

    try:
        header = json.dumps({"type": msg_type, "sender": int(sender), "receiver": int(receiver),
                             "fields": {k: plain(v, 0) for k, v in params.items()}},
                            allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:  # WireError is one too
        raise exc if isinstance(exc, WireError) else WireError("non-finite number in a message") from None
    return MAGIC + _LEN.pack(len(header)) + header + b"".join(blobs)


def precheck(data: bytes, max_bytes: int, max_header_bytes: int) -> str | None:
    """Why these bytes cannot be a message, from their first bytes and length alone (None: they may be): the check a
    receive thread makes before a message is queued, so a refused one never waits in memory."""
    if len(data) > max_bytes:
        return f"{len(data):,} bytes, over comm_args.max_message_mb ({max_bytes:,} bytes)"
    if len(data) < len(MAGIC) + _LEN.size or not data.startswith(MAGIC):
        return "not a FedIoT message (bad magic)"
    (n_header,) = _LEN.unpack_from(data, len(MAGIC))
    if len(MAGIC) + _LEN.size + n_header > len(data):
        return "header longer than the message"
    if n_header > max_header_bytes:
        return f"header of {n_header:,} bytes, over the {max_header_bytes:,} a message header may have"
    return None


def _count_tensors(value: Any, limit: int, depth: int = 0) -> int:
    """Tensor references in a parsed header, counting stops past `limit` (so a header of a million is cheap)."""
    if depth > _MAX_DEPTH:
        raise WireError("message nests deeper than allowed")
    if isinstance(value, dict):
        if "__tensor__" in value:
            return 1
        n = 0
        for v in value.values():
            if isinstance(v, (dict, list)):
                n += _count_tensors(v, limit - n, depth + 1)
                if n > limit:
                    break
        return n
    if isinstance(value, list):
        n = 0
        for v in value:
            if isinstance(v, (dict, list)):
                n += _count_tensors(v, limit - n, depth + 1)
                if n > limit:
                    break
        return n
    return 0


def _refuse_constant(name: str) -> Any:
    raise WireError(f"{name} in a message")


def decode(data: bytes, max_bytes: int, max_header_bytes: int | None = None,
           tensors_allowed: Callable[[str], int | None] | None = None) -> tuple[str, int, int, dict[str, Any]]:
    """(type, sender, receiver, fields) of a message; WireError on anything malformed. The expensive steps come last
    and are bounded first: a header over `max_header_bytes` is refused before it is parsed, and a message of a type
    `tensors_allowed` does not know (None), or with more tensors than it allows that type, before any tensor is made."""
    if not isinstance(data, (bytes, bytearray)):
        raise WireError("not bytes")
    why = precheck(data, max_bytes, len(data) if max_header_bytes is None else max_header_bytes)
    if why is not None:
        raise WireError(why)
    start = len(MAGIC) + _LEN.size
    (n_header,) = _LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(bytes(data[start:start + n_header]), parse_constant=_refuse_constant)
    except WireError:
        raise
    except RecursionError:
        raise WireError("header nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or set(header) != {"type", "sender", "receiver", "fields"}:
        raise WireError("header needs exactly type, sender, receiver, fields")
    msg_type, sender, receiver, fields = header["type"], header["sender"], header["receiver"], header["fields"]
    if not isinstance(msg_type, str) or not isinstance(fields, dict):
        raise WireError("type must be a string and fields a mapping")
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1_000_000 for x in (sender, receiver)):
        raise WireError("sender and receiver must be ranks (integers >= 0)")
    body = memoryview(data)[start + n_header:]
    if tensors_allowed is not None:
        allowed = tensors_allowed(msg_type)
        if allowed is None:
            raise WireError(f"unknown message type {msg_type[:60]!r}")
        found = _count_tensors(fields, allowed)
        if found > allowed:
            raise WireError(f"more than {allowed} tensor(s) in a {msg_type} message")

    def tensor(ref: Any) -> torch.Tensor:
        if not (isinstance(ref, list) and len(ref) == 4 and ref[0] in _DTYPES and isinstance(ref[1], list)
                and len(ref[1]) <= _MAX_DIMS and all(isinstance(d, int) and 0 <= d < 2**31 for d in ref[1])
                and all(isinstance(x, int) and x >= 0 for x in ref[2:])):
            raise WireError("malformed tensor reference")
        dtype, shape, off, nbytes = _DTYPES[ref[0]], tuple(ref[1]), ref[2], ref[3]
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != nbytes or off + nbytes > len(body):
            raise WireError("tensor size does not match its shape or the message")
        array = np.frombuffer(body[off:off + nbytes], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        return torch.from_numpy(array)

    def restore(value: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise WireError("message nests deeper than allowed")
        if isinstance(value, dict):
            if set(value) == {"__tensor__"}:
                return tensor(value["__tensor__"])
            return {k: restore(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            if not any(isinstance(v, (dict, list)) for v in value):  # numbers or strings: nothing to restore
                return value
            return [restore(v, depth + 1) for v in value]
        return value

    try:
        return msg_type, sender, receiver, {k: restore(v) for k, v in fields.items()}
    except (ValueError, OverflowError, MemoryError) as exc:  # WireError is a ValueError too
        raise exc if isinstance(exc, WireError) else WireError(f"malformed tensor ({exc})") from None
