"""Tests of minisnn.data on small synthetic sources in every supported format."""

import argparse
import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minisnn import data
from minisnn.data import (CLASSES, MEAN, STD, BatchIterator, DataError, add_data_arguments,
                          augment, load_cifar10, load_from_args, load_image_folder, normalize,
                          resolve_source, take_subset)

# -- builders of synthetic sources ---------------------------------------------------------
def make_split(per_class, seed, smooth=False):
    """per_class images of each class, grouped by class in label order."""
    rng = np.random.default_rng(seed)
    n = per_class * len(CLASSES)
    if smooth:  # JPEG-friendly: a per-image colour plus a gentle gradient
        base = rng.integers(40, 200, size=(n, 1, 1, 3))
        ramp = np.arange(32)[None, :, None, None] + np.arange(32)[None, None, :, None]
        x = (base + ramp).astype(np.uint8)
    else:
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(len(CLASSES)), per_class).astype(np.int64)
    return x, y


def make_dataset(train_per_class=3, test_per_class=2, smooth=False):
    x_train, y_train = make_split(train_per_class, 1, smooth)
    x_test, y_test = make_split(test_per_class, 2, smooth)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def encode(image, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_members(ds, fmt="PNG", prefix=""):
    """(archive name, bytes) of an image folder; file names 0..n-1 per class."""
    ext = ".png" if fmt == "PNG" else ".jpg"
    out = []
    for split in ("train", "test"):
        x, y = ds[f"x_{split}"], ds[f"y_{split}"]
        counters = {}
        for image, label in zip(x, y):
            i = counters[label] = counters.get(label, -1) + 1
            out.append((f"{prefix}{split}/{CLASSES[label]}/{i}{ext}", encode(image, fmt)))
    return out


def write_dir(root, members):
    for name, blob in members:
        p = Path(root) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
    return Path(root)


def write_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return Path(path)


def python_batch(x, y, label="batch"):
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return pickle.dumps({b"batch_label": label.encode(), b"labels": [int(v) for v in y],
                         b"data": rows, b"filenames": [b"f%d.png" % i for i in range(len(x))]},
                        protocol=2)


def python_members(ds, prefix="cifar-10-batches-py/"):
    parts = np.array_split(np.arange(len(ds["y_train"])), 5)
    out = [(f"{prefix}data_batch_{i + 1}", python_batch(ds["x_train"][p], ds["y_train"][p]))
           for i, p in enumerate(parts)]
    out.append((f"{prefix}test_batch", python_batch(ds["x_test"], ds["y_test"])))
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    out.append((f"{prefix}batches.meta", pickle.dumps(meta, protocol=2)))
    out.append((f"{prefix}readme.html", b"<html></html>"))
    return out


def assert_same(loaded, ds):
    assert set(loaded) == {"x_train", "y_train", "x_test", "y_test"}
    for key, value in ds.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache dir, also set as MINISNN_CACHE; no MINISNN_DATA leaks in."""
    d = tmp_path / "cache"
    monkeypatch.setenv("MINISNN_CACHE", str(d))
    monkeypatch.delenv("MINISNN_DATA", raising=False)
    return d


# -- each format --------------------------------------------------------------------------
def test_constants():
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")
    assert MEAN.dtype == STD.dtype == np.float32 and MEAN.shape == STD.shape == (3,)
    np.testing.assert_allclose(MEAN, [0.4914, 0.4822, 0.4465])
    np.testing.assert_allclose(STD, [0.2470, 0.2435, 0.2616])


def test_python_release_directory(tmp_path, cache):
    ds = make_dataset()
    root = write_dir(tmp_path / "release", python_members(ds))
    assert_same(load_cifar10(root, progress=False), ds)  # the parent of cifar-10-batches-py/
    assert_same(load_cifar10(root / "cifar-10-batches-py", progress=False), ds)


def test_python_release_archive(tmp_path, cache):
    ds = make_dataset()
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", python_members(ds))
    assert_same(load_cifar10(archive, progress=False), ds)


def test_python_release_with_numpy_labels_and_str_keys(tmp_path, cache):
    ds = make_dataset(train_per_class=1, test_per_class=1)
    members = python_members(ds, prefix="")
    rows = ds["x_test"].transpose(0, 3, 1, 2).reshape(-1, 3072)
    members[5] = ("test_batch", pickle.dumps({"data": rows, "labels": ds["y_test"]}, protocol=4))
    assert_same(load_cifar10(write_dir(tmp_path / "r", members), progress=False), ds)


def test_image_folder_directory_png_is_exact(tmp_path, cache):
    ds = make_dataset()
    root = write_dir(tmp_path / "imgs", image_members(ds))
    assert_same(load_cifar10(root, progress=False), ds)


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_image_folder_archive_png_with_top_level_dir(tmp_path, cache, mode, suffix):
    ds = make_dataset()
    members = image_members(ds, prefix="cifar10/")
    members.insert(0, ("cifar10/README.txt", b"hello"))
    archive = write_tar(tmp_path / f"imgs{suffix}", members[::-1], mode=mode)  # order must not matter
    assert_same(load_cifar10(archive, progress=False), ds)


def test_image_folder_archive_jpeg(tmp_path, cache):
    ds = make_dataset(smooth=True)
    archive = write_tar(tmp_path / "jpg.tar.gz", image_members(ds, fmt="JPEG"))
    loaded = load_cifar10(archive, progress=False)
    np.testing.assert_array_equal(loaded["y_train"], ds["y_train"])
    np.testing.assert_array_equal(loaded["y_test"], ds["y_test"])
    assert loaded["x_train"].shape == ds["x_train"].shape and loaded["x_train"].dtype == np.uint8
    err = np.abs(loaded["x_train"].astype(int) - ds["x_train"]).mean()
    assert err < 3, err  # lossy, but close


def test_natural_file_order_and_class_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in (1, 2, 10)}
    members = [(f"train/cat/img{i}.png", encode(im)) for i, im in images.items()]
    members += [("train/airplane/a.png", encode(images[1])), ("test/truck/x.png", encode(images[2]))]
    d = load_image_folder(write_dir(tmp_path / "d", members))
    np.testing.assert_array_equal(d["y_train"], [0, 3, 3, 3])
    np.testing.assert_array_equal(d["x_train"][1:], [images[1], images[2], images[10]])
    np.testing.assert_array_equal(d["y_test"], [9])


def test_grayscale_and_palette_images_become_rgb(tmp_path):
    gray = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG")
    members = [("train/cat/0.png", buf.getvalue()), ("test/cat/0.png", buf.getvalue())]
    d = load_image_folder(write_tar(tmp_path / "g.tar", members, mode="w"))
    np.testing.assert_array_equal(d["x_train"][0], np.repeat(gray[:, :, None], 3, axis=2))


def test_npz_source(tmp_path, cache):
    ds = make_dataset()
    np.savez(tmp_path / "mine.npz", **ds)
    assert_same(load_cifar10(tmp_path / "mine.npz", progress=False), ds)


# -- limited reads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("as_tar", [False, True])
def test_load_image_folder_limit_per_class(tmp_path, as_tar):
    ds = make_dataset(train_per_class=12, test_per_class=3)
    members = image_members(ds)
    src = (write_tar(tmp_path / "a.tar.gz", members[::-1]) if as_tar
           else write_dir(tmp_path / "d", members))
    d = load_image_folder(src, limit_per_class=2)
    # the first 2 by natural name order: 0.png and 1.png, not 0.png and 10.png
    keep = np.concatenate([np.arange(c * 12, c * 12 + 2) for c in range(10)])
    np.testing.assert_array_equal(d["x_train"], ds["x_train"][keep])
    np.testing.assert_array_equal(d["y_train"], ds["y_train"][keep])
    assert d["x_test"].shape == (20, 32, 32, 3)
    with pytest.raises(ValueError):
        load_image_folder(src, limit_per_class=0)


def test_real_cifar10_as_the_tools_find_it(cifar):
    """The real data set (MINISNN_DATA, ../shared/data or the official download): full
    splits, balanced classes, photographs."""
    assert cifar["x_train"].shape == (50000, 32, 32, 3) and cifar["x_test"].shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(cifar["y_train"]), [5000] * 10)
    d = {}
    d["x_train"], d["y_train"] = take_subset(cifar["x_train"], cifar["y_train"], 100)
    d["x_test"], d["y_test"] = take_subset(cifar["x_test"], cifar["y_test"], 100)
    assert d["x_train"].shape == (100, 32, 32, 3) and d["x_test"].shape == (100, 32, 32, 3)
    assert d["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(d["y_train"]), [10] * 10)
    np.testing.assert_array_equal(np.bincount(d["y_test"]), [10] * 10)
    # real photographs: varied, not blank, roughly CIFAR-like statistics
    assert 80 < d["x_train"].mean() < 160 and d["x_train"].std() > 40
    assert len({im.tobytes() for im in d["x_train"]}) == 100


# -- the cache -----------------------------------------------------------------------------------
def _no_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")
    monkeypatch.setattr(data, "_decode_image", boom)
    monkeypatch.setattr(data, "_unpickle", boom)


@pytest.mark.parametrize("kind", ["png-dir", "png-tar", "python-dir", "python-tar"])
def test_cache_written_and_reused(tmp_path, cache, monkeypatch, kind):
    ds = make_dataset()
    members = image_members(ds) if kind.startswith("png") else python_members(ds)
    src = (write_tar(tmp_path / "src.tar.gz", members) if kind.endswith("tar")
           else write_dir(tmp_path / "src", members))
    assert_same(load_cifar10(src, progress=False), ds)
    files = sorted(cache.iterdir())
    assert [f.suffix for f in files] == [".npz"], files  # no temp files left behind
    assert files[0] == data.cache_path(src)
    with np.load(files[0], allow_pickle=False) as z:
        np.testing.assert_array_equal(z["x_train"], ds["x_train"])
    _no_decoding(monkeypatch)
    assert_same(load_cifar10(src, progress=False), ds)


def test_cache_key_follows_content(tmp_path, cache):
    ds = make_dataset()
    root = write_dir(tmp_path / "d", image_members(ds))
    load_cifar10(root, progress=False)
    changed = ds["x_train"].copy()
    changed[0] = 0
    (root / "train/airplane/0.png").write_bytes(encode(changed[0]))
    os.utime(root / "train/airplane/0.png", ns=(1, 1))
    d = load_cifar10(root, progress=False)
    np.testing.assert_array_equal(d["x_train"], changed)
    assert len(list(cache.glob("*.npz"))) == 2


def test_cache_dir_argument_and_default(tmp_path, monkeypatch):
    ds = make_dataset(1, 1)
    src = write_dir(tmp_path / "d", image_members(ds))
    monkeypatch.delenv("MINISNN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_cifar10(src, progress=False)
    assert len(list((tmp_path / "home/.cache/minisnn").glob("*.npz"))) == 1
    load_cifar10(src, cache_dir=tmp_path / "explicit", progress=False)
    assert len(list((tmp_path / "explicit").glob("*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, cache, capsys):
    ds = make_dataset(1, 1)
    src = write_dir(tmp_path / "d", image_members(ds))
    target = data.cache_path(src)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a zip")
    assert_same(load_cifar10(src, progress=False), ds)
    assert "unreadable cache" in capsys.readouterr().err
    assert_same(load_cifar10(src, progress=False), ds)


def test_progress_summary_on_stderr(tmp_path, cache, capsys):
    src = write_dir(tmp_path / "d", image_members(make_dataset(1, 1)))
    load_cifar10(src, progress=True)
    err = capsys.readouterr().err
    assert "10 train + 10 test images" in err and "cached in" in err
    load_cifar10(src, progress=True)
    assert "cache" in capsys.readouterr().err


# -- where the data comes from ---------------------------------------------------------------
@pytest.fixture
def no_shared(tmp_path, monkeypatch):
    """Neither the cwd-relative nor the repository-relative shared archive exists."""
    work = tmp_path / "elsewhere" / "checkout"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(data, "_REPO_ROOT", work)
    return work


def test_resolve_precedence(tmp_path, cache, no_shared, monkeypatch):
    flag, env = tmp_path / "flag.tar.gz", tmp_path / "env.tar.gz"
    flag.write_bytes(b"x")
    env.write_bytes(b"x")
    shared_cwd = no_shared.parent / "shared/data/cifar10-jpg.tar.gz"
    repo = tmp_path / "repo" / "main"
    repo.mkdir(parents=True)
    shared_repo = repo.parent / "shared/data/cifar10-jpg.tar.gz"
    monkeypatch.setattr(data, "_REPO_ROOT", repo)
    for p in (shared_cwd, shared_repo):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")

    monkeypatch.setenv("MINISNN_DATA", str(env))
    assert resolve_source(flag) == flag
    assert resolve_source(str(flag)) == flag
    assert resolve_source() == env
    monkeypatch.delenv("MINISNN_DATA")
    assert resolve_source() == shared_cwd.resolve()
    shared_cwd.unlink()
    assert resolve_source() == shared_repo.resolve()
    shared_repo.unlink()
    with pytest.raises(DataError, match="--data PATH or set MINISNN_DATA"):
        resolve_source(download=False)


def test_resolve_missing_paths_are_named(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="--data .*nope.*no such file"):
        resolve_source(tmp_path / "nope")
    monkeypatch.setenv("MINISNN_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="MINISNN_DATA .*gone"):
        resolve_source()


def test_download_with_checksum(tmp_path, cache, no_shared, monkeypatch):
    ds = make_dataset(1, 1)
    release = write_tar(tmp_path / "served.tar.gz", python_members(ds))
    monkeypatch.setattr(data, "DOWNLOAD_URL", release.as_uri())
    monkeypatch.setattr(data, "DOWNLOAD_MD5", data._file_digest(release, "md5"))
    got = resolve_source()
    assert got == cache / "cifar-10-python.tar.gz" and got.read_bytes() == release.read_bytes()
    assert_same(load_cifar10(progress=False), ds)
    # already downloaded: no network needed any more
    monkeypatch.setattr(data, "DOWNLOAD_URL", (tmp_path / "missing").as_uri())
    assert resolve_source() == got


def test_download_failures_say_what_to_pass(tmp_path, cache, no_shared, monkeypatch):
    monkeypatch.setattr(data, "DOWNLOAD_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(DataError) as info:
        load_cifar10(progress=False)
    message = str(info.value)
    assert "--data PATH" in message and "MINISNN_DATA" in message
    assert "cifar-10-batches-py" in message and "train/<class>" in message
    served = tmp_path / "served.tar.gz"
    served.write_bytes(b"something else")
    monkeypatch.setattr(data, "DOWNLOAD_URL", served.as_uri())
    with pytest.raises(DataError, match="md5"):
        resolve_source()
    assert not list(cache.glob("*")), "no partial download left behind"


# -- bad inputs ------------------------------------------------------------------------------
def test_truncated_archives(tmp_path, cache):
    ds = make_dataset()
    for name, mode in (("cut.tar.gz", "w:gz"), ("cut.tar", "w")):
        full = write_tar(tmp_path / ("full-" + name), image_members(ds), mode=mode)
        blob = full.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(blob[: len(blob) // 2 + 100])
        with pytest.raises(DataError, match=rf"{name}.*truncated or corrupt"):
            load_cifar10(cut, progress=False)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"\0" * 50)
    with pytest.raises(DataError, match="garbage.tar.gz"):
        load_cifar10(garbage, progress=False)


def test_wrong_image_shape_names_member_and_shape(tmp_path, cache):
    members = image_members(make_dataset(1, 1))
    members[3] = ("train/cat/odd.png", encode(np.zeros((30, 32, 3), np.uint8)))
    with pytest.raises(DataError, match=r"train/cat/odd\.png.*\(30, 32, 3\).*\(32, 32, 3\)"):
        load_cifar10(write_tar(tmp_path / "a.tar.gz", members), progress=False)
    with pytest.raises(DataError, match=r"odd\.png.*\(30, 32, 3\)"):
        load_cifar10(write_dir(tmp_path / "d", members), progress=False)


def test_corrupt_image_is_named(tmp_path, cache):
    members = image_members(make_dataset(1, 1))
    members[0] = ("train/airplane/bad.png", b"\x89PNG not really")
    with pytest.raises(DataError, match=r"train/airplane/bad\.png.*cannot decode"):
        load_cifar10(write_tar(tmp_path / "a.tar", members, mode="w"), progress=False)


def test_unknown_class_folder(tmp_path, cache):
    blank = encode(np.zeros((32, 32, 3), np.uint8))
    members = image_members(make_dataset(1, 1)) + [("train/zebra/0.png", blank)]
    pattern = r"unknown class folder 'zebra'.*airplane, automobile, bird.*truck"
    with pytest.raises(DataError, match=pattern):
        load_cifar10(write_tar(tmp_path / "a.tar.gz", members), progress=False)
    with pytest.raises(DataError, match=pattern):
        load_cifar10(write_dir(tmp_path / "d", members), progress=False)


def test_missing_split(tmp_path, cache):
    members = [m for m in image_members(make_dataset(1, 1)) if m[0].startswith("train/")]
    with pytest.raises(DataError, match=r"a\.tar\.gz.*missing the test/ split"):
        load_cifar10(write_tar(tmp_path / "a.tar.gz", members), progress=False)
    with pytest.raises(DataError, match=r"missing the test/ split"):
        load_cifar10(write_dir(tmp_path / "d", members), progress=False)


def test_image_outside_class_folder(tmp_path, cache):
    blank = encode(np.zeros((32, 32, 3), np.uint8))
    members = image_members(make_dataset(1, 1)) + [("train/loose.png", blank)]
    with pytest.raises(DataError, match=r"train/loose\.png.*train/<class>/"):
        load_cifar10(write_tar(tmp_path / "a.tar", members, mode="w"), progress=False)


def test_not_a_cifar_directory(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: not a CIFAR-10 source"):
        load_cifar10(tmp_path / "empty", progress=False)


def test_python_batch_wrong_shape(tmp_path, cache):
    ds = make_dataset()
    members = python_members(ds)
    bad = pickle.dumps({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, protocol=2)
    members[2] = ("cifar-10-batches-py/data_batch_3", bad)
    with pytest.raises(DataError, match=r"data_batch_3.*shape \(4, 3000\).*\(N, 3072\)"):
        load_cifar10(write_tar(tmp_path / "r.tar.gz", members), progress=False)
    with pytest.raises(DataError, match=r"data_batch_3.*\(4, 3000\)"):
        load_cifar10(write_dir(tmp_path / "d", members), progress=False)


def test_python_batch_other_defects(tmp_path, cache):
    ds = make_dataset(1, 1)
    rows = ds["x_test"].transpose(0, 3, 1, 2).reshape(-1, 3072)
    cases = {
        "labels": ({b"data": rows, b"labels": [0] * 3}, r"b'labels' has shape \(3,\), expected \(10,\)"),
        "range": ({b"data": rows, b"labels": [12] * 10}, r"labels' must be integers in 0..9"),
        "keys": ({b"data": rows, b"fine_labels": [0] * 10}, r"CIFAR-100"),
    }
    for case, (obj, pattern) in cases.items():
        members = python_members(ds, prefix="")
        members[5] = ("test_batch", pickle.dumps(obj, protocol=2))
        with pytest.raises(DataError, match=r"test_batch.*" + pattern):
            load_cifar10(write_dir(tmp_path / case, members), progress=False)
    members = [m for m in python_members(ds, prefix="") if m[0] != "data_batch_4"]
    with pytest.raises(DataError, match="missing data_batch_4"):
        load_cifar10(write_dir(tmp_path / "missing", members), progress=False)
    members = python_members(ds, prefix="")
    members[0] = ("data_batch_1", members[0][1][:100])
    with pytest.raises(DataError, match="data_batch_1.*not a readable"):
        load_cifar10(write_dir(tmp_path / "trunc", members), progress=False)


def test_python2_style_pickle():
    """The official batches come from Python 2: str payloads, numpy.core paths."""
    raw = (b"\x80\x02}(U\x04data"
           b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
           b"(K\x01K\x02K\x03\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
           b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x01\x02\x03\x04\x05\x06tb"
           b"U\x06labels](K\x01K\x02eu.")
    got = data._unpickle(raw, "py2")
    np.testing.assert_array_equal(got[b"data"], [[1, 2, 3], [4, 5, 6]])
    assert got[b"data"].dtype == np.uint8 and got[b"labels"] == [1, 2]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_other_globals(tmp_path, cache):
    members = python_members(make_dataset(1, 1), prefix="")
    members[0] = ("data_batch_1", pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle (posix|os|nt)\.system"):
        load_cifar10(write_dir(tmp_path / "r", members), progress=False)


# -- subsets -----------------------------------------------------------------------------------
def test_take_subset_balanced_deterministic_in_order():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    x = np.arange(1000)
    xs, ys = take_subset(x, y, 95)
    assert len(xs) == 95 and np.all(np.diff(xs) > 0)  # original order kept
    counts = np.bincount(ys, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 95
    for c in range(10):  # the first samples of each class
        np.testing.assert_array_equal(xs[ys == c], np.flatnonzero(y == c)[: counts[c]])
    xs2, ys2 = take_subset(x, y, 95)
    np.testing.assert_array_equal(xs, xs2)
    assert take_subset(x, y, None)[0] is x and len(take_subset(x, y, 5000)[0]) == 1000


def test_take_subset_uneven_classes():
    y = np.array([0] * 2 + [1] * 20 + [2] * 20)
    xs, ys = take_subset(np.arange(42), y, 12)
    np.testing.assert_array_equal(np.bincount(ys), [2, 5, 5])


# -- normalization and augmentation ---------------------------------------------------------
def test_normalize():
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = normalize(x)
    assert out.dtype == np.float32 and out.shape == (5, 3, 32, 32) and out.flags.c_contiguous
    expected = ((x / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    mean_image = np.broadcast_to(np.round(MEAN * 255).astype(np.uint8), (1, 32, 32, 3))
    assert np.abs(normalize(mean_image)).max() < 0.01
    with pytest.raises(ValueError):
        normalize(x.astype(np.float32))


def _windows(image, padding=4):
    """All 2 * 9 * 9 crops of the zero-padded image, flipped or not."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def test_augment_is_a_padded_crop_or_flip():
    x = np.random.default_rng(1).integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)  # no zeros
    out = augment(x, np.random.default_rng(7))
    assert out.shape == x.shape and out.dtype == np.uint8
    found = []
    for image, result in zip(x, out):
        matches = [params for params, crop in _windows(image) if np.array_equal(crop, result)]
        assert len(matches) == 1
        found.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in found}
    flips = [f for _, _, f in found]
    assert len(offsets) > 20 and 10 < sum(flips) < 54  # really random
    # the documented draws
    rng = np.random.default_rng(7)
    offs, flip = rng.integers(0, 9, size=(64, 2)), rng.random(64) < 0.5
    assert found == [(int(a), int(b), bool(f)) for (a, b), f in zip(offs, flip)]
    np.testing.assert_array_equal(out, augment(x, np.random.default_rng(7)))
    assert not np.array_equal(out, augment(x, np.random.default_rng(8)))


# -- batches ---------------------------------------------------------------------------------
def _dataset(n=50):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def test_batch_iterator_plain_order_and_len():
    x, y = _dataset(50)
    it = BatchIterator(x, y, 16)
    assert len(it) == 4 and len(BatchIterator(x, y, 16, drop_last=True)) == 3
    batches = list(it)
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (16, 3, 32, 32) and yb.dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), normalize(x))
    assert [len(b[1]) for b in BatchIterator(x, y, 16, drop_last=True).epoch(0)] == [16] * 3


def test_batch_iterator_shuffle_covers_each_sample_once():
    x, y = _dataset(50)
    x[:, 0, 0, 0] = np.arange(50)  # tag each image
    it = BatchIterator(x, y, 8, shuffle=True, seed=5)
    seen = []
    for xb, yb in it.epoch(2):
        tags = np.rint(xb[:, 0, 0, 0] * STD[0] * 255 + MEAN[0] * 255).astype(int)
        np.testing.assert_array_equal(yb, y[tags])
        seen.extend(tags)
    assert sorted(seen) == list(range(50)) and seen != list(range(50))


def test_batch_iterator_depends_only_on_seed_and_epoch():
    x, y = _dataset(40)
    a = BatchIterator(x, y, 16, shuffle=True, augment=True, seed=11)
    b = BatchIterator(x, y, 16, shuffle=True, augment=True, seed=11)
    for _ in a.epoch(0):  # a has run epochs 0..2; b jumps straight to epoch 3
        pass
    for _ in a.epoch(1):
        pass
    for (xa, ya), (xb, yb) in zip(a.epoch(3), b.epoch(3)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    resumed = list(b.epoch(3, start_batch=1))
    full = list(a.epoch(3))
    assert len(resumed) == 2
    np.testing.assert_array_equal(resumed[0][0], full[1][0])
    e3, e4 = list(a.epoch(3)), list(a.epoch(4))
    assert not np.array_equal(e3[0][1], e4[0][1]) or not np.array_equal(e3[0][0], e4[0][0])
    other = list(BatchIterator(x, y, 16, shuffle=True, augment=True, seed=12).epoch(3))
    assert not np.array_equal(other[0][0], full[0][0])


def test_batch_iterator_augments_without_shuffling():
    x, y = _dataset(20)
    it = BatchIterator(x, y, 20, augment=True, seed=1)
    (xb, yb), = list(it.epoch(0))
    np.testing.assert_array_equal(yb, y)
    assert not np.allclose(xb, normalize(x))
    with pytest.raises(ValueError):
        BatchIterator(x, y[:5], 4)
    with pytest.raises(ValueError):
        it.epoch(-1)


# -- command-line glue -------------------------------------------------------------------------
def test_arguments_and_load_from_args(tmp_path, cache):
    ds = make_dataset(train_per_class=5, test_per_class=3)
    src = write_tar(tmp_path / "a.tar.gz", image_members(ds))
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--data", str(src), "--subset", "20", "--test-subset", "10",
                              "--cache-dir", str(tmp_path / "c2")])
    d = load_from_args(args, progress=False)
    assert d["x_train"].shape == (20, 32, 32, 3) and d["x_test"].shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(d["y_train"]), [2] * 10)
    np.testing.assert_array_equal(np.bincount(d["y_test"]), [1] * 10)
    assert list((tmp_path / "c2").glob("*.npz"))
    d = load_from_args(parser.parse_args(["--data", str(src), "--cache-dir", str(tmp_path / "c2")]),
                       progress=False)
    assert d["x_train"].shape == (50, 32, 32, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--subset", "0"])


# -- damaged archives, counts, bounded reads, the cache's own digest ----------------------------
def _flipped(blob, offset, n=16):
    out = bytearray(blob)
    for i in range(offset, offset + n):
        out[i] ^= 0xFF
    return bytes(out)


def _refused_by_both_loaders(path, pattern):
    with pytest.raises(DataError, match=pattern):
        load_cifar10(path, progress=False)
    with pytest.raises(DataError, match=pattern):
        load_image_folder(path, limit_per_class=1)


def test_a_damaged_member_header_part_way_through_fails(tmp_path, cache):
    ds = make_dataset(2, 3)
    plain = write_tar(tmp_path / "whole.tar", image_members(ds), mode="w")
    with tarfile.open(plain) as tf:
        victim = [m for m in tf.getmembers() if m.name.startswith("test/")][7]
    # 16 flipped bytes in one header: tarfile alone takes it for the end of the archive
    blob = _flipped(plain.read_bytes(), victim.offset + 100)
    for name, payload in (("bad.tar", blob), ("bad.tar.gz", gzip.compress(blob, mtime=0))):
        path = tmp_path / name
        path.write_bytes(payload)
        _refused_by_both_loaders(path, rf"{name}: truncated or corrupt archive: .*not a tar "
                                       "member header at offset")
    assert not list(cache.glob("*.npz")), "nothing cached"


def test_a_bad_gzip_checksum_fails(tmp_path, cache):
    good = write_tar(tmp_path / "good.tar.gz", image_members(make_dataset(1, 1))).read_bytes()
    for name, at in (("crc.tar.gz", -8), ("size.tar.gz", -4)):  # gzip trailer: CRC32, length
        path = tmp_path / name
        path.write_bytes(_flipped(good, len(good) + at, 1))
        with pytest.raises(DataError, match=rf"{name}: truncated or corrupt archive.*(CRC|length)"):
            load_cifar10(path, progress=False)


def test_an_archive_cut_at_a_member_boundary_fails(tmp_path, cache):
    plain = write_tar(tmp_path / "whole.tar", image_members(make_dataset(1, 1)), mode="w")
    with tarfile.open(plain) as tf:
        last = tf.getmembers()[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain.read_bytes()[:last.offset])  # whole members, no end-of-archive marker
    with pytest.raises(DataError, match=r"cut\.tar: truncated or corrupt archive: .*ends at offset"):
        load_cifar10(cut, progress=False)


def _folder_tar_with_directories(ds):
    """A gzip-compressed image folder laid out as the CIFAR-10 archive the tools find in
    ../shared/data: train/ then test/, a directory member before each folder's JPEGs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        seen = set()
        for name, blob in image_members(ds, "JPEG"):
            for folder in (name.split("/")[0], name.rsplit("/", 1)[0]):
                if folder not in seen:
                    seen.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return gzip.compress(buf.getvalue(), mtime=0)


def test_a_cifar_archive_with_flipped_bytes_in_its_compressed_stream_fails(tmp_path, cache):
    blob = _folder_tar_with_directories(make_dataset(6, 6))
    members = 10 * 6 * 2 + 2 + 2 * 10  # images, split folders, class folders
    # 16 flipped bytes late in the compressed stream: everything after them decompresses to
    # garbage, which tarfile alone takes for the end of the archive, with part of the test
    # split read and the gzip CRC never reached
    bad = _flipped(blob, len(blob) * 62 // 64)
    with tarfile.open(fileobj=io.BytesIO(bad), mode="r|gz") as tf:
        names = [m.name for m in tf]
    assert any(n.startswith("test/") for n in names) and len(names) < members
    path = tmp_path / "cifar10-jpg.tar.gz"
    path.write_bytes(bad)
    _refused_by_both_loaders(path, r"cifar10-jpg\.tar\.gz: truncated or corrupt archive")
    assert not list(cache.glob("*.npz")), "nothing cached"


def test_empty_class_folders_are_refused(tmp_path, cache):
    members = image_members(make_dataset(1, 1))
    root = write_dir(tmp_path / "d", members)
    (root / "test" / "cat" / "0.png").unlink()
    with pytest.raises(DataError, match=r"test/cat: empty class folder"):
        load_image_folder(root)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname=".")
    with pytest.raises(DataError, match=r"a\.tar \(member test/cat/\): empty class folder"):
        load_cifar10(archive, progress=False)


def test_classes_of_unequal_size_are_refused(tmp_path, cache):
    members = [m for m in image_members(make_dataset(2, 2)) if m[0] != "train/dog/1.png"]
    for src in (write_dir(tmp_path / "d", members), write_tar(tmp_path / "a.tar.gz", members)):
        with pytest.raises(DataError, match=r"train split holds \[2, 2, 2, 2, 2, 1, 2, 2, 2, 2\] "
                                            r"images per class"):
            load_cifar10(src, progress=False)
    members = [m for m in image_members(make_dataset(1, 1)) if "/truck/" not in m[0]]
    with pytest.raises(DataError, match=r"\[1, 1, 1, 1, 1, 1, 1, 1, 1, 0\]"):
        load_cifar10(write_dir(tmp_path / "no-trucks", members), progress=False)


def test_python_release_counts_are_checked_against_batches_meta(tmp_path, cache):
    ds = make_dataset(train_per_class=5, test_per_class=1)  # 5 batches of 10, test 10
    members = python_members(ds, prefix="")
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 10}
    members[6] = ("batches.meta", pickle.dumps(meta, protocol=2))
    assert_same(load_cifar10(write_dir(tmp_path / "ok", members), progress=False), ds)
    short = list(members)
    rows = ds["x_train"][10:19].transpose(0, 3, 1, 2).reshape(-1, 3072)
    short[1] = ("data_batch_2", pickle.dumps({b"data": rows, b"labels": ds["y_train"][10:19].tolist()},
                                             protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: holds 9 images, but batches\.meta "
                                        r"declares 10 per batch"):
        load_cifar10(write_dir(tmp_path / "short", short), progress=False)


def test_oversized_members_are_refused_unread(tmp_path, cache):
    members = image_members(make_dataset(1, 1))
    members[0] = ("train/airplane/0.png", members[0][1] + bytes(data.MAX_IMAGE_BYTES))
    with pytest.raises(DataError, match=r"train/airplane/0\.png.*bytes, more than the"):
        load_cifar10(write_tar(tmp_path / "a.tar", members, mode="w"), progress=False)
    with pytest.raises(DataError, match=r"train/airplane/0\.png.*bytes, more than the"):
        load_cifar10(write_dir(tmp_path / "d", members), progress=False)


def test_a_pickle_claiming_gigabytes_costs_nothing(tmp_path, cache):
    import struct
    import tracemalloc
    members = python_members(make_dataset(1, 1), prefix="")
    members[0] = ("data_batch_1", b"\x80\x04\x8e" + struct.pack("<Q", 3 << 30) + b"abc")
    root = write_dir(tmp_path / "r", members)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"data_batch_1: not a readable CIFAR-10 batch pickle"):
            load_cifar10(root, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_a_tampered_cache_is_refused_and_rebuilt(tmp_path, cache, capsys):
    ds = make_dataset(1, 1)
    src = write_tar(tmp_path / "a.tar.gz", image_members(ds))
    load_cifar10(src, progress=False)
    target = data.cache_path(src)
    with np.load(target, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y_train"] = arrays["y_train"][::-1].copy()  # edited labels, a well-formed file
    np.savez(target, **arrays)
    assert_same(load_cifar10(src, progress=False), ds)
    assert "do not match the sha256" in capsys.readouterr().err
    with np.load(target, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["y_train"], ds["y_train"])  # rebuilt


def test_a_directory_source_is_keyed_by_content(tmp_path, cache):
    ds = make_dataset(1, 1)
    root = write_dir(tmp_path / "d", image_members(ds))
    load_cifar10(root, progress=False)
    f = root / "train/airplane/0.png"
    stat = f.stat()
    changed = ds["x_train"].copy()
    changed[0, 0, 0] = 255 - changed[0, 0, 0]  # one pixel: same PNG size is not guaranteed...
    blob = encode(changed[0])
    f.write_bytes(blob)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...but the same mtime is
    np.testing.assert_array_equal(load_cifar10(root, progress=False)["x_train"], changed)


def test_stale_temporaries_in_the_cache_are_removed(tmp_path, cache):
    import time
    cache.mkdir()
    old = cache / ".cifar10-0123.npz.abc12_34.tmp"
    fresh = cache / ".cifar10-4567.npz.def45678.tmp"  # maybe being written right now
    for p in (old, fresh):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    load_cifar10(write_dir(tmp_path / "d", image_members(make_dataset(1, 1))), progress=False)
    assert not old.exists() and fresh.exists()
