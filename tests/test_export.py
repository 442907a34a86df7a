"""ROM export: files, manifest, read-back and the CLI."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.compile import BinaryConvLayer
from minisnn.export import MANIFEST, export_layer, random_layer, read_layer, write_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export(tmp_path, layer):
    write_manifest(tmp_path, [export_layer(layer, tmp_path)])
    with open(tmp_path / MANIFEST) as f:
        return json.load(f)


def _assert_same_layer(a, b):
    for field in dataclasses.fields(BinaryConvLayer):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


def test_manifest_shapes_widths_and_hashes(tmp_path):
    layer = random_layer(np.random.default_rng(0), 5, 7, 3, 6, 4, 2, name="conv1")
    entry = _export(tmp_path, layer)["layers"][0]
    assert (entry["name"], entry["c_in"], entry["c_out"], entry["tau"]) == ("conv1", 5, 7, 3)
    assert (entry["out_height"], entry["out_width"]) == (3, 2)
    expect = {"kernel": (9, 35), "codebook": (9, 8), "idx": (3, 35), "threshold": (32, 7),
              "flip": (1, 7), "scale": (32, 7), "shift": (32, 7)}
    assert {r: (s["width"], s["depth"]) for r, s in entry["files"].items()} == expect
    for spec in entry["files"].values():
        with open(tmp_path / spec["file"], "rb") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == spec["sha256"]
        assert len(data.decode().splitlines()) == spec["depth"]
    # address i * c_out + o: word 1 of the index ROM is idx[o=1, i=0]
    assert entry["files"]["idx"]["address"] == "i * c_out + o"
    with open(tmp_path / entry["files"]["idx"]["file"]) as f:
        assert int(f.read().split()[1], 16) == layer.idx[1, 0]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c_in=st.integers(1, 12), c_out=st.integers(1, 12),
       tau=st.integers(1, 9), thresholds=st.booleans())
def test_round_trip(tmp_path_factory, seed, c_in, c_out, tau, thresholds):
    tmp = tmp_path_factory.mktemp("rom")
    layer = random_layer(np.random.default_rng(seed), c_in, c_out, tau, thresholds=thresholds)
    _export(tmp, layer)
    _assert_same_layer(read_layer(tmp, "random"), layer)


def test_round_trip_plain_bnn_layer(tmp_path):
    rng = np.random.default_rng(2)
    layer = BinaryConvLayer(
        name="bnn", c_in=3, c_out=4, height=5, width=5, stride=1,
        kernel_codes=rng.integers(0, 512, (4, 3)).astype(np.uint16),
        scale=np.full(4, 0.5, np.float32), shift=np.array([-1.5, 0, 2, np.inf], np.float32),
        threshold=np.array([-2**31, -1, 0, 2**31 - 1], np.int32), flip=np.array([1, 0, 1, 0], bool))
    entry = _export(tmp_path, layer)["layers"][0]
    assert "codebook" not in entry["files"] and "idx" not in entry["files"] and entry["tau"] is None
    _assert_same_layer(read_layer(tmp_path, "bnn"), layer)


def test_corrupted_rom_names_the_file(tmp_path):
    layer = random_layer(np.random.default_rng(1), 4, 4, 4)
    _export(tmp_path, layer)
    path = tmp_path / "random.idx.hex"
    words = path.read_text().split()
    words[3] = "%x" % ((int(words[3], 16) + 1) % 16)
    path.write_text("\n".join(words) + "\n")
    with pytest.raises(ValueError, match=r"random\.idx\.hex.*sha256"):
        read_layer(tmp_path, "random")


def test_too_wide_word_names_the_file_even_with_a_matching_hash(tmp_path):
    layer = random_layer(np.random.default_rng(1), 4, 4, 2)
    manifest = _export(tmp_path, layer)
    path = tmp_path / "random.idx.hex"
    words = path.read_text().split()
    words[0] = "7"  # tau = 2: at most 3
    path.write_text("\n".join(words) + "\n")
    manifest["layers"][0]["files"]["idx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"random\.idx\.hex.*2-bit width"):
        read_layer(tmp_path, "random")


def test_invalid_layer_is_rejected(tmp_path):
    layer = random_layer(np.random.default_rng(1), 2, 2, 2)
    layer.codebook[1] = layer.codebook[0]
    with pytest.raises(ValueError, match="layer random: codebook must hold 4 distinct codes"):
        export_layer(layer, tmp_path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "minisnn.export", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_help():
    proc = _cli("--help")
    assert proc.returncode == 0 and "--rom" in proc.stdout and "--random" in proc.stdout


def test_cli_random_is_seeded(tmp_path):
    out = [tmp_path / "a", tmp_path / "b"]
    for d in out:
        proc = _cli("--random", "--tau", "3", "--cin", "4", "--cout", "6", "--height", "5",
                    "--width", "3", "--stride", "2", "--seed", "11", "--out", str(d))
        assert proc.returncode == 0, proc.stderr
    layer = read_layer(out[0], "random")
    assert (layer.tau, layer.c_in, layer.c_out, layer.height, layer.width, layer.stride) == (3, 4, 6, 5, 3, 2)
    _assert_same_layer(read_layer(out[1], "random"), layer)


def test_cli_bad_checkpoint_exits_2_without_traceback(tmp_path):
    proc = _cli("--rom", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "rom"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
