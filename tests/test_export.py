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

from minisnn.export import (FORMAT_1, MANIFEST, export_layer, random_layer, read_layer,
                            write_manifest)
from minisnn.romlayer import BinaryConvLayer

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
    assert (entry["name"], entry["c_in"], entry["c_out"], entry["kind"], entry["tau"]) == \
        ("conv1", 5, 7, "subbit", 3)
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
        kind="bnn", threshold=np.array([-2**31, -1, 0, 2**31 - 1], np.int32), flip=np.array([1, 0, 1, 0], bool))
    entry = _export(tmp_path, layer)["layers"][0]
    assert "codebook" not in entry["files"] and "idx" not in entry["files"]
    assert entry["kind"] == "bnn" and entry["tau"] is None
    _assert_same_layer(read_layer(tmp_path, "bnn"), layer)


def test_a_tau_9_layer_stays_subbit(tmp_path):
    layer = random_layer(np.random.default_rng(4), 3, 2, 9)  # all 512 kernels in the codebook
    entry = _export(tmp_path, layer)["layers"][0]
    assert entry["kind"] == "subbit" and "codebook" in entry["files"]
    _assert_same_layer(read_layer(tmp_path, "random"), layer)


@pytest.mark.parametrize("tau", [None, 3])
def test_format_1_manifests_without_a_kind_are_still_read(tmp_path, tau):
    layer = random_layer(np.random.default_rng(5), 3, 4, tau or 2)
    if tau is None:
        layer = dataclasses.replace(layer, kind="bnn", tau=None, codebook=None, idx=None)
    manifest = _export(tmp_path, layer)
    manifest["format"] = FORMAT_1  # as minisnn-rom-1 wrote it: a null tau is a bnn layer
    del manifest["layers"][0]["kind"]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    back = read_layer(tmp_path, "random")
    assert back.kind == layer.kind
    _assert_same_layer(back, layer)


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


def test_an_export_that_fails_part_way_leaves_whole_files_only(tmp_path, monkeypatch):
    """ROM files and the manifest are replaced atomically: when a write fails (a full
    disk), every file is the previous export's or the new one's, whole, the manifest
    is the previous one (so the reader refuses the mix by its hashes), and no
    temporary file is left behind."""
    old = random_layer(np.random.default_rng(1), 4, 5, 4, 4, 4, 2, name="conv1")
    _export(tmp_path, old)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    new = random_layer(np.random.default_rng(2), 4, 5, 4, 4, 4, 2, name="conv1")
    import minisnn.export as export
    real, calls = export._hex_text, []

    def full_disk(words, digits):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(words, digits)

    monkeypatch.setattr(export, "_hex_text", full_disk)
    with pytest.raises(OSError):
        _export(tmp_path, new)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(after) == set(before)  # no temporary file left
    changed = [name for name in before if after[name] != before[name]]
    assert len(changed) == 2 and MANIFEST not in changed  # the two files written whole
    with pytest.raises(ValueError, match="sha256"):
        read_layer(tmp_path, "conv1")
    monkeypatch.undo()
    _export(tmp_path / "new", new)
    for name in changed:  # each replaced file is the new export's, complete
        assert after[name] == (tmp_path / "new" / name).read_bytes()


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


# -- hostile ROM directories: words, manifests, paths, NaN --------------------------------------
def _forge(tmp_path, manifest, role, text):
    """Replace a ROM file and give the manifest its sha256: a consistent forgery."""
    spec = manifest["layers"][0]["files"][role]
    path = tmp_path / spec["file"]
    path.write_text(text)
    spec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("word", ["0x1f", "-1", "+1f", "1_f", "x", "3f", "1f 1f", "1", "01f",
                                  "1f\r", ""])
def test_words_readmemh_would_misread_are_refused_naming_file_and_line(tmp_path, word):
    layer = random_layer(np.random.default_rng(1), 4, 4, 5)  # tau 5: idx words are 2 hex digits
    manifest = _export(tmp_path, layer)
    lines = (tmp_path / "random.idx.hex").read_text().splitlines()
    lines[3] = word
    _forge(tmp_path, manifest, "idx", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"random\.idx\.hex, line 4: .*5-bit"):
        read_layer(tmp_path, "random")


def test_a_rom_file_must_end_its_last_line(tmp_path):
    manifest = _export(tmp_path, random_layer(np.random.default_rng(1), 2, 2, 3))
    text = (tmp_path / "random.kernel.hex").read_text()
    _forge(tmp_path, manifest, "kernel", text.rstrip("\n"))
    with pytest.raises(ValueError, match=r"random\.kernel\.hex, line 4: no newline"):
        read_layer(tmp_path, "random")


def test_nan_scale_or_shift_bit_patterns_are_refused(tmp_path):
    for role in ("scale", "shift"):
        manifest = _export(tmp_path, random_layer(np.random.default_rng(1), 3, 5, 2))
        lines = (tmp_path / f"random.{role}.hex").read_text().splitlines()
        lines[2] = "7fc00001"
        _forge(tmp_path, manifest, role, "\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=rf"random\.{role}\.hex, line 3: 7fc00001 is a "
                                             r"float32 NaN"):
            read_layer(tmp_path, "random")
    layer = random_layer(np.random.default_rng(1), 3, 5, 2)
    layer.scale[1] = np.nan
    with pytest.raises(ValueError, match=r"layer random: scale holds NaN"):
        export_layer(layer, tmp_path / "out")


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("format"), r"format is None, expected 'minisnn-rom-2' \(or the older "
                                r"'minisnn-rom-1'\)"),
    (lambda m: m.update(format="minisnn-rom-3"), r"format is 'minisnn-rom-3', expected"),
    (lambda m: m.update(layers={}), r"layers must be a list of layer objects"),
    (lambda m: m["layers"].insert(0, 7), r"layers\[0\] must be an object, found int"),
    (lambda m: m["layers"][0].pop("c_in"), r"missing field 'c_in'"),
    (lambda m: m["layers"][0].update(c_in="3"), r"c_in must be an integer in 1\.\.65536, found '3'"),
    (lambda m: m["layers"][0].update(c_out=True), r"c_out must be an integer in 1\.\.65536, found True"),
    (lambda m: m["layers"][0].update(stride=3), r"stride must be 1 or 2, found 3"),
    (lambda m: m["layers"][0].update(tau=12), r"tau must be null or an integer in 1\.\.9, found 12"),
    (lambda m: m["layers"][0].pop("kind"), r"missing field 'kind'"),
    (lambda m: m["layers"][0].update(kind="binary"), r"kind must be one of \('bnn', 'subbit'\), "
                                                     r"found 'binary'"),
    (lambda m: m["layers"][0].update(kind="bnn"), r"a bnn layer has no tau, found 3"),
    (lambda m: m["layers"][0].update(tau=None), r"a subbit layer needs tau, an integer in "
                                                r"1\.\.9, found None"),
    (lambda m: m["layers"][0].update(out_height=99), r"out_height is 99, expected 11"),
    (lambda m: m["layers"][0].update(files=[]), r"files must be an object"),
    (lambda m: m["layers"][0]["files"].pop("kernel"), r"files lacks 'kernel'"),
    (lambda m: m["layers"][0]["files"].pop("idx"), r"files lacks 'idx'"),
    (lambda m: m["layers"][0]["files"].update(bias={}), r"unknown ROM role 'bias'"),
    (lambda m: m["layers"][0]["files"]["idx"].pop("sha256"), r"files\.idx: missing field 'sha256'"),
    (lambda m: m["layers"][0]["files"]["idx"].update(width=7), r"files\.idx\.width is 7, expected 3"),
    (lambda m: m["layers"][0]["files"]["idx"].update(depth=10**12),
     r"files\.idx\.depth is 1000000000000, expected 12"),
    (lambda m: m["layers"][0]["files"]["idx"].update(address="o"),
     r"files\.idx\.address is 'o', expected 'i \* c_out \+ o'"),
    (lambda m: m["layers"][0]["files"]["idx"].update(sha256=5), r"files\.idx\.sha256 must be 64 "
                                                                 r"hex digits, found 5"),
    (lambda m: m["layers"][0]["files"]["idx"].update(file=["x"]), r"files\.idx\.file must be a file "
                                                                  r"name, found \['x'\]"),
])
def test_malformed_manifests_get_a_message_naming_the_field(tmp_path, edit, message):
    manifest = _export(tmp_path, random_layer(np.random.default_rng(0), 3, 4, 3, height=11))
    edit(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest \S*manifest\.json: (layer 'random': )?" + message):
        read_layer(tmp_path, "random")


def test_manifest_json_that_is_not_plain_data_is_refused(tmp_path):
    _export(tmp_path, random_layer(np.random.default_rng(0), 3, 4, 3))
    for text, message in (("[" * 5000 + "]" * 5000, "nests deeper"), ('{"format": NaN}', "NaN"),
                          ("\xff", "UTF-8")):
        (tmp_path / MANIFEST).write_bytes(text.encode("latin1"))
        with pytest.raises(ValueError, match=rf"manifest\.json.*{message}"):
            read_layer(tmp_path, "random")


@pytest.mark.parametrize("target", ["../outside.hex", "ABSOLUTE", "sub/random.idx.hex",
                                    "link.hex", "/dev/zero", ".", ""])
def test_rom_paths_are_confined_to_the_rom_directory(tmp_path, target):
    rom = tmp_path / "rom"
    manifest = _export(rom, random_layer(np.random.default_rng(0), 3, 4, 3))
    outside = tmp_path / "outside.hex"
    outside.write_bytes((rom / "random.idx.hex").read_bytes())  # the right content, wrong place
    (rom / "sub").mkdir()
    (rom / "sub" / "random.idx.hex").write_bytes(outside.read_bytes())
    os.symlink(outside, rom / "link.hex")
    manifest["layers"][0]["files"]["idx"]["file"] = str(outside) if target == "ABSOLUTE" else target
    (rom / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"files\.idx\.file .* a file in the ROM directory"):
        read_layer(rom, "random")


def test_cli_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    from minisnn import checkpoint, models
    model = models.resnet20("bnn", "binary", seed=0)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays["model.layer2.1.bn1.running_var"][3] = np.inf
    checkpoint.save_checkpoint(tmp_path / "inf.npz", arrays, {"model": model.config})
    proc = _cli("--rom", str(tmp_path / "inf.npz"), "--out", str(tmp_path / "rom"))
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error:") and "holds NaN or infinite values" in proc.stderr
    assert not (tmp_path / "rom").exists()
