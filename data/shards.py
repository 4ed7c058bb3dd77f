"""Binary token shards: a 256-byte header, then the tokens as little-endian uint16 or uint32.

Header (little-endian, zero-padded to HEADER_BYTES):
  offset 0   8 bytes  magic b"NOCTOTOK"
  offset 8   uint32   format version (VERSION)
  offset 12  uint32   bytes per token: 2 (uint16) or 4 (uint32)
  offset 16  uint64   token count
  offset 24  uint64   vocab size of the tokenizer that wrote it (every token id is < vocab size)
uint16 is used when vocab_size <= 65536 (ids 0..65535), else uint32. The file length must be exactly
HEADER_BYTES + count * bytes per token, which catches truncated copies and interrupted writes.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from data.files import write_atomic

MAGIC = b"NOCTOTOK"
VERSION = 1
HEADER_BYTES = 256
_HEADER = struct.Struct("<8sIIQQ")
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return _DTYPES[2] if vocab_size <= 2 ** 16 else _DTYPES[4]


def write_shard(path: str, tokens, vocab_size: int) -> int:
    """Write tokens (any int sequence / array) atomically; returns the token count. Ids outside [0, vocab_size)
    are refused: they could not be embedded and, in uint16, would wrap silently."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab_size):
        raise ValueError(f"{path}: token ids must be in [0, {vocab_size}), got min {int(arr.min())} "
                         f"max {int(arr.max())}")
    dtype = dtype_for_vocab(vocab_size)
    header = _HEADER.pack(MAGIC, VERSION, dtype.itemsize, arr.size, vocab_size).ljust(HEADER_BYTES, b"\0")
    write_atomic(path, header, np.ascontiguousarray(arr, dtype=dtype))
    return int(arr.size)


def read_header(path: str) -> dict:
    """Validate a shard's header against its file size; returns {version, dtype, count, vocab_size}.
    Raises ValueError naming the file and what is wrong."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ValueError(f"{path}: {size} bytes, shorter than the {HEADER_BYTES}-byte shard header (truncated?)")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    magic, version, width, count, vocab_size = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a token shard (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"{path}: shard format version {version}, this code reads version {VERSION}")
    if width not in _DTYPES:
        raise ValueError(f"{path}: corrupt header: {width} bytes per token (expected 2 or 4)")
    if vocab_size < 1 or _DTYPES[width] != dtype_for_vocab(vocab_size):
        raise ValueError(f"{path}: corrupt header: {width}-byte tokens do not match vocab size {vocab_size}")
    expected = HEADER_BYTES + count * width
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(f"{path}: {what}: header says {count} tokens ({expected} bytes) but the file has "
                         f"{size} bytes")
    return {"version": version, "dtype": _DTYPES[width], "count": count, "vocab_size": vocab_size}


def read_shard(path: str, check_ids: bool = False) -> np.ndarray:
    """Memory-map a shard's tokens (read-only np.memmap; an empty shard gives an empty array, mmap cannot map
    zero bytes). check_ids scans every token for ids >= vocab size (reads the whole file)."""
    info = read_header(path)
    if info["count"] == 0:
        return np.empty(0, dtype=info["dtype"])
    tokens = np.memmap(path, dtype=info["dtype"], mode="r", offset=HEADER_BYTES, shape=(info["count"],))
    if check_ids and int(tokens.max()) >= info["vocab_size"]:
        raise ValueError(f"{path}: corrupt: token id {int(tokens.max())} >= vocab size {info['vocab_size']}")
    return tokens
