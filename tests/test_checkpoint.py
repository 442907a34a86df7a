import json
import os

import numpy as np
import pytest

from minisnn import atomic, checkpoint
from minisnn.checkpoint import (check_config, init_module_from, load_checkpoint, restore_module,
                                save_checkpoint)
from minisnn.nn import Module, Parameter


class Tiny(Module):
    """Smallest module with a parameter and a buffer, independent of the real layers."""

    def __init__(self, rng):
        self.weight = Parameter(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), decay=True)
        self.bias = Parameter(np.zeros(4, np.float32))
        self.register_buffer("count", np.zeros(4, np.int64))


def sample_arrays(rng):
    return {
        "model.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "model.codes": rng.integers(0, 512, size=(8, 3), dtype=np.int16),
        "optim.momentum": rng.standard_normal(7),
        "mask": rng.random(5) < 0.5,
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.uint8),
    }


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    arrays = sample_arrays(rng)
    gen = np.random.default_rng(123)
    config = {"arch": "resnet20", "tau": 6, "epoch": 3, "metrics": {"loss": [1.5, 0.75]},
              "rng": gen.bit_generator.state, "nan_ok": None}
    path = save_checkpoint(tmp_path / "sub" / "a.npz", arrays, config)
    assert path == tmp_path / "sub" / "a.npz" and path.is_file()
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config
    assert set(loaded) == set(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype, name
        assert loaded[name].shape == value.shape, name
        assert loaded[name].tobytes() == value.tobytes(), name
    # The 128-bit PCG64 state survives JSON, so a resumed run draws the same numbers.
    resumed = np.random.default_rng()
    resumed.bit_generator.state = loaded_config["rng"]
    assert np.array_equal(resumed.random(5), gen.random(5))


@pytest.mark.parametrize("compress", [False, True])
def test_members_hold_the_bytes_numpy_writes(tmp_path, monkeypatch, compress):
    """Arrays are written in pieces (here of 7 bytes, so pieces end mid-element),
    yet every member holds exactly what np.save writes; Fortran order comes back equal."""
    import io
    import zipfile
    monkeypatch.setattr(checkpoint, "_WRITE_PIECE", 7)
    rng = np.random.default_rng(1)
    arrays = {"f4": rng.standard_normal((3, 5, 2)).astype(np.float32), "scalar": np.array(5),
              "empty": np.zeros((0, 4)), "bool": rng.random(13) < 0.5,
              "be": np.arange(6, dtype=">i4"), "u2": np.arange(9, dtype=np.uint16).reshape(3, 3)}
    path = save_checkpoint(tmp_path / "a.npz", arrays, {}, compress=compress)
    with zipfile.ZipFile(path) as zf:
        for name, value in arrays.items():
            expected = io.BytesIO()
            np.save(expected, value, allow_pickle=False)
            assert zf.read(name + ".npy") == expected.getvalue(), name
    fortran = np.asfortranarray(rng.standard_normal((4, 3)))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "f.npz", {"f": fortran}, {}))
    np.testing.assert_array_equal(loaded["f"], fortran)


def test_numpy_scalars_in_config_become_numbers(tmp_path):
    path = save_checkpoint(tmp_path / "a.npz", {}, {"acc": np.float32(0.5), "n": np.int64(7)})
    _, config = load_checkpoint(path)
    assert config == {"acc": 0.5, "n": 7}
    assert type(config["n"]) is int


def test_arrays_are_read_before_returning(tmp_path):
    path = save_checkpoint(tmp_path / "a.npz", {"x": np.arange(10)}, {})
    arrays, _ = load_checkpoint(path)
    os.remove(path)  # nothing may still be reading from the file
    assert isinstance(arrays["x"], np.ndarray)
    assert np.array_equal(arrays["x"], np.arange(10))


def test_array_named_like_savez_keyword(tmp_path):
    path = save_checkpoint(tmp_path / "a.npz", {"file": np.ones(2), "allow_pickle": np.zeros(1)}, {})
    arrays, _ = load_checkpoint(path)
    assert np.array_equal(arrays["file"], np.ones(2))
    assert np.array_equal(arrays["allow_pickle"], np.zeros(1))


@pytest.mark.parametrize("target", ["write", "replace"])
def test_crash_during_write_keeps_old_checkpoint(tmp_path, monkeypatch, target):
    path = save_checkpoint(tmp_path / "a.npz", {"x": np.arange(3)}, {"epoch": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    if target == "write":
        monkeypatch.setattr(checkpoint, "_write_npy", crash)
    else:
        monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"x": np.arange(100)}, {"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["a.npz"]
    arrays, config = load_checkpoint(path)
    assert config == {"epoch": 1} and np.array_equal(arrays["x"], np.arange(3))


def test_write_json_round_trip_with_numpy_scalars(tmp_path):
    path = checkpoint.write_json(tmp_path / "sub" / "m.json", {"acc": np.float32(0.5), "n": [1, 2]})
    assert json.loads(path.read_text()) == {"acc": 0.5, "n": [1, 2]}
    assert path.read_text().endswith("\n") and listing(tmp_path / "sub") == ["m.json"]


@pytest.mark.parametrize("target", ["write", "replace"])
def test_write_json_crash_keeps_old_file(tmp_path, monkeypatch, target):
    # A reader polling for metrics.json must never see an empty or half file.
    path = checkpoint.write_json(tmp_path / "m.json", {"epoch": 1})

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(atomic.os, "fsync" if target == "write" else "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.write_json(path, {"epoch": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert listing(tmp_path) == ["m.json"]


def test_write_json_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"m\.json.*not JSON serialisable"):
        checkpoint.write_json(tmp_path / "m.json", {"bad": object()})
    assert listing(tmp_path) == []


def test_refused_inputs_leave_no_file(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(ValueError, match=r"a\.npz.*'obj'.*pickle"):
        save_checkpoint(path, {"obj": np.array([{"a": 1}, None], dtype=object)}, {})
    with pytest.raises(ValueError, match=r"a\.npz.*'__config__'.*reserved"):
        save_checkpoint(path, {"__config__": np.zeros(3, np.uint8)}, {})
    with pytest.raises(ValueError, match=r"a\.npz.*config is not JSON serialisable"):
        save_checkpoint(path, {}, {"bad": object()})
    with pytest.raises(ValueError, match=r"a\.npz.*config must be a dict"):
        save_checkpoint(path, {}, [1, 2])
    assert listing(tmp_path) == []


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tmp_path, keep):
    rng = np.random.default_rng(1)
    path = save_checkpoint(tmp_path / "t.npz", sample_arrays(rng), {"epoch": 1})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"t\.npz.*not a readable checkpoint"):
        load_checkpoint(path)


def test_flipped_byte_fails_crc(tmp_path):
    rng = np.random.default_rng(2)
    path = save_checkpoint(tmp_path / "c.npz", {"w": rng.standard_normal(1000)}, {})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the array payload, away from the headers
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c\.npz.*not a readable checkpoint.*CRC"):
        load_checkpoint(path)


def test_not_a_zip_and_missing_file(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello, I am not a checkpoint\n" * 10)
    with pytest.raises(ValueError, match=r"text\.npz.*not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=r"nope\.npz.*not found"):
        load_checkpoint(tmp_path / "nope.npz")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.arange(3))
    with pytest.raises(ValueError, match=r"single\.npz.*single \.npy array"):
        load_checkpoint(npy)


def test_missing_or_invalid_config(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.arange(3))
    with pytest.raises(ValueError, match=r"plain\.npz.*no '__config__'"):
        load_checkpoint(plain)
    bad = tmp_path / "bad.npz"
    np.savez(bad, __config__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz.*not valid UTF-8 JSON"):
        load_checkpoint(bad)
    listy = tmp_path / "list.npz"
    np.savez(listy, __config__=np.frombuffer(b"[1, 2]", np.uint8))
    with pytest.raises(ValueError, match=r"list\.npz.*JSON object"):
        load_checkpoint(listy)


class Boom:
    """Unpickling this would run os.system-like code; here it just records that it ran."""

    ran = False

    def __reduce__(self):
        return (Boom._detonate, ())

    @staticmethod
    def _detonate():
        Boom.ran = True
        return "boom"


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([Boom(), 1], dtype=object),
             __config__=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(ValueError, match=r"evil\.npz.*not a readable checkpoint.*pickle"):
        load_checkpoint(path)
    assert not Boom.ran


def test_check_config(tmp_path):
    path = tmp_path / "a.npz"
    found = {"tau": 6, "arch": "resnet20", "shape": [3, 32, 32], "lr": 0.1}
    check_config(found, {"tau": 6, "shape": (3, 32, 32)}, path)
    check_config(found, {"tau": 5, "arch": "resnet20"}, path, keys=["arch"])
    with pytest.raises(ValueError, match=r"a\.npz.*'tau' is 6, expected 5"):
        check_config(found, {"tau": 5}, path)
    with pytest.raises(ValueError, match=r"a\.npz.*no key 'seed', expected 0"):
        check_config(found, {"seed": 0}, path)
    with pytest.raises(ValueError, match=r"a\.npz.*'arch'.*expected config lacks"):
        check_config(found, {"tau": 6}, path, keys=["arch"])


def test_check_config_reads_an_absent_key_as_its_default(tmp_path):
    # a checkpoint written before an option existed was trained with its default
    path = tmp_path / "old.npz"
    check_config({"tau": 6}, {"tau": 6, "init": None}, path, defaults={"init": None})
    with pytest.raises(ValueError, match=r"old\.npz.*no key 'init'.*default None.*expected 'w\.npz'"):
        check_config({"tau": 6}, {"tau": 6, "init": "w.npz"}, path, defaults={"init": None})


def test_restore_module_round_trip(tmp_path):
    src, dst = Tiny(np.random.default_rng(0)), Tiny(np.random.default_rng(1))
    src.count[:] = [1, 2, 3, 4]
    state = {"model." + k: v for k, v in src.state_dict().items()}
    path = save_checkpoint(tmp_path / "m.npz", {**state, "optim.v": np.ones(3)}, {})
    arrays, _ = load_checkpoint(path)
    restore_module(dst, arrays, path)
    for name, value in src.state_dict().items():
        assert np.array_equal(dst.state_dict()[name], value), name
    assert not np.array_equal(Tiny(np.random.default_rng(1)).weight.data, dst.weight.data)


def test_restore_module_missing_array(tmp_path):
    module = Tiny(np.random.default_rng(0))
    arrays = {"model." + k: v for k, v in module.state_dict().items() if k != "weight"}
    with pytest.raises(ValueError, match=r"m\.npz.*missing array 'model\.weight'.*\(4, 3, 3, 3\)"):
        restore_module(module, arrays, tmp_path / "m.npz")


def test_restore_module_misshapen_array(tmp_path):
    module = Tiny(np.random.default_rng(0))
    arrays = {"model." + k: v for k, v in module.state_dict().items()}
    arrays["model.weight"] = np.zeros((4, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"m\.npz.*'weight'.*\(4, 3, 1, 1\).*\(4, 3, 3, 3\)"):
        restore_module(module, arrays, tmp_path / "m.npz")


def test_init_module_from_copies_shared_arrays_and_keeps_the_rest(tmp_path):
    src, dst = Tiny(np.random.default_rng(0)), Tiny(np.random.default_rng(1))
    fresh_bias = dst.bias.data.copy()
    arrays = {"model.weight": src.weight.data, "model.count": np.arange(4),
              "model.other": np.ones(2), "optim.weight.momentum": np.ones((4, 3, 3, 3))}
    kept = init_module_from(dst, arrays, tmp_path / "m.npz")
    assert kept == ["bias"]
    assert np.array_equal(dst.weight.data, src.weight.data)
    assert np.array_equal(dst.count, np.arange(4))
    assert np.array_equal(dst.bias.data, fresh_bias)


def test_init_module_from_refuses_misshapen_or_unrelated_arrays(tmp_path):
    module = Tiny(np.random.default_rng(0))
    before = module.weight.data.copy()
    with pytest.raises(ValueError, match=r"m\.npz.*'model\.weight'.*\(4, 3, 1, 1\).*\(4, 3, 3, 3\)"):
        init_module_from(module, {"model.weight": np.zeros((4, 3, 1, 1), np.float32)},
                         tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"m\.npz.*no array matches"):
        init_module_from(module, {"model.other": np.zeros(3)}, tmp_path / "m.npz")
    assert np.array_equal(module.weight.data, before)  # a refused source changes nothing


def test_inference_checkpoint_is_compressed_and_rebuilds_the_model(tmp_path):
    import zipfile
    from minisnn import models
    model = models.resnet20("snn", "binary", tau=4, block="reactnet", seed=2).eval()
    path = checkpoint.save_inference(tmp_path / "m.npz", model, test_accuracy=12.5)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert not any(i.filename.startswith("optim.") for i in zf.infolist())
    _, config = checkpoint.load_checkpoint(path)
    assert config["test_accuracy"] == 12.5 and config["model"]["block"] == "reactnet"
    loaded = checkpoint.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


# -- hostile files: every header checked before any data is read, memory bounded -------------
def _npy_header(shape, descr="<f4"):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _config_member():
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(b"{}", np.uint8))
    return buf.getvalue()


def _peak_while_refused(fn, match):
    """Peak traced memory (numpy arrays included) while ``fn`` raises ValueError ``match``."""
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_tiny_file_claiming_terabytes_is_refused_from_its_header(tmp_path):
    import zipfile
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__config__.npy", _config_member())
        zf.writestr("model.w.npy", _npy_header((1 << 40,)) + bytes(16))  # 4 TB of float32
    assert path.stat().st_size < 1000
    peak = _peak_while_refused(lambda: load_checkpoint(path),
                               r"huge\.npz.*'model\.w\.npy' declares shape \(1099511627776,\)")
    assert peak < 1 << 20, peak


def _set_declared_size(path, member, size):
    """Overwrite a member's uncompressed size in its local and central zip headers."""
    import struct
    blob = bytearray(path.read_bytes())
    for sig, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = blob.find(sig)
        while at >= 0:
            if blob[at + name_at:].startswith(member.encode()):
                blob[at + size_at:at + size_at + 4] = struct.pack("<I", size)
            at = blob.find(sig, at + 4)
    path.write_bytes(bytes(blob))


def test_a_zip_directory_lying_about_sizes_is_refused(tmp_path):
    import zipfile
    for compression, pattern in ((zipfile.ZIP_DEFLATED, "ratio above 64"),
                                 (zipfile.ZIP_STORED, "stored with .* bytes but declares")):
        path = tmp_path / "lie.npz"
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            zf.writestr("__config__.npy", _config_member())
            zf.writestr("model.w.npy", _npy_header((1 << 30,)) + bytes(16))
        _set_declared_size(path, "model.w.npy", 0xFFFFFFFF)  # 4 GB, matching no header
        peak = _peak_while_refused(lambda: load_checkpoint(path), rf"lie\.npz.*{pattern}")
        assert peak < 1 << 20, peak


def test_a_deflate_bomb_is_refused_with_bounded_memory(tmp_path):
    import zipfile
    path = tmp_path / "bomb.npz"
    n = 128 << 20  # 128 MiB of zeros deflate to ~130 kB
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__config__.npy", _config_member())
        with zf.open("model.bomb.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((n,), "|u1"))
            chunk = bytes(1 << 20)
            for _ in range(n >> 20):
                f.write(chunk)
    assert path.stat().st_size < n // 500
    peak = _peak_while_refused(lambda: load_checkpoint(path), r"bomb\.npz.*decompression bomb")
    assert peak < 4 << 20, peak


def test_load_model_reads_nothing_the_model_does_not_need(tmp_path):
    from minisnn import models
    model = models.resnet20("fp", "real", seed=0)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    ok = save_checkpoint(tmp_path / "ok.npz", {**arrays, "optim.big": np.zeros(8 << 20, np.float32)},
                         {"model": model.config})
    import tracemalloc
    tracemalloc.start()
    try:
        checkpoint.load_model(ok)  # skips the 32 MB optimizer array
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    extra = save_checkpoint(tmp_path / "extra.npz",
                            {**arrays, "model.unexpected": np.zeros(8 << 20, np.float32)},
                            {"model": model.config})
    peak = _peak_while_refused(lambda: checkpoint.load_model(extra),
                               r"extra\.npz.*unexpected array 'model\.unexpected' not in the model")
    assert peak < 16 << 20, peak
    arrays["model.fc.weight"] = np.zeros((10, 63), np.float32)
    bad = save_checkpoint(tmp_path / "bad.npz", arrays, {"model": model.config})
    with pytest.raises(ValueError, match=r"bad\.npz.*'model\.fc\.weight' has shape \(10, 63\), "
                                         r"expected \(10, 64\)"):
        checkpoint.load_model(bad)


def test_deeply_nested_json_config_is_a_value_error(tmp_path):
    import zipfile
    import io
    deep = tmp_path / "deep.npz"
    text = b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(text, np.uint8))
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("__config__.npy", buf.getvalue())
    with pytest.raises(ValueError, match=r"deep\.npz.*config nests deeper than 64 levels"):
        load_checkpoint(deep)
    # brackets inside strings do not nest; 64 levels are fine
    config = {"s": "[{" * 1000 + '\\"[', "n": json.loads("[" * 63 + "]" * 63)}
    path = save_checkpoint(tmp_path / "fine.npz", {}, config)
    assert load_checkpoint(path)[1] == config == checkpoint.load_config(path)


def test_load_model_refuses_non_finite_weights(tmp_path):
    from minisnn import models
    model = models.resnet20("bnn", "binary", seed=0)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays["model.layer1.0.conv1.weight"][0, 0, 0, 0] = np.nan
    path = save_checkpoint(tmp_path / "nan.npz", arrays, {"model": model.config})
    with pytest.raises(ValueError, match=r"nan\.npz.*'model\.layer1\.0\.conv1\.weight' holds NaN "
                                         r"or infinite values \(1 of"):
        checkpoint.load_model(path)
