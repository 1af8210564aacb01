"""Read metadata entries out of a ``.tflite`` flatbuffer without TensorFlow.

The LiteRT interpreter does not expose the flatbuffer's ``Model.metadata``
list, and the runtime must not depend on TensorFlow, so this module walks the
few flatbuffer tables it needs (TFLite schema: ``Model.buffers`` is field 4,
``Model.metadata`` field 6; ``Metadata{name, buffer}``; ``Buffer{data,
offset, size}``).  Flatbuffer layout: a table starts with an int32 offset back
to its vtable; the vtable lists uint16 field offsets; vectors and strings are
reached through uint32 forward offsets and start with a uint32 length.
"""

from __future__ import annotations

import struct

from .errors import ModelFormatError

FILE_IDENTIFIER = b"TFL3"
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6


class _Reader:
    def __init__(self, buf: bytes, source: str) -> None:
        self.buf = buf
        self.source = source

    def _check(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > len(self.buf):
            raise ModelFormatError(f"{self.source}: corrupt TFLite flatbuffer "
                                   f"(offset {pos} outside a {len(self.buf)}-byte file)")

    def u8(self, pos: int) -> int:
        self._check(pos, 1)
        return self.buf[pos]

    def u16(self, pos: int) -> int:
        self._check(pos, 2)
        return struct.unpack_from("<H", self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        self._check(pos, 4)
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int) -> int:
        self._check(pos, 4)
        return struct.unpack_from("<i", self.buf, pos)[0]

    def u64(self, pos: int) -> int:
        self._check(pos, 8)
        return struct.unpack_from("<Q", self.buf, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of a table field, or None when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        slot = 4 + 2 * index
        if slot >= vsize:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.indirect(pos)
        return vec + 4, self.u32(vec)

    def bytes_field(self, table: int, index: int) -> bytes:
        start, n = self.vector(table, index)
        self._check(start, n)
        return bytes(self.buf[start:start + n])


def read_metadata(buf: bytes, *, source: str = "model.tflite") -> dict[str, bytes]:
    """All ``Model.metadata`` entries of a TFLite flatbuffer, name -> bytes.

    Raises :class:`ModelFormatError` when ``buf`` is not a TFLite flatbuffer.
    """
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(f"{source}: not a TFLite model (no 'TFL3' file identifier)")
    r = _Reader(buf, source)
    root = r.u32(0)
    buffers_start, n_buffers = r.vector(root, _MODEL_BUFFERS)
    meta_start, n_meta = r.vector(root, _MODEL_METADATA)
    out: dict[str, bytes] = {}
    for i in range(n_meta):
        entry = r.indirect(meta_start + 4 * i)
        name = r.bytes_field(entry, 0).decode("utf-8", "replace")
        pos = r.field(entry, 1)
        index = r.u32(pos) if pos is not None else 0
        if index >= n_buffers:
            raise ModelFormatError(f"{source}: metadata {name!r} points at buffer {index} "
                                   f"of {n_buffers}")
        buffer = r.indirect(buffers_start + 4 * index)
        data = r.bytes_field(buffer, 0)
        if not data:
            # Models over 2 GB keep buffer data after the flatbuffer (offset/size fields).
            off_pos, size_pos = r.field(buffer, 1), r.field(buffer, 2)
            if off_pos is not None and size_pos is not None:
                off, size = r.u64(off_pos), r.u64(size_pos)
                if off > 1:
                    r._check(off, size)
                    data = bytes(buf[off:off + size])
        out[name] = data
    return out
