#!/usr/bin/env python3
"""Minimal GGUF v3 writer, written from the format description (not from netgpt's C writer),
so that a file netgpt reads in its tests was not made by netgpt itself.

Byte layout: "GGUF" | u32 version 3 | u64 n_tensors | u64 n_kv | KVs | tensor infos |
padding to the alignment (32) | tensor data, each tensor padded to the alignment.
KV: string key (u64 length + bytes) | u32 value type | value; arrays are u32 element type |
u64 count | elements. Tensor info: name | u32 n_dims | u64 ne[n_dims] (innermost first) |
u32 ggml type | u64 offset from the start of the data section.
"""
import struct

import numpy as np

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10
GGML_F32, GGML_F16 = 0, 1
ALIGN = 32


def _str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v):
    if vtype == U32:
        return struct.pack("<I", v)
    if vtype == I32:
        return struct.pack("<i", v)
    if vtype == F32:
        return struct.pack("<f", v)
    if vtype == BOOL:
        return struct.pack("<B", 1 if v else 0)
    if vtype == STR:
        return _str(v)
    raise ValueError(vtype)


def write_gguf(path, kvs, tensors):
    """kvs: list of (key, type, value) where an array value is (ARR, elem_type, list);
    tensors: list of (name, numpy array in PyTorch order, ggml type)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, vtype, value in kvs:
        out += _str(key) + struct.pack("<I", vtype)
        if vtype == ARR:
            etype, items = value
            out += struct.pack("<IQ", etype, len(items))
            for it in items:
                out += _value(etype, it)
        else:
            out += _value(vtype, value)
    blobs, offset = [], 0
    for name, arr, gtype in tensors:
        data = arr.astype(np.float32 if gtype == GGML_F32 else np.float16).astype("<" + ("f4" if gtype == GGML_F32 else "f2")).tobytes()
        ne = list(reversed(arr.shape))
        out += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", gtype, offset)
        blobs.append(data)
        offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
    out += b"\0" * (-len(out) % ALIGN)
    for data in blobs:
        out += data + b"\0" * (-len(data) % ALIGN)
    with open(path, "wb") as f:
        f.write(out)
