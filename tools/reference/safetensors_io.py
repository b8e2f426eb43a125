#!/usr/bin/env python3
"""Minimal safetensors writer and reader, written from the format description.

Byte layout of a .safetensors file:

    [0, 8)            u64 little-endian N: length of the JSON header in bytes
    [8, 8+N)          UTF-8 JSON header, padded with spaces so 8+N is a multiple of 8
    [8+N, end)        data: every tensor's raw little-endian bytes, row-major

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]},
offsets relative to the start of the data section, plus an optional "__metadata__" object
of string -> string. We write it ourselves (no safetensors library) so that the fixtures do
not depend on the same third-party code a user's checkpoint came from: if our reader and the
C loader both agree with this writer, the format handling has been checked twice.
"""

import json
import struct

import numpy as np

# safetensors dtype name -> numpy dtype of the stored bytes. BF16 has no numpy type, so it is
# carried as its raw uint16 bit pattern; callers convert with bf16_bits_to_f32().
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF = {
    np.dtype("<f8"): "F64",
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("<i2"): "I16",
    np.dtype("i1"): "I8",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}


def bf16_bits_to_f32(bits):
    """Widen raw bfloat16 bit patterns (uint16 array) to float32: bf16 is the top half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, metadata=None, bf16_names=()):
    """Write `tensors` (an ordered mapping name -> numpy array) to `path`.

    Tensors are stored in the mapping's order, so a caller that passes the same mapping gets
    the same bytes (the fixtures must be reproducible byte for byte). Names listed in
    `bf16_names` must be uint16 arrays of bfloat16 bits and are tagged "BF16".
    """
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if name in bf16_names:
            if arr.dtype != np.uint16:
                raise ValueError(f"{name}: BF16 tensors are passed as uint16 bits")
            dtype_name = "BF16"
        else:
            dtype_name = _NAME_OF.get(arr.dtype.newbyteorder("<"))
            if dtype_name is None:
                raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)

    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad so the data section starts 8-byte aligned: a loader that mmaps the file can then
    # read f32/f64 tensors in place.
    hdr += b" " * ((-(8 + len(hdr))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    """Read a safetensors file into (dict name -> numpy array, metadata dict).

    Checks what a careful loader must check: the header fits in the file, every tensor's
    byte range matches its shape and dtype, and the ranges tile the data section exactly
    (no gaps, no overlaps, nothing past the end). BF16 tensors come back as uint16 bits.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} runs past end of file")
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = memoryview(buf)[8 + n :]

    tensors = {}
    ranges = []
    for name, info in header.items():
        dt = _DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= len(data)) or end - begin != count * dt.itemsize:
            raise ValueError(f"{path}: {name}: bad data_offsets {begin},{end} for {shape}")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(shape).copy()
        ranges.append((begin, end))

    pos = 0
    for begin, end in sorted(ranges):
        if begin != pos:
            raise ValueError(f"{path}: data section has a gap or overlap at byte {begin}")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return tensors, metadata
