"""Read and write IDX files, the format of MNIST and its kin (Fashion-MNIST, KMNIST).

An IDX file is a 4-byte big-endian magic number ``00 00 TT NN`` (TT: item type, NN: number of
dims), then NN big-endian uint32 dim sizes, then prod(dims) items in C order. cnnkit handles
TT = 0x08 (unsigned byte) only, the type of every MNIST-family file. The reader takes plain or
gzip files, telling them apart by the first two bytes (an IDX file starts with 00 00, gzip with
1f 8b); the writer compresses when the path ends in ``.gz``.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnkit.errors import DataError

UINT8 = 0x08

_GZIP_MAGIC = b"\x1f\x8b"
_TYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read a uint8 IDX file, plain or gzip, into a writable array of the header's shape.

    ``ndim`` is the number of dims the caller expects (3 for images, 1 for labels); given, the
    magic number must be exactly ``0x000008`` followed by it. Any unreadable file, bad magic
    number, or payload whose length differs from the product of the dims is a DataError that
    names the path and what was expected and found.
    """
    path = Path(path)
    data, measured, cut_short = _read_bytes(path)
    dims, header_len = _parse_header(path, data, measured, ndim=ndim)
    expected = header_len + math.prod(dims)
    if len(data) != expected or cut_short:
        raise DataError(
            f"{path}: IDX size mismatch (truncated or corrupt file): header shape {dims} needs "
            f"{expected} bytes, {measured} {len(data)} bytes"
        )
    # Copied so the array is writable: torch.from_numpy then shares it without a warning.
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as a uint8 IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Integer arrays whose values all lie in 0..255 (int64 labels, say) are cast to uint8; any
    other dtype or value is a DataError, since IDX uint8 cannot hold it.
    """
    path = Path(path)
    arr = _as_uint8(path, np.asarray(array))
    header = struct.pack(f">I{arr.ndim}I", (UINT8 << 8) | arr.ndim, *arr.shape)
    payload = header + arr.tobytes(order="C")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # mtime=0: same array, same bytes
    path.write_bytes(payload)


def _as_uint8(path: Path, arr: np.ndarray) -> np.ndarray:
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"{path}: cannot write IDX: expected 1 to 255 dims, found {arr.ndim}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "iu" and (arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255)):
        return arr.astype(np.uint8)
    found = f"dtype {arr.dtype}"
    if arr.dtype.kind in "iu":
        found += f" with values {arr.min()}..{arr.max()}"
    raise DataError(f"{path}: cannot write uint8 IDX: expected integers in 0..255, found {found}")


def _read_bytes(path: Path) -> tuple[bytes, str, bool]:
    """The file's bytes (decompressed if gzip), words for their size, whether gzip was cut."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc.strerror or exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw, "file has", False
    data, cut_short = _gunzip(path, raw)
    return (
        data,
        "the gzip stream ends early and yields" if cut_short else "decompressed data has",
        cut_short,
    )


def _gunzip(path: Path, raw: bytes) -> tuple[bytes, bool]:
    try:
        return gzip.decompress(raw), False
    except EOFError:
        # A truncated .gz still yields the bytes before the cut; keep them so the size check
        # can report expected against found bytes, as for a truncated plain file.
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(raw), True
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data: {exc}") from exc


def _parse_header(
    path: Path, data: bytes, measured: str, *, ndim: int | None
) -> tuple[tuple[int, ...], int]:
    """The dims from the header, and the header's length in bytes (4 + 4 * number of dims)."""
    if len(data) < 4:
        raise DataError(
            f"{path}: too short for an IDX file: expected a 4-byte magic number, "
            f"{measured} {len(data)} bytes"
        )
    (magic,) = struct.unpack(">I", data[:4])
    _check_magic(path, magic, ndim=ndim)
    n = magic & 0xFF
    header_len = 4 + 4 * n
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated IDX header: {n} dims need {header_len} header bytes, "
            f"{measured} {len(data)} bytes"
        )
    return struct.unpack(f">{n}I", data[4:header_len]), header_len


def _check_magic(path: Path, magic: int, *, ndim: int | None) -> None:
    if ndim is not None:
        expected = (UINT8 << 8) | ndim
        ok, wanted = magic == expected, f"0x{expected:08X} ({_describe(expected)})"
    else:
        ok, wanted = magic >> 8 == UINT8 and magic & 0xFF > 0, "0x000008NN (uint8, NN >= 1 dims)"
    if not ok:
        raise DataError(
            f"{path}: bad IDX magic number: expected {wanted}, "
            f"found 0x{magic:08X} ({_describe(magic)})"
        )


def _describe(magic: int) -> str:
    if magic >> 16:  # the first two bytes of an IDX file are always zero
        return "not an IDX file"
    code = (magic >> 8) & 0xFF
    type_name = _TYPE_NAMES.get(code, f"unknown type 0x{code:02X}")
    return f"{type_name}, {magic & 0xFF} dims"
