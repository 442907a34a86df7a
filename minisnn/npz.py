"""Reading ``.npz`` files without trusting them: headers first, bounded memory, no pickle.

``np.load`` allocates whatever shape a member's ``.npy`` header declares and
reads a member whole before its caller can look at its name: a 627-byte file
claiming 4 TB ends in a MemoryError, a 2 MB deflated member of zeros costs
2 GB. :class:`NpzReader` opens the zip and checks every member from its
headers alone before any array data is read:

* a member is ``NAME.npy``, present once, stored or deflated, not encrypted;
* its ``.npy`` header (format 1.0 or 2.0, at most :data:`MAX_HEADER` bytes)
  declares a plain fixed-size dtype (no Python objects, so never pickle) and
  a shape whose size times the item size equals the member's declared
  uncompressed size, so the header cannot claim more than the zip does;
* a stored member's declared size equals its stored size (bounded by the
  file); a deflated one's is at most :data:`MAX_RATIO` times its compressed
  size (deflate reaches ~1000x on zeros: the bomb) or :data:`RATIO_FLOOR`;
* the declared sizes of all members add up to at most ``max_bytes``.

:meth:`NpzReader.read` then fills an array of the declared size in chunks
and the zip CRC is verified when the member's last byte is read. Every
failure is an :class:`NpzError` (a ValueError) naming the file and member.
"""

import io
import os
import struct
import zipfile
import zlib

import numpy as np

MAX_HEADER = 10000  # bytes of .npy header text (numpy's own limit for untrusted files)
MAX_RATIO = 64  # declared / compressed size of a deflated member...
RATIO_FLOOR = 1 << 20  # ...unless it declares at most this many bytes
MAX_MEMBERS = 65536
_CHUNK = 1 << 20
_MAGIC = b"\x93NUMPY"
_LENGTH_FORMAT = {1: "<H", 2: "<I"}  # .npy format major version -> header length field
_KINDS = "biufcSU"  # bool, integers, floats, complex, fixed-size strings
# What zipfile, zlib and numpy's header parser raise on malformed input.
_ZIP_FAULTS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
               NotImplementedError, RuntimeError, OverflowError)


class NpzError(ValueError):
    """An .npz file is unreadable, malformed or over a bound; ``detail`` says how."""

    def __init__(self, path, detail):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


class Member:
    """What one member's headers declare: ``name`` (without .npy), dtype, shape, nbytes."""

    def __init__(self, name, info, dtype, shape, fortran, header_size):
        self.name, self.info, self.dtype, self.shape = name, info, dtype, shape
        self.fortran, self.header_size = fortran, header_size
        self.nbytes = info.file_size - header_size


class NpzReader:
    """An open ``.npz`` whose members' headers have been checked (see the module doc).

    ``members`` maps names to :class:`Member`; :meth:`read` returns one array.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path, max_bytes):
        self.path = path
        self._zip = None
        try:
            with open(path, "rb") as f:
                if f.read(len(_MAGIC)) == _MAGIC:
                    raise NpzError(path, "it holds a single .npy array, not an .npz archive")
            self._zip = zipfile.ZipFile(path)
            self.members = self._check_members(os.path.getsize(path), max_bytes)
        except NpzError:
            self.close()
            raise
        except _ZIP_FAULTS as exc:
            self.close()
            raise NpzError(path, f"not a readable .npz ({type(exc).__name__}: {exc})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _check_members(self, file_size, max_bytes):
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise NpzError(self.path, f"{len(infos)} members, more than the {MAX_MEMBERS} allowed")
        members, total = {}, 0
        for info in infos:
            where = f"member {info.filename!r}"
            if not info.filename.endswith(".npy") or info.is_dir():
                raise NpzError(self.path, f"{where} is not an .npy array")
            if info.flag_bits & 0x1:
                raise NpzError(self.path, f"{where} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise NpzError(self.path, f"{where} uses compression method {info.compress_type}; "
                               "expected stored or deflated")
            if info.compress_size > file_size:
                raise NpzError(self.path, f"{where} claims {info.compress_size} stored bytes, "
                               f"more than the file's {file_size}")
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise NpzError(self.path, f"{where} is stored with {info.compress_size} bytes but "
                               f"declares {info.file_size}")
            if (info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > RATIO_FLOOR
                    and info.file_size > MAX_RATIO * info.compress_size):
                raise NpzError(self.path, f"{where} declares {info.file_size} bytes from "
                               f"{info.compress_size} compressed, a ratio above {MAX_RATIO} "
                               "(a decompression bomb?)")
            name = info.filename[:-len(".npy")]
            if name in members:
                raise NpzError(self.path, f"{where} appears twice")
            members[name] = self._header(info, where)
            total += members[name].nbytes
            if total > max_bytes:
                raise NpzError(self.path, f"its arrays declare more than {max_bytes} bytes "
                               f"(at {where}); refusing to read them")
        return members

    def _header(self, info, where):
        with self._zip.open(info) as f:
            magic = f.read(len(_MAGIC) + 2)
            if len(magic) < len(_MAGIC) + 2 or magic[:len(_MAGIC)] != _MAGIC:
                raise NpzError(self.path, f"{where} is not a .npy array (no NUMPY magic)")
            major, minor = magic[-2], magic[-1]
            if major not in _LENGTH_FORMAT or minor != 0:
                raise NpzError(self.path, f"{where}: .npy format {major}.{minor} is not supported "
                               "(expected 1.0 or 2.0)")
            length_format = _LENGTH_FORMAT[major]
            raw_length = f.read(struct.calcsize(length_format))
            if len(raw_length) < struct.calcsize(length_format):
                raise NpzError(self.path, f"{where}: .npy header is truncated")
            length = struct.unpack(length_format, raw_length)[0]
            if length > MAX_HEADER:
                raise NpzError(self.path, f"{where}: .npy header of {length} bytes, more than "
                               f"the {MAX_HEADER} allowed")
            text = f.read(length)
        if len(text) < length:
            raise NpzError(self.path, f"{where}: .npy header is truncated")
        parse = (np.lib.format.read_array_header_1_0 if major == 1
                 else np.lib.format.read_array_header_2_0)
        try:
            shape, fortran, dtype = parse(io.BytesIO(raw_length + text))
        except Exception as exc:  # ast.literal_eval and dtype construction raise many kinds
            raise NpzError(self.path, f"{where}: malformed .npy header "
                           f"({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise NpzError(self.path, f"{where} has dtype {dtype}, which needs pickle to load; "
                           "refusing")
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.itemsize == 0:
            raise NpzError(self.path, f"{where} has dtype {dtype}; expected a plain numeric "
                           "or fixed-size string dtype")
        if any(n < 0 for n in shape):
            raise NpzError(self.path, f"{where} declares a negative shape {shape}")
        header_size = len(magic) + len(raw_length) + length
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
        if nbytes != info.file_size - header_size:
            raise NpzError(self.path, f"{where} declares shape {shape} {dtype} ({nbytes} bytes) "
                           f"but the member holds {info.file_size - header_size} bytes of data")
        return Member(info.filename[:-len(".npy")], info, dtype, tuple(shape), fortran,
                      header_size)

    def read(self, name):
        """The array of member ``name``; zipfile checks its CRC on reading the last byte."""
        member = self.members[name]
        array = np.empty(member.nbytes // member.dtype.itemsize, member.dtype)
        view = memoryview(array.view(np.uint8)) if array.size else None
        try:
            with self._zip.open(member.info) as f:
                f.read(member.header_size)
                done = 0
                while done < member.nbytes:
                    chunk = f.read(min(_CHUNK, member.nbytes - done))
                    if not chunk:
                        raise EOFError("the data ends early")
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
        except _ZIP_FAULTS as exc:
            raise NpzError(self.path, f"member {member.info.filename!r} is unreadable "
                           f"({type(exc).__name__}: {exc})") from None
        if member.fortran:
            return array.reshape(member.shape[::-1]).T
        return array.reshape(member.shape)
