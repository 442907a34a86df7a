"""Every reader against random corruption: a correct load or a ValueError, never
another exception, never unbounded memory (peak traced memory, numpy included)."""

import io
import pickle
import re
import tarfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from minisnn import checkpoint, data, export, infer, models

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PEAK = 16 << 20  # bytes; every input here is a few kB, a refused 4 GB claim must cost nothing


# -- corruptions -------------------------------------------------------------------------------
SIZES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]  # sizes and lengths headers may claim
# Anywhere, or at one of the format's own places (a size field, a header, a shape).
POSITION = st.tuples(st.sampled_from(["anywhere", "anchor"]), st.integers(0, 2**32))
EDITS = st.lists(st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(1, 255)),
    st.tuples(st.just("cut"), POSITION, st.just(None)),
    st.tuples(st.just("insert"), POSITION, st.one_of(st.binary(min_size=1, max_size=16),
                                                     st.sampled_from([b"9" * 9, b"0" * 12]))),
    st.tuples(st.just("word"), POSITION, st.sampled_from(SIZES))),
    min_size=1, max_size=4)


def corrupt(blob, edits, anchors=()):
    """``blob`` after the edits: a byte XOR-ed, a cut, an insertion, a 4-byte little-endian
    word overwritten; at a position modulo the current length, or at one of ``anchors``."""
    out = bytearray(blob)
    for kind, (where, at), arg in edits:
        if where == "anchor" and anchors:
            at = anchors[at % len(anchors)]
        at %= max(len(out), 1)
        if kind == "flip" and out:
            out[at] ^= arg
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "word" and len(out) >= 4:
            at = min(at, len(out) - 4)
            out[at:at + 4] = arg.to_bytes(4, "little")
    return bytes(out)


def load_or_refuse(load):
    """``load()``'s result, or None if it raised ValueError; asserts the peak memory."""
    tracemalloc.start()
    try:
        try:
            result = load()
        except ValueError:
            result = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK, f"peak traced memory {peak} bytes"
    return result


def after(blob, *patterns):
    """Positions just after every occurrence of the patterns."""
    return sorted(i + len(p) for p in patterns for i in range(len(blob)) if blob.startswith(p, i))


def npz_anchors(blob):
    """Zip size fields (local and central headers) and .npy shapes."""
    return sorted(after(blob, b"'shape': (") + [i + k for i in after(blob, b"PK\x03\x04")
                                               for k in (14, 18)]
                  + [i + k for i in after(blob, b"PK\x01\x02") for k in (16, 20)])


def tar_anchors(blob, compressed):
    """Member headers of a plain tar (name, mode, size, checksum); the gzip header and
    trailer (CRC-32, length)."""
    if compressed:
        return list(range(10)) + list(range(len(blob) - 8, len(blob)))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        return [m.offset + k for m in tf.getmembers() for k in (0, 100, 124, 148)]


def assert_same_dataset(loaded, ds):
    for key, value in ds.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# -- sources -----------------------------------------------------------------------------------
def small_dataset():
    """2 train and 1 test image per class, random pixels."""
    rng = np.random.default_rng(5)
    ys = {"train": np.repeat(np.arange(10), 2), "test": np.arange(10)}
    return {k: v for split, y in ys.items() for k, v in
            ((f"x_{split}", rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)),
             (f"y_{split}", y.astype(np.int64)))}


def tar_bytes(members, mode):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def image_members(ds):
    out = []
    for split in ("train", "test"):
        for i, (image, label) in enumerate(zip(ds[f"x_{split}"], ds[f"y_{split}"])):
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            out.append((f"{split}/{data.CLASSES[label]}/{i}.png", buf.getvalue()))
    return out


def python_members(ds):
    def batch(x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        return pickle.dumps({b"data": rows, b"labels": [int(v) for v in y]}, protocol=2)

    parts = np.array_split(np.arange(len(ds["y_train"])), 5)
    out = [(f"data_batch_{i + 1}", batch(ds["x_train"][p], ds["y_train"][p]))
           for i, p in enumerate(parts)]
    out.append(("test_batch", batch(ds["x_test"], ds["y_test"])))
    meta = {b"label_names": [c.encode() for c in data.CLASSES], b"num_cases_per_batch": 4}
    return out + [("batches.meta", pickle.dumps(meta, protocol=2))]


@pytest.fixture(scope="module")
def dataset():
    return small_dataset()


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    arrays = {"model.w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "model.codes": rng.integers(0, 512, (8, 3)).astype(np.int16),
              "optim.v": rng.standard_normal(7), "mask": rng.random(5) < 0.5}
    config = {"epoch": 3, "metrics": {"loss": [1.5, 0.75]}, "model": {"arch": "resnet20"}}
    blobs = {}
    for compress in (False, True):
        path = tmp_path_factory.mktemp("ckpt") / "c.npz"
        checkpoint.save_checkpoint(path, arrays, config, compress=compress)
        blobs[compress] = path.read_bytes()
    return arrays, config, blobs


@pytest.fixture(scope="module")
def rom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rom")
    layer = export.random_layer(np.random.default_rng(3), 3, 4, 3, height=6, width=5)
    export.write_manifest(root, [export.export_layer(layer, root)])
    return layer, {p.name: p.read_bytes() for p in sorted(root.iterdir())}


# -- one fuzz test per reader ----------------------------------------------------------------------
@FUZZ
@given(compress=st.booleans(), edits=EDITS)
def test_fuzzed_checkpoints_load_exactly_or_raise(tmp_path_factory, saved_checkpoint, compress, edits):
    arrays, config, blobs = saved_checkpoint
    path = tmp_path_factory.mktemp("fuzz") / "c.npz"
    path.write_bytes(corrupt(blobs[compress], edits, npz_anchors(blobs[compress])))
    result = load_or_refuse(lambda: checkpoint.load_checkpoint(path))
    if result is not None:  # the zip CRCs guard every byte that matters
        loaded, loaded_config = result
        assert loaded_config == config and set(loaded) == set(arrays)
        for name, value in arrays.items():
            assert loaded[name].dtype == value.dtype and loaded[name].tobytes() == value.tobytes()


@FUZZ
@given(which=st.integers(0, 100), edits=EDITS)
def test_fuzzed_rom_directories_load_their_words_or_raise(tmp_path_factory, rom_dir, which, edits):
    layer, files = rom_dir
    root = tmp_path_factory.mktemp("fuzz")
    hex_files = sorted(n for n in files if n != export.MANIFEST)
    victim = export.MANIFEST if which % 2 else hex_files[which // 2 % len(hex_files)]
    for name, blob in files.items():  # anchors: the manifest's keys, the words
        anchors = ([m.start(1) for m in re.finditer(rb'"(\w+)":', blob)] if name == export.MANIFEST
                   else after(blob, b"\n"))
        (root / name).write_bytes(corrupt(blob, edits, anchors) if name == victim else blob)
    loaded = load_or_refuse(lambda: export.read_layer(root, "random"))
    if loaded is not None:  # sha256 guards the words; the manifest's own fields may differ
        for field in ("kernel_codes", "codebook", "idx", "threshold", "flip", "scale", "shift"):
            np.testing.assert_array_equal(getattr(loaded, field), getattr(layer, field), field)


@FUZZ
@given(archive=st.booleans(), which=st.integers(0, 100), edits=EDITS)
def test_fuzzed_python_batches_load_or_raise(tmp_path_factory, dataset, archive, which, edits):
    root = tmp_path_factory.mktemp("fuzz")
    members = python_members(dataset)
    if archive:  # the gzip CRC guards every byte
        blob = tar_bytes(members, "w:gz")
        (root / "cifar.tar.gz").write_bytes(corrupt(blob, edits, tar_anchors(blob, True)))
        source = root / "cifar.tar.gz"
    else:  # a bare pickle has no checksum: pixels may change, nothing else may
        name, blob = members[which % len(members)]  # anchors: lengths of strings and bytes
        members[which % len(members)] = (name, corrupt(blob, edits, after(blob, b"X", b"B", b"T")))
        for name, blob in members:
            (root / name).write_bytes(blob)
        source = root
    loaded = load_or_refuse(lambda: data.load_cifar10(source, cache_dir=root / "cache",
                                                      progress=False))
    if loaded is not None and archive:
        assert_same_dataset(loaded, dataset)
    elif loaded is not None:
        assert_same_dataset({k: v for k, v in loaded.items() if k.startswith("y_")},
                            {k: v for k, v in dataset.items() if k.startswith("y_")})
        assert loaded["x_train"].shape == dataset["x_train"].shape


@FUZZ
@given(mode=st.sampled_from(["w", "w:gz"]), edits=EDITS)
def test_fuzzed_image_archives_load_exactly_or_raise(tmp_path_factory, dataset, mode, edits):
    root = tmp_path_factory.mktemp("fuzz")
    path = root / ("images.tar.gz" if mode == "w:gz" else "images.tar")
    blob = tar_bytes(image_members(dataset), mode)
    path.write_bytes(corrupt(blob, edits, tar_anchors(blob, mode == "w:gz")))
    loaded = load_or_refuse(lambda: data.load_cifar10(path, cache_dir=root / "cache",
                                                      progress=False))
    if loaded is not None:  # tar header checksums, PNG CRCs, zlib Adler-32, gzip CRC
        assert_same_dataset(loaded, dataset)


# -- inference refuses what it cannot compute with ------------------------------------------------
def test_infer_refuses_non_finite_weights_before_data_loads(tmp_path, capsys):
    model = models.resnet20("bnn", "binary", seed=0)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays["model.fc.weight"][2, 5] = np.nan
    checkpoint.save_checkpoint(tmp_path / "nan.npz", arrays, {"model": model.config})
    assert infer.main([str(tmp_path / "nan.npz"), "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "nan.npz: array 'model.fc.weight' holds NaN or infinite values" in err, err
