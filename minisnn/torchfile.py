"""Read PyTorch checkpoint files (``torch.save``) without torch and without running pickled code.

Both formats ``torch.save`` has written:

- zip (torch >= 1.6): ``<dir>/data.pkl`` plus one uncompressed member
  ``<dir>/data/<key>`` per storage (and ``byteorder``, ``version``);
- legacy (torch <= 1.5, or ``_use_new_zipfile_serialization=False``): five
  pickles in a row (magic number, protocol 1001, system info, the object,
  the list of storage keys), then per storage key an int64 element count
  and the raw elements.

Every pickle is first scanned opcode by opcode (:func:`pickletools.genops`
over a reader that never returns more than the file holds), so a length
field claiming more bytes than remain is refused before the unpickler would
allocate it. The pickles are then read by :class:`pickle.Unpickler`
restricted the way ``torch.load(weights_only=True)`` restricts it:
``find_class`` allows exactly the globals that rebuild tensors and ordered
dicts (:data:`ALLOWED_GLOBALS`) and refuses anything else, naming it,
before it could be called. A tensor
becomes an inert placeholder while the pickle is read; storages are read
afterwards, each once, after their sizes were checked against the file,
and every tensor becomes a read-only numpy view of its storage (strides
and offsets as stored, so tensors sharing a storage share memory).

Supported storage dtypes: float32, float16, float64, int64, int32, int16,
int8, uint8 and bool (bfloat16 and complex have no plain numpy twin).
"""

import collections
import io
import pathlib
import pickle
import pickletools
import re
import struct
import zipfile
import zlib

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_DEPTH = 100  # nesting of containers in a checkpoint (state dicts need 3 or 4)
MAX_DIMS = 32
_KEY = re.compile(r"[0-9A-Za-z_]{1,64}\Z")
_LIMIT = 1 << 62  # bound on any count or offset read from a file

STORAGE_DTYPES = {
    "FloatStorage": "f4", "HalfStorage": "f2", "DoubleStorage": "f8",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}


class TorchFileError(ValueError):
    """A checkpoint this module refuses or cannot read; the message names the file."""


class _StorageType:
    """What ``torch.FloatStorage`` etc. unpickle to: a dtype marker, not callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, np.dtype(dtype)

    def __setstate__(self, state):
        raise TypeError("BUILD on a storage type")


class _Storage:
    """A storage named by a persistent id: its key, dtype and element count."""

    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state):
        raise TypeError("BUILD on a storage")


class _Tensor:
    """Placeholder for a tensor until its storage is read (immutable once made)."""

    __slots__ = ("storage", "offset", "shape", "strides")

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides

    def __setstate__(self, state):
        raise TypeError("BUILD on a tensor")


def _int(value, what):
    if type(value) is not int or not 0 <= value < _LIMIT:
        raise TypeError(f"{what} must be an int in [0, 2^62), found {value!r:.60}")
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: validated, returns a placeholder."""
    if type(storage) is not _Storage:
        raise TypeError(f"tensor storage must come from a persistent id, found "
                        f"{type(storage).__name__}")
    offset = _int(storage_offset, "tensor storage offset")
    if type(size) is not tuple or type(stride) is not tuple or len(size) != len(stride) \
            or len(size) > MAX_DIMS:
        raise TypeError(f"tensor size {size!r:.80} and stride {stride!r:.80} must be tuples of "
                        f"one length <= {MAX_DIMS}")
    shape = tuple(_int(s, "tensor size") for s in size)
    strides = tuple(_int(s, "tensor stride") for s in stride)
    if type(requires_grad) is not bool:
        raise TypeError(f"requires_grad must be a bool, found {requires_grad!r:.60}")
    if backward_hooks or metadata:
        raise TypeError("tensors with backward hooks or Python attributes are not supported")
    if 0 in shape:
        last = offset
    else:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= storage.numel:
            raise TypeError(f"tensor of shape {shape}, strides {strides} at offset {offset} "
                            f"reaches element {last} of a storage of {storage.numel}")
    if last > storage.numel:
        raise TypeError(f"tensor offset {offset} is past its storage of {storage.numel} elements")
    return _Tensor(storage, offset, shape, strides)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its data here."""
    if type(data) is not _Tensor or backward_hooks:
        raise TypeError("a parameter must wrap a tensor and carry no hooks")
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Unpickler allowing only :data:`ALLOWED_GLOBALS`; storages via persistent ids.

    ``storages`` (key -> :class:`_Storage`) collects every storage the pickle
    names; ``legacy`` selects the legacy persistent-id form (one more field).
    """

    def __init__(self, file, source, storages=None, legacy=False):
        super().__init__(file)
        self.source, self.storages, self.legacy = source, storages, legacy

    def find_class(self, module, name):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None and module == "torch" and name.endswith("Storage"):
            raise TorchFileError(
                f"{self.source}: refusing the global {module}.{name}: a storage type this "
                f"reader does not support (it reads {', '.join(STORAGE_DTYPES)}); save the "
                "tensors as float32 or float16")
        if found is None:
            raise TorchFileError(
                f"{self.source}: refusing the global {module}.{name}: a checkpoint may only "
                "reference tensors, storages and OrderedDict (what torch.load(weights_only="
                "True) allows); this file would run or build other Python objects")
        return found

    def persistent_load(self, pid):
        if self.storages is None:
            raise TypeError("persistent id outside the object pickle")
        if type(pid) is not tuple or len(pid) != (6 if self.legacy else 5) or pid[0] != "storage":
            raise TypeError(f"unknown persistent id {pid!r:.120}")
        _, kind, key, location, numel = pid[:5]
        if type(kind) is not _StorageType:
            raise TypeError(f"persistent id names {kind!r:.60}, not a storage type")
        if type(key) is not str or not _KEY.match(key) or type(location) is not str:
            raise TypeError(f"bad storage key or location in {pid!r:.120}")
        numel = _int(numel, "storage size")
        if self.legacy and pid[5] is not None:
            raise TypeError(f"storage {key}: storage views (legacy view metadata) are not "
                            "supported")
        storage = self.storages.setdefault(key, _Storage(key, kind.dtype, numel))
        if storage.dtype != kind.dtype or storage.numel != numel:
            raise TypeError(f"storage {key} is declared twice, as {storage.numel} x "
                            f"{storage.dtype} and as {numel} x {kind.dtype}")
        return storage


class _Bounded:
    """Read-only view of a file up to ``end``: no read returns (or asks for) more."""

    def __init__(self, f, end):
        self.f, self.end = f, end

    def read(self, n=-1):
        left = max(0, self.end - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self):
        return self.f.readline(max(0, self.end - self.f.tell()))

    def tell(self):
        return self.f.tell()


def _read_pickle(f, end):
    """The bytes of the pickle at ``f``'s position, scanned (every counted length
    checked against the bytes before ``end``) before anything unpickles them."""
    start = f.tell()
    for _ in pickletools.genops(_Bounded(f, end)):
        pass
    size = f.tell() - start
    f.seek(start)
    return f.read(size)


def _unpickle(f, end, path, storages=None, legacy=False):
    return _Unpickler(io.BytesIO(_read_pickle(f, end)), path, storages, legacy).load()


_READ_ERRORS = (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
                KeyError, ValueError, OverflowError, RecursionError, struct.error,
                UnicodeDecodeError, zipfile.BadZipFile, zlib.error, OSError, MemoryError)


def load(path):
    """The object a ``torch.save`` file holds, every tensor a read-only numpy array.

    Containers come back as dicts (OrderedDicts stay ordered), lists and
    tuples; scalars as Python values. Raises :class:`TorchFileError` (a
    ValueError) naming the file for a refused global, a malformed, truncated
    or inconsistent file and an unsupported dtype; nothing in the file is
    executed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise TorchFileError(f"{path}: checkpoint file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head.startswith(b"PK\x03\x04"):
                obj, data = _load_zip(f, path)
            elif head[:1] == b"\x80":
                obj, data = _load_legacy(f, path)
            else:
                raise TorchFileError(
                    f"{path}: not a PyTorch checkpoint: starts with {head!r}, neither a zip "
                    "(torch >= 1.6) nor a legacy pickle (tar files of torch < 0.4 are not read)")
        return _materialize(obj, data, path)
    except TorchFileError:
        raise
    except _READ_ERRORS as exc:
        raise TorchFileError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or "
                             f"unsupported): {type(exc).__name__}: {exc}") from None


def _load_zip(f, path):
    size = path.stat().st_size
    with zipfile.ZipFile(f) as zf:
        members = {info.filename: info for info in zf.infolist()}
        pickles = [name for name in members if name.endswith("/data.pkl")
                   and name.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(f"{path}: a zip without exactly one <dir>/data.pkl "
                                 f"(found {len(pickles)}): not written by torch.save")
        prefix = pickles[0][:-len("data.pkl")]
        for info in members.values():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                    or info.header_offset + info.file_size > size:
                raise TorchFileError(
                    f"{path}: zip member {info.filename} is compressed or extends past the end "
                    f"of the file ({info.file_size} bytes at {info.header_offset}); torch.save "
                    "stores members uncompressed")
        order = "little"
        if prefix + "byteorder" in members:
            order = zf.read(prefix + "byteorder").decode("ascii", "replace")
            if order not in ("little", "big"):
                raise TorchFileError(f"{path}: unknown byte order {order!r}")
        storages = {}
        with zf.open(prefix + "data.pkl") as member:
            obj = _unpickle(io.BytesIO(member.read()), members[prefix + "data.pkl"].file_size,
                            path, storages)
        data = {}
        for key, st in storages.items():
            name = f"{prefix}data/{key}"
            nbytes = st.numel * st.dtype.itemsize
            info = members.get(name)
            if info is None:
                raise TorchFileError(f"{path}: storage {key} has no member {name}")
            if info.file_size != nbytes:
                raise TorchFileError(f"{path}: member {name} holds {info.file_size} bytes, its "
                                     f"storage needs {st.numel} x {st.dtype} = {nbytes}")
            arr = np.empty(st.numel, st.dtype.newbyteorder("<" if order == "little" else ">"))
            with zf.open(info) as member:
                if member.readinto(memoryview(arr).cast("B")) != nbytes:
                    raise TorchFileError(f"{path}: member {name} is truncated")
            data[key] = arr
    return obj, data


def _load_legacy(f, path):
    size = path.stat().st_size
    f.seek(0)

    def unpickle(storages=None):
        return _unpickle(f, size, path, storages, legacy=True)

    magic = unpickle()
    if magic != LEGACY_MAGIC:
        raise TorchFileError(f"{path}: a pickle, but not a PyTorch checkpoint (magic number "
                             f"{magic!r:.40})")
    protocol = unpickle()
    if protocol != LEGACY_PROTOCOL:
        raise TorchFileError(f"{path}: legacy protocol {protocol!r:.40}, expected "
                             f"{LEGACY_PROTOCOL}")
    info = unpickle()
    if type(info) is not dict or info.get("little_endian") is not True:
        raise TorchFileError(f"{path}: system info {info!r:.120} is not that of a "
                             "little-endian writer")
    storages = {}
    obj = unpickle(storages)
    keys = unpickle()
    if type(keys) is not list or sorted(map(str, keys)) != sorted(storages):
        raise TorchFileError(f"{path}: the storage key list does not match the storages the "
                             f"object uses ({len(storages)})")
    offsets = {}
    for key in keys:  # check every header and length before reading any data
        st = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise TorchFileError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = st.numel * st.dtype.itemsize
        if numel != st.numel:
            raise TorchFileError(f"{path}: storage {key} has {numel} elements in the file, "
                                 f"{st.numel} in the object")
        if f.tell() + nbytes > size:
            raise TorchFileError(f"{path}: storage {key} needs {nbytes} bytes, only "
                                 f"{size - f.tell()} remain: truncated")
        offsets[key] = f.tell()
        f.seek(nbytes, 1)
    if f.tell() != size:
        raise TorchFileError(f"{path}: {size - f.tell()} unexpected bytes after the last storage")
    data = {}
    for key, offset in offsets.items():
        st = storages[key]
        arr = np.empty(st.numel, st.dtype.newbyteorder("<"))
        f.seek(offset)
        if f.readinto(memoryview(arr).cast("B")) != arr.nbytes:
            raise TorchFileError(f"{path}: storage {key} is truncated")
        data[key] = arr
    return obj, data


def _materialize(obj, data, path):
    """Replace tensor placeholders by numpy views of the storages read."""
    for key, arr in data.items():
        if arr.dtype == np.bool_ and arr.size and arr.view(np.uint8).max() > 1:
            raise TorchFileError(f"{path}: bool storage {key} holds bytes other than 0 and 1")
        arr.flags.writeable = False
    done = {}

    def convert(value, depth, where):
        if depth > MAX_DEPTH:
            raise TorchFileError(f"{path}: containers nested deeper than {MAX_DEPTH} at {where}")
        if value is None or type(value) in (bool, int, float, complex, str, bytes):
            return value
        if id(value) in done:
            return done[id(value)]
        if type(value) is _Tensor:
            base = data[value.storage.key]  # read-only, so is every view of it
            item = base.itemsize
            out = np.ndarray(value.shape, base.dtype, base, value.offset * item,
                             [s * item for s in value.strides])
        elif type(value) in (dict, collections.OrderedDict):
            done[id(value)] = value  # in place: shared and cyclic references stay so
            for k in list(value):
                if type(k) not in (str, int):
                    raise TorchFileError(f"{path}: dict key {k!r:.60} at {where} is not a "
                                         "string or an int")
                value[k] = convert(value[k], depth + 1, f"{where}[{k!r}]")
            return value
        elif type(value) is list:
            done[id(value)] = value
            value[:] = [convert(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value)]
            return value
        elif type(value) is tuple:
            out = tuple(convert(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
        else:
            raise TorchFileError(f"{path}: unsupported object of type {type(value).__name__} "
                                 f"at {where} (bare storages, types and functions are not data)")
        done[id(value)] = out
        return out

    return convert(obj, 0, "top level")
