"""How many bytes a classic NetCDF file (CDF-1, CDF-2, CDF-5) must hold, from its header.

The netCDF library reads a classic file that was cut short (an interrupted copy or download)
without an error: the missing records come back as values that were never written. The
header says where every variable starts and how large it is, so a short file is caught before
anything is decoded. Layout: the "NetCDF Classic and 64-bit Offset File Formats" spec and its
CDF-5 extension (64-bit counts).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

#: nc_type -> bytes per value (byte, char, short, int, float, double, ubyte, ushort, uint,
#: int64, uint64)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
STREAMING = 0xFFFFFFFF  # numrecs not known (a file still being written)
MAX_VAR_DIMS = 1024  # the netCDF library's NC_MAX_VAR_DIMS


class HeaderError(ValueError):
    """A classic NetCDF header that cannot be read."""


class _Reader:
    """Reads the header; a count that points past the end of the file is a HeaderError (a
    damaged header may claim any size: nothing is read or allocated by it)."""

    def __init__(self, fh: BinaryIO, version: int) -> None:
        self.fh = fh
        self.wide = version == 5  # CDF-5: 64-bit counts
        here = fh.tell()
        self.size = fh.seek(0, 2)
        fh.seek(here)

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise HeaderError("the header is cut short")
        return data

    def skip(self, n: int) -> None:
        if self.fh.tell() + n > self.size:
            raise HeaderError("the header is cut short, or damaged")
        self.fh.seek(n, 1)

    def int32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def count(self) -> int:
        return struct.unpack(">Q", self.take(8))[0] if self.wide else self.int32()

    def name(self) -> None:
        self.skip(-(-self.count() // 4) * 4)  # padded to 4 bytes

    def tagged(self) -> int:
        """The element count of a list (0 when absent)."""
        self.int32()  # tag: dimension, attribute, variable, or zero when absent
        n = self.count()
        if n > self.size:  # each element takes bytes of the header
            raise HeaderError("the header is damaged")
        return n

    def attributes(self) -> None:
        for _ in range(self.tagged()):
            self.name()
            nc_type = self.int32()
            self.skip(-(-self.count() * TYPE_SIZES.get(nc_type, 1) // 4) * 4)


def required_size(fh: BinaryIO) -> int | None:
    """The smallest size of the classic NetCDF file open in ``fh`` (at its start) that holds
    every value its header declares; None when it is not a classic file or its record count is
    not known yet (streaming)."""
    magic = fh.read(4)
    if magic[:3] != b"CDF" or len(magic) < 4 or magic[3] not in (1, 2, 5):
        return None
    version = magic[3]
    r = _Reader(fh, version)
    numrecs = r.count()
    if numrecs in (STREAMING, 2**64 - 1):
        return None
    dims = []
    for _ in range(r.tagged()):
        r.name()
        dims.append(r.count())
    r.attributes()
    variables = []  # (is a record variable, unpadded bytes of one record or of all, begin)
    for _ in range(r.tagged()):
        r.name()
        ndims = r.count()
        if ndims > MAX_VAR_DIMS:
            raise HeaderError("the header is damaged")
        ids = [r.count() for _ in range(ndims)]
        r.attributes()
        nc_type = r.int32()
        r.count()  # vsize: computed from the dimensions below
        begin = struct.unpack(">Q", r.take(8))[0] if version > 1 else r.int32()
        if any(i >= len(dims) for i in ids):
            raise HeaderError("a variable names a dimension the file does not have")
        record = bool(ids) and dims[ids[0]] == 0
        size = TYPE_SIZES.get(nc_type, 1)
        for i in ids[1:] if record else ids:
            size *= dims[i]
        variables.append((record, size, begin))
    records = [v for v in variables if v[0]]
    # one record variable: records are not padded; several: each padded to 4 bytes (as the
    # netCDF library computes it: the stored vsize saturates at 2**32 - 1 for large variables)
    recsize = records[0][1] if len(records) == 1 else sum(-(-v[1] // 4) * 4 for v in records)
    need = 0
    for record, size, begin in variables:
        if record:
            need = max(need, begin + (numrecs - 1) * recsize + size if numrecs else 0)
        else:
            need = max(need, begin + size)
    return need
