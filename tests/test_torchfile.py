"""minisnn.torchfile: PyTorch checkpoints read without torch and without running their code.

Fixtures in tests/fixtures were written by torch (scripts/make_torch_fixtures.py);
the hand-made files below are built opcode by opcode, so no test needs torch.
"""

import collections
import io
import os
import pickle
import pickletools
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from minisnn import torchfile
from minisnn.torchfile import TorchFileError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FORMATS = ("zip", "legacy")
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- hand-made checkpoints (pickle opcodes, protocol 2) -------------------------
def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_int(v):
    return b"\x8a" + bytes([8]) + v.to_bytes(8, "little", signed=True)  # LONG1


def op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def tensor_ops(key, numel, offset, size, stride, storage="FloatStorage", legacy=False):
    """``_rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())``."""
    pid = op_tuple(op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"),
                   op_int(numel), *([b"N"] if legacy else []))
    args = op_tuple(pid + b"Q", op_int(offset), op_tuple(*map(op_int, size)),
                    op_tuple(*map(op_int, stride)), b"\x89",
                    op_global("collections", "OrderedDict") + b")R")
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def dict_pickle(**values):
    """A pickle of a dict whose values are given as opcodes."""
    body = b"".join(op_str(k) + v + b"s" for k, v in values.items())
    return b"\x80\x02}" + body + b"."


def write_zip(path, data_pkl, storages, byteorder=b"little", compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy(path, obj_pkl, storages, counts=None):
    """Legacy layout; ``counts`` overrides the element count written before a storage."""
    parts = [pickle.dumps(torchfile.LEGACY_MAGIC, protocol=2),
             pickle.dumps(torchfile.LEGACY_PROTOCOL, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2),
             obj_pkl, pickle.dumps(sorted(storages), protocol=2)]
    for key in sorted(storages):
        raw = storages[key]
        n = (counts or {}).get(key, len(raw) // 4)
        parts.append(struct.pack("<q", n) + raw)
    path.write_bytes(b"".join(parts))
    return path


def write(fmt, path, data_pkl, storages):
    if fmt == "zip":
        return write_zip(path, data_pkl, storages)
    return write_legacy(path, data_pkl, storages)


def legacy_pickle_spans(raw):
    """(start, end) of the five pickles at the head of a legacy file."""
    f, spans = io.BytesIO(raw), []
    for _ in range(5):
        start = f.tell()
        for _ in pickletools.genops(f):
            pass
        spans.append((start, f.tell()))
    return spans


# -- the torch-written fixtures ------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_and_strided_views_as_torch_wrote_them(fmt):
    expected = np.load(FIXTURES / "tensors.npz")
    obj = torchfile.load(FIXTURES / f"tensors.{fmt}.pth")
    tensors = obj["tensors"]
    assert isinstance(tensors, collections.OrderedDict)
    assert list(tensors) == expected.files  # order kept
    for name in expected.files:
        got, want = tensors[name], expected[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert not got.flags.writeable, name
    # views are views: one storage read once, shared as in torch
    assert np.shares_memory(tensors["f32"], tensors["row1"])
    assert np.shares_memory(tensors["f32"], tensors["permuted"])
    assert tensors["expanded"].strides == (0, 4)
    assert obj["meta"] == {"epoch": 3, "list": [1, 2.5, "x", None, True], "tuple": (1, (2, 3))}


@pytest.mark.parametrize("name", ["reactnet_tau4.zip.pth", "reactnet_tau5.legacy.pth"])
def test_authors_layout_with_optimizer_state(name):
    obj = torchfile.load(FIXTURES / name)
    assert obj["epoch"] == 256 and float(obj["best_top1_acc"]) == 61.25
    state = obj["state_dict"]
    assert all(k.startswith("module.") and isinstance(v, np.ndarray) for k, v in state.items())
    assert state["module.layer1.0.move0.bias"].shape == (1, 4, 1, 1)
    assert state["module.layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    groups = obj["optimizer"]["param_groups"]
    assert groups[0]["betas"] == (0.9, 0.999) and groups[0]["lr"] == 1e-3


def count_arrays(value):
    if isinstance(value, dict):
        return sum(count_arrays(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(count_arrays(v) for v in value)
    return isinstance(value, np.ndarray)


def test_peak_memory_is_the_file_plus_a_small_cost_per_tensor():
    """Each storage is read once into its final array and tensors are views: the
    peak is the file's bytes plus a bounded cost per tensor (array objects,
    the pickle's own objects), no second copy."""
    path = FIXTURES / "reactnet_tau5.legacy.pth"  # 631 tensors, Adam state included
    size = path.stat().st_size
    tracemalloc.start()
    try:
        obj = torchfile.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tensors = count_arrays(obj)
    assert tensors > 600
    assert peak < size + 1024 * tensors, f"peak {peak} bytes, file {size}, {tensors} tensors"


# -- code in the file is refused, never run -------------------------------------
CALLED = []


def canary(*args):
    CALLED.append(args)
    return "ran"


class ReducePayload:
    def __reduce__(self):
        return canary, ("pickled code ran",)


class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def with_object_pickle(fmt, tmp_path, obj_pkl):
    """The tensors fixture with its object pickle replaced by ``obj_pkl``."""
    raw = (FIXTURES / f"tensors.{fmt}.pth").read_bytes()
    out = tmp_path / f"payload.{fmt}.pth"
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = obj_pkl if info.filename.endswith("/data.pkl") else src.read(info)
                dst.writestr(info.filename, data)
    else:
        start, end = legacy_pickle_spans(raw)[3]
        out.write_bytes(raw[:start] + obj_pkl + raw[end:])
    return out


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", FORMATS)
def test_reduce_payload_refused_and_never_run(fmt, protocol, tmp_path):
    payload = pickle.dumps({"state_dict": {"x": ReducePayload()}}, protocol=protocol)
    path = with_object_pickle(fmt, tmp_path, payload)
    with pytest.raises(TorchFileError, match=r"refusing the global \S*canary") as err:
        torchfile.load(path)
    assert str(path) in str(err.value)
    assert CALLED == []

    marker = tmp_path / "pwned"
    path = with_object_pickle(fmt, tmp_path, pickle.dumps(SystemPayload(marker), protocol=2))
    with pytest.raises(TorchFileError, match=r"refusing the global (posix|nt)\.system"):
        torchfile.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_foreign_objects_refused_naming_the_global(fmt, tmp_path):
    cases = {r"numpy\S*\.multiarray\._reconstruct": np.zeros(3),
             r"collections\.Counter": collections.Counter(a=1),
             r"_codecs\.encode": b"\x00\x01",  # protocol 2 pickles bytes through a call
             r"__builtin__\.set": {1, 2}}  # protocol 2 names builtins as Python 2 did
    for qualname, obj in cases.items():
        path = with_object_pickle(fmt, tmp_path, pickle.dumps(obj, protocol=2))
        with pytest.raises(TorchFileError, match=f"refusing the global {qualname}:"):
            torchfile.load(path)


IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


@FUZZ
@given(fmt=st.sampled_from(FORMATS),
       module=st.one_of(st.sampled_from(["os", "posix", "subprocess", "builtins", "torch",
                                         "torch._utils", "numpy", "collections", "__main__"]),
                        st.builds(".".join, st.lists(IDENT, min_size=1, max_size=3))),
       name=st.one_of(st.sampled_from(["system", "eval", "exec", "getattr", "Popen",
                                       "_rebuild_tensor", "load", "OrderedDict_", "Tensor",
                                       "BFloat16Storage", "storage", "apply"]), IDENT),
       call=st.booleans())
def test_fuzz_any_other_global_is_refused(fmt, module, name, call, tmp_path):
    assume((module, name) not in torchfile.ALLOWED_GLOBALS)
    obj_pkl = b"\x80\x02" + op_global(module, name) + (b")R" if call else b"") + b"."
    path = with_object_pickle(fmt, tmp_path, obj_pkl)
    with pytest.raises(TorchFileError, match=f"refusing the global {module}.{name}:"):
        torchfile.load(path)


# -- malformed files: always a TorchFileError, never another exception ------------
@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.data())
def test_fuzz_truncated_files_are_refused(fmt, data, tmp_path):
    raw = (FIXTURES / f"tensors.{fmt}.pth").read_bytes()
    n = data.draw(st.integers(0, len(raw) - 1))
    path = tmp_path / "cut.pth"
    path.write_bytes(raw[:n])
    with pytest.raises(TorchFileError, match=str(path)):
        torchfile.load(path)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.data())
def test_fuzz_corrupted_bytes_load_or_raise_torchfileerror(fmt, data, tmp_path):
    raw = bytearray((FIXTURES / f"tensors.{fmt}.pth").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "corrupt.pth"
    path.write_bytes(bytes(raw))
    try:
        torchfile.load(path)
    except TorchFileError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.data())
def test_fuzz_sizes_checked_against_the_storage_and_file(fmt, data, tmp_path):
    """A tensor (offset, size, stride) over a storage declared ``numel`` long of
    which ``stored`` elements are in the file: loaded exactly when it fits."""
    numel = data.draw(st.integers(0, 40), "numel")
    stored = numel + data.draw(st.one_of(st.just(0), st.integers(-3, 3)), "stored - numel")
    assume(stored >= 0)
    offset = data.draw(st.integers(0, numel + 2), "offset")
    dims = data.draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), max_size=3))
    size = tuple(d[0] for d in dims)
    stride = tuple(d[1] for d in dims)
    values = np.arange(stored, dtype="<f4") * 0.5 - 3
    pkl = dict_pickle(t=tensor_ops("0", numel, offset, size, stride, legacy=fmt == "legacy"))
    path = write(fmt, tmp_path / "t.pth", pkl, {"0": values.tobytes()})
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride))
    fits = offset <= numel if 0 in size else extent < numel
    event("loads" if stored == numel and fits else "refused")
    if stored != numel or not fits:
        with pytest.raises(TorchFileError):
            torchfile.load(path)
        return
    got = torchfile.load(path)["t"]
    want = np.array([values[offset + sum(i * s for i, s in zip(idx, stride))]
                     for idx in np.ndindex(*size)], dtype="<f4").reshape(size)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("delta", [-1, 1])
def test_legacy_element_count_must_match(delta, tmp_path):
    pkl = dict_pickle(t=tensor_ops("0", 4, 0, (4,), (1,), legacy=True))
    raw = np.ones(4, "<f4").tobytes()
    path = write_legacy(tmp_path / "t.pth", pkl, {"0": raw}, counts={"0": 4 + delta})
    with pytest.raises(TorchFileError, match=f"storage 0 has {4 + delta} elements in the file"):
        torchfile.load(path)


@pytest.mark.parametrize("delta", [-4, 4])
def test_zip_member_size_must_match(delta, tmp_path):
    pkl = dict_pickle(t=tensor_ops("0", 4, 0, (4,), (1,)))
    path = write_zip(tmp_path / "t.pth", pkl, {"0": bytes(16 + delta)})
    with pytest.raises(TorchFileError, match=f"holds {16 + delta} bytes.*needs 4 x float32 = 16"):
        torchfile.load(path)


def test_length_fields_are_checked_before_allocation(tmp_path):
    # BINBYTES8 claiming 2^60 bytes: the C unpickler would allocate that first
    pkl = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc."
    path = write_zip(tmp_path / "t.pth", pkl, {})
    with pytest.raises(TorchFileError, match="truncated, corrupt"):
        torchfile.load(path)
    # a storage claiming more elements than the file holds
    pkl = dict_pickle(t=tensor_ops("0", 1 << 40, 0, (2,), (1,), legacy=True))
    path = write_legacy(tmp_path / "l.pth", pkl, {"0": bytes(8)}, counts={"0": 1 << 40})
    with pytest.raises(TorchFileError, match="needs 4398046511104 bytes, only 8 remain"):
        torchfile.load(path)


@pytest.mark.parametrize("case, match", [
    ("bare storage", "unsupported object of type _Storage"),
    ("storage type", "unsupported object of type _StorageType"),
    ("function", "unsupported object of type function"),
    ("build on tensor", "BUILD on a tensor"),
    ("hooks", "backward hooks"),
    ("declared twice", "storage 0 is declared twice"),
    ("bad key", "bad storage key"),
    ("deep", "nested deeper than 100"),
    ("set", "unsupported object of type set"),
    ("tensor key", "dict key"),
])
def test_malformed_objects_refused(case, match, tmp_path):
    t = tensor_ops("0", 4, 0, (4,), (1,))
    pid = op_tuple(op_str("storage"), op_global("torch", "FloatStorage"), op_str("0"),
                   op_str("cpu"), op_int(4)) + b"Q"
    hooks = op_global("collections", "OrderedDict") + b")R(" + op_str("h") + op_int(1) + b"u"
    pkl = {
        "bare storage": dict_pickle(s=pid),
        "storage type": dict_pickle(s=op_global("torch", "FloatStorage")),
        "function": dict_pickle(f=op_global("torch._utils", "_rebuild_tensor_v2")),
        "build on tensor": dict_pickle(t=t + b"}" + op_str("offset") + op_int(0) + b"sb"),
        "hooks": dict_pickle(t=op_global("torch._utils", "_rebuild_tensor_v2") + op_tuple(
            pid, op_int(0), op_tuple(op_int(4)), op_tuple(op_int(1)), b"\x89", hooks) + b"R"),
        "declared twice": dict_pickle(a=t, b=tensor_ops("0", 5, 0, (4,), (1,))),
        "bad key": dict_pickle(t=tensor_ops("../x", 4, 0, (4,), (1,))),
        "deep": b"\x80\x02" + b"]" * 150 + b"a" * 149 + b".",
        "set": b"\x80\x04\x8f(" + op_int(1) + b"\x90.",
        "tensor key": b"\x80\x02}" + t + op_int(1) + b"s.",
    }[case]
    path = write_zip(tmp_path / "t.pth", pkl, {"0": np.ones(4, "<f4").tobytes()})
    with pytest.raises(TorchFileError, match=match):
        torchfile.load(path)


def test_unsupported_dtype_named(tmp_path):
    pkl = dict_pickle(t=tensor_ops("0", 2, 0, (2,), (1,), storage="BFloat16Storage"))
    path = write_zip(tmp_path / "t.pth", pkl, {"0": bytes(4)})
    with pytest.raises(TorchFileError, match="torch.BFloat16Storage: a storage type this reader "
                                             "does not support"):
        torchfile.load(path)


def test_big_endian_storages_read_by_value(tmp_path):
    values = np.array([1.5, -2.0, 3.25], ">f4")
    pkl = dict_pickle(t=tensor_ops("0", 3, 0, (3,), (1,)))
    path = write_zip(tmp_path / "t.pth", pkl, {"0": values.tobytes()}, byteorder=b"big")
    np.testing.assert_array_equal(torchfile.load(path)["t"], values)


def test_container_formats_refused(tmp_path):
    pkl = dict_pickle(t=tensor_ops("0", 1, 0, (), ()))
    path = write_zip(tmp_path / "c.pth", pkl, {"0": bytes(4)}, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(TorchFileError, match="compressed"):
        torchfile.load(path)
    view = op_tuple(op_str("storage"), op_global("torch", "FloatStorage"), op_str("0"),
                    op_str("cpu"), op_int(4), op_tuple(op_str("1"), op_int(0), op_int(2))) + b"Q"
    path = write_legacy(tmp_path / "v.pth", dict_pickle(s=view), {"0": bytes(16)})
    with pytest.raises(TorchFileError, match="storage views"):
        torchfile.load(path)
    path = tmp_path / "tar.pth"
    path.write_bytes(b"ustar" + bytes(100))
    with pytest.raises(TorchFileError, match="not a PyTorch checkpoint"):
        torchfile.load(path)
    with pytest.raises(TorchFileError, match="not found"):
        torchfile.load(tmp_path / "missing.pth")
    path = tmp_path / "pickle.pth"
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(TorchFileError, match="magic number"):
        torchfile.load(path)
