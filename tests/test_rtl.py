"""Verilog engines (rtl/conv_layer.v) co-simulated against the golden model."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisnn import export, rtlmodel, rtlsim
from minisnn.export import random_layer
from minisnn.rtlmodel import EngineConfig

# vvp runs take a second or so each: a bounded number of examples per test
cosim = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw, engine, stalls=False, max_c=9, max_hw=6):
    """A random layer, images of activation codes and a valid engine configuration."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    act_bits = draw(st.sampled_from(rtlmodel.ACT_BITS))
    c_in, c_out = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    tau = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    layer = random_layer(rng, c_in, c_out, tau, h, w, draw(st.sampled_from([1, 2])),
                         thresholds=draw(st.booleans()))
    if layer.threshold is not None:
        layer = rtlmodel.with_random_thresholds(layer, rng, act_bits)
    lanes = draw(st.integers(1, 6))
    dot9 = 2 ** draw(st.integers(0, tau)) if engine == "snn" else lanes * draw(st.integers(1, 3))
    out = draw(st.sampled_from(rtlmodel.OUTPUTS)) if layer.threshold is not None else "sums"
    cfg = EngineConfig(engine, lanes, dot9, act_bits, draw(st.sampled_from(rtlmodel.TABLES)), out)
    codes = rtlmodel.random_codes(rng, (draw(st.integers(1, 2)), c_in, h, w), act_bits)
    stall = (draw(st.sampled_from([10, 50, 80])), draw(st.sampled_from([0, 10, 50, 80]))) if stalls else (0, 0)
    return layer, codes, cfg, stall


@pytest.mark.parametrize("engine", rtlmodel.ENGINES)
@cosim
@given(data=st.data())
def test_rtl_equals_golden_and_cycle_model(engine, data):
    layer, codes, cfg, _ = data.draw(cases(engine))
    # check_layer: sums (or bits) equal the golden model's for every image,
    # tlast ends every image, no x/z, and the cycles equal cycle_model
    result = rtlsim.check_layer(layer, codes, cfg)
    assert result.cycles == rtlmodel.cycle_model(layer.c_in, layer.c_out, layer.height, layer.width,
                                                 layer.stride, cfg, layer.tau, len(codes))


@pytest.mark.parametrize("engine", rtlmodel.ENGINES)
@cosim
@given(data=st.data())
def test_random_valid_ready_stalls_keep_outputs(engine, data):
    layer, codes, cfg, (stall_in, stall_out) = data.draw(cases(engine, stalls=True))
    # the testbench also counts beats that change or vanish while tready is low
    result = rtlsim.check_layer(layer, codes, cfg, stall_in, stall_out, seed=data.draw(st.integers(1, 10**6)))
    ideal = rtlmodel.cycle_model(layer.c_in, layer.c_out, layer.height, layer.width, layer.stride, cfg,
                                 layer.tau, len(codes))
    assert result.cycles >= ideal


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_two_layers_chain_with_stalls(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    act_bits = data.draw(st.sampled_from(rtlmodel.ACT_BITS))
    c_in, mid, c_out = (data.draw(st.integers(1, 8)) for _ in range(3))
    h, w = data.draw(st.integers(2, 6)), data.draw(st.integers(2, 6))
    first = random_layer(rng, c_in, mid, 3, h, w, data.draw(st.sampled_from([1, 2])), name="first")
    first = rtlmodel.with_random_thresholds(first, rng, act_bits)
    second = random_layer(rng, mid, c_out, 2, first.out_height, first.out_width, 1, name="second",
                          thresholds=data.draw(st.booleans()))
    engines = data.draw(st.lists(st.sampled_from(rtlmodel.ENGINES), min_size=2, max_size=2))
    cfg1 = EngineConfig(engines[0], 2, 2, act_bits, "ram", "bits")
    cfg2 = EngineConfig(engines[1], 3, 2 if engines[1] == "snn" else 3, 1, "reg", "sums")
    codes = rtlmodel.random_codes(rng, (2, c_in, h, w), act_bits)
    stall = data.draw(st.sampled_from([0, 30, 70]))
    rtlsim.check_chain(first, cfg1, second, cfg2, codes, stall, stall, seed=data.draw(st.integers(1, 10**6)))


def test_engines_agree_on_one_layer():
    rng = np.random.default_rng(7)
    layer = random_layer(rng, 9, 11, 3, 7, 6, 2)
    codes = rtlmodel.random_codes(rng, (9, 7, 6), 2)
    results = [rtlsim.check_layer(layer, codes, cfg).sums for cfg in (
        EngineConfig("bnn", 3, 6, 2), EngineConfig("snn", 5, 4, 2, "ram"), EngineConfig("dec", 4, 4, 2))]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_dot9_phase_overlaps_lane_phase():
    # 2^4 / 4 Dot9 units = 4 steps and 16 / 4 lanes = 4 groups per channel: with the
    # double buffer a position of 16 channels takes 16 * 4 stage cycles, not 16 * (4 + 4)
    rng = np.random.default_rng(5)
    layer = random_layer(rng, 16, 16, 4, 1, 2, 1)
    codes = rtlmodel.random_codes(rng, (16, 1, 2), 1)
    cycles = rtlsim.check_layer(layer, codes, EngineConfig("snn", 4, 4)).cycles
    # input: 2 pixels of 16 cycles; fill stage 4, 31 stages of 4, drain 4; 6 cycles to the output
    assert cycles == (2 * 16 + 1) + 4 + 31 * 4 + 4 + 5 + 1


def test_check_layer_reports_first_mismatch(monkeypatch):
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 3, 4, 2, 4, 4, 1, thresholds=False)
    codes = rtlmodel.random_codes(rng, (3, 4, 4), 1)
    good = rtlsim.golden(layer, codes, 1)[0]
    bad = good.copy()
    bad[0, 2, 1, 3] += 2
    monkeypatch.setattr(rtlsim, "simulate", lambda *a, **k: rtlsim.SimResult(sums=bad, bits=None, cycles=0))
    with pytest.raises(ValueError, match=r"image 0 at output channel 2, position \(y=1, x=3\): expected -?\d+"):
        rtlsim.check_layer(layer, codes, EngineConfig("snn", 2, 2))


def test_output_reader_rejects_xz_missing_tlast_and_testbench_errors():
    ok = ["B 0 0f", "B 1 10", "C 5", "X 0", "V 0", "E 0", "T 0"]
    beats, cycles = rtlsim._read_beats("\n".join(ok), "here", 1)
    assert beats == [[15, 16]] and cycles == 5
    with pytest.raises(ValueError, match="x/z on output beat 1"):
        rtlsim._read_beats("\n".join(["B 0 0f", "B 1 1x"] + ok[2:]), "here", 1)
    with pytest.raises(ValueError, match="expected 1 images ending in tlast, found 0"):
        rtlsim._read_beats("\n".join(["B 0 0f"] + ok[2:]), "here", 1)
    for key, what in (("X", "x/z"), ("V", "changed while stalled"), ("E", "tlast errors")):
        lines = [f"{key} 2" if line.startswith(key) else line for line in ok]
        with pytest.raises(ValueError, match=what):
            rtlsim._read_beats("\n".join(lines), "here", 1)
    with pytest.raises(ValueError, match="ran out of cycles"):
        rtlsim._read_beats("\n".join(ok[:-1] + ["T 1"]), "here", 1)


def test_input_tlast_at_the_wrong_beat_is_flagged():
    rng = np.random.default_rng(1)
    layer = random_layer(rng, 2, 2, 1, 3, 3, 1)
    codes = rtlmodel.random_codes(rng, (2, 2, 3, 3), 1)
    with pytest.raises(ValueError, match="input tlast errors"):
        rtlsim.simulate(layer, codes, EngineConfig("bnn", 2, 2), tlast_every=8)


# --------------------------------------------------------------- the ROM files on disk

def _export(root, layer):
    export.write_manifest(root, [export.export_layer(layer, root)])
    return root


def _forge(root, role, line, word):
    """Replace one word of a ROM file and give the manifest its sha256: a consistent forgery."""
    manifest = json.loads((root / export.MANIFEST).read_text())
    spec = manifest["layers"][0]["files"][role]
    path = root / spec["file"]
    lines = path.read_text().splitlines()
    lines[line] = word
    path.write_text("\n".join(lines) + "\n")
    spec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / export.MANIFEST).write_text(json.dumps(manifest))


def test_the_engine_runs_the_rom_files_not_the_record_they_came_from(tmp_path):
    rng = np.random.default_rng(8)
    layer = random_layer(rng, 3, 4, 2, 4, 4, 1, thresholds=False)
    layer = dataclasses.replace(layer, kind="bnn", tau=None, codebook=None, idx=None)
    codes = rtlmodel.random_codes(rng, (3, 4, 4), 1)
    cfg = EngineConfig("bnn", 2, 2)
    before = rtlsim.check_rom(_export(tmp_path, layer), "random", codes, cfg).sums
    np.testing.assert_array_equal(before, rtlsim.golden(layer, codes, 1)[0])
    # kernel word 5 is input channel 1 of output channel 1 (address i * c_out + o): all
    # nine taps flipped, so that channel's sums change wherever input 1 contributes
    word = int((tmp_path / "random.kernel.hex").read_text().split()[5], 16) ^ 0x1FF
    _forge(tmp_path, "kernel", 5, f"{word:03x}")
    forged = export.read_layer(tmp_path, "random")
    after = rtlsim.check_rom(tmp_path, "random", codes, cfg).sums
    np.testing.assert_array_equal(after, rtlsim.golden(forged, codes, 1)[0])
    assert not np.array_equal(after[:, 1], before[:, 1])
    np.testing.assert_array_equal(np.delete(after, 1, axis=1), np.delete(before, 1, axis=1))


@pytest.mark.parametrize("fault,message", [
    ("hash", r"random\.idx\.hex: sha256 \w+ differs from the manifest's"),
    ("word", r"random\.idx\.hex, line 2: '0x1' is not a 2-bit \$readmemh word"),
])
def test_a_damaged_rom_file_is_refused_before_anything_runs(tmp_path, monkeypatch, fault, message):
    rng = np.random.default_rng(9)
    _export(tmp_path, random_layer(rng, 2, 3, 2, 3, 3, 1))
    if fault == "hash":
        path = tmp_path / "random.idx.hex"
        words = path.read_text().split()
        words[0] = "%x" % ((int(words[0], 16) + 1) % 4)  # a valid index, not the exported one
        path.write_text("\n".join(words) + "\n")
    else:
        _forge(tmp_path, "idx", 1, "0x1")
    monkeypatch.setattr(rtlsim, "_simulate", lambda *a, **k: pytest.fail("the simulation ran"))
    codes = rtlmodel.random_codes(rng, (2, 3, 3), 1)
    for run in (rtlsim.check_rom, rtlsim.simulate_rom):
        with pytest.raises(ValueError, match=message):
            run(tmp_path, "random", codes, EngineConfig("snn", 2, 2))


def test_records_reach_the_engine_through_export_and_back(monkeypatch):
    rng = np.random.default_rng(10)
    layer = random_layer(rng, 2, 2, 1, 3, 3, 1)
    codes = rtlmodel.random_codes(rng, (2, 3, 3), 1)
    read = []
    real = export.read_layer
    monkeypatch.setattr(export, "read_layer", lambda d, n: read.append((sorted(os.listdir(d)), n))
                        or real(d, n))
    rtlsim.check_layer(layer, codes, EngineConfig("bnn", 2, 2))
    assert read == [(sorted([export.MANIFEST] + [f"random.{role}.hex" for role in (
        "codebook", "flip", "idx", "kernel", "scale", "shift", "threshold")]), "random")]
    # the engine never uses scale, but export refuses a NaN there, so the simulation does too
    layer.scale[1] = np.nan
    with pytest.raises(ValueError, match="layer random: scale holds NaN at output channel 1"):
        rtlsim.check_layer(layer, codes, EngineConfig("bnn", 2, 2))


def test_a_model_exported_by_the_cli_runs_on_the_engine_as_the_integer_engine(tmp_path):
    """python -m minisnn.export --rom writes the ROMs of a sub-bit W/1A ResNet-20; one of
    its layers, read from them, gives the integer engine's sums on what an image makes
    of its input."""
    from minisnn import checkpoint, models
    from minisnn import compile as C
    model = models.resnet20("snn", "binary", tau=4, seed=0).eval()
    path = tmp_path / "m.npz"
    checkpoint.save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                               {"model": model.config})
    proc = subprocess.run([sys.executable, "-m", "minisnn.export", "--rom", str(path), "--out",
                           str(tmp_path / "rom")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "layer3.0.conv2: 64x64 subbit tau=4 -> " in proc.stdout
    name = "layer3.0.conv2"
    conv = next(c for b in C.compile_model(model).blocks for c in b.convs if c.layer.name == name)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    inp, _ = C.capture(model, name, x)
    codes = rtlmodel.codes_from_signs(np.where(inp[0] >= 0, 1, -1))  # the engine's sign
    for cfg in (EngineConfig("snn", 16, 4), EngineConfig("dec", 8, 8)):
        sim = rtlsim.check_rom(tmp_path / "rom", name, codes, cfg)
        np.testing.assert_array_equal(sim.sums, conv.sums(inp))


# --------------------------------------------------------------- trained model

def _trained_block(trained, quant, name):
    from minisnn import compile as C
    from minisnn.checkpoint import load_model
    model = load_model(trained[quant])
    convs = {conv.layer.name: conv for block in C.compile_model(model).blocks for conv in block.convs}
    return model, convs[f"{name}.conv1"], convs[f"{name}.conv2"]


@pytest.mark.parametrize("quant,engines", [("snn", ("snn", "dec")), ("bnn", ("bnn", "bnn"))])
def test_trained_layers_chain_on_a_real_image(trained, cifar, quant, engines):
    """layer2.0.conv1 (16->32, stride 2) with its batch norm folded into thresholds,
    streamed into layer2.0.conv2 (32->32), of a briefly trained ResNet-20, on what
    the first CIFAR-10 test image makes of them, with random stalls: the RTL equals
    the integer engine (compile) bit for bit."""
    from minisnn import compile as C
    from minisnn import data as D

    model, conv1, conv2 = _trained_block(trained, quant, "layer2.0")
    x, _ = C.capture(model, "layer2.0.conv1", D.normalize(cifar["x_test"][:1]))
    first, second = conv1.with_thresholds(), conv2.layer
    assert (first.c_in, first.c_out, first.stride, second.c_out) == (16, 32, 2, 32)
    codes = (x[0] >= 0).astype(np.uint8)  # the engine's sign: +1 for x >= 0
    cfg1 = EngineConfig(engines[0], 16, 16, 1, "ram", "bits")
    cfg2 = EngineConfig(engines[1], 16, 16, 1, "reg", "sums")
    result = rtlsim.check_chain(first, cfg1, second, cfg2, codes, 20, 20, seed=3)
    bits = conv1.sign_bits(x)
    expected = conv2.sums(2 * bits.astype(np.float32) - 1)
    np.testing.assert_array_equal(result.sums, expected)


# --------------------------------------------------------------- lint / synth / style

SAMPLE_PARAMS = [
    dict(C_IN=5, C_OUT=7, TAU=3, H=6, W=5, STRIDE=2, LANES=3, A=2, TABLE_RAM=1, HAS_THRESH=1, OUT_SUMS=0),
    dict(C_IN=1, C_OUT=1, TAU=1, H=1, W=1, STRIDE=1, LANES=1, A=1, TABLE_RAM=0, HAS_THRESH=0, OUT_SUMS=1),
    dict(C_IN=16, C_OUT=16, TAU=5, H=8, W=8, STRIDE=1, LANES=8, A=8, TABLE_RAM=1, HAS_THRESH=1, OUT_SUMS=1),
]


def _dot9(engine, params):
    return 2 if engine == "snn" else 2 * params["LANES"]


@pytest.mark.parametrize("engine", rtlmodel.ENGINES)
@pytest.mark.parametrize("params", SAMPLE_PARAMS)
def test_verilator_lint_clean(engine, params):
    verilator = rtlsim.require_tool("verilator")
    cmd = [verilator, "--lint-only", "-Wall", "--top-module", "conv_layer",
           f"-GENGINE={rtlmodel.ENGINES.index(engine)}", f"-GDOT9={_dot9(engine, params)}"]
    cmd += [f"-G{k}={v}" for k, v in params.items()] + rtlsim.sources()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize("engine", rtlmodel.ENGINES)
def test_iverilog_2005_compiles_without_warnings(engine):
    # build_testbench fails on any iverilog warning
    params = dict(SAMPLE_PARAMS[0], ENGINE=rtlmodel.ENGINES.index(engine), DOT9=_dot9(engine, SAMPLE_PARAMS[0]))
    assert os.path.getsize(rtlsim.build_testbench(params)) > 0


@pytest.mark.parametrize("bad,message", [
    (dict(ENGINE=0, LANES=3, DOT9=4), "DOT9 = 4 must be a multiple of LANES = 3"),
    (dict(ENGINE=1, TAU=2, DOT9=3), "DOT9 = 3 must be a power of two"),
    (dict(ENGINE=1, STRIDE=3), "STRIDE must be 1 or 2"),
])
def test_parameter_checks_stop_the_simulation(bad, message, tmp_path):
    params = dict(ENGINE=1, C_IN=2, C_OUT=2, H=2, W=2, STRIDE=1, A=1, TAU=2, LANES=2, DOT9=2)
    params.update(bad)
    binary = rtlsim.build_testbench(params)
    proc = subprocess.run([rtlsim.require_tool("vvp"), "-n", binary], cwd=tmp_path, capture_output=True, text=True)
    assert "ERROR" in proc.stdout and message in proc.stdout, proc.stdout


def test_require_tool_names_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "")
    for tool, package in [("vvp", "iverilog"), ("verilator", "verilator"), ("yosys", "yosys"),
                          ("nextpnr-ice40", "nextpnr-ice40"), ("icepack", "fpga-icestorm")]:
        with pytest.raises(rtlsim.ToolMissing, match=f"apt-get install -y {package} .*{rtlsim.INSTALL}"):
            rtlsim.require_tool(tool)


def _verilog_files():
    found = []
    for root in (rtlsim.RTL_DIR, os.path.join(rtlsim.RTL_DIR, "tb")):
        found += [os.path.join(root, f) for f in sorted(os.listdir(root)) if f.endswith(".v")]
    return found


def test_source_list_names_every_synthesizable_module():
    listed = sorted(os.path.basename(p) for p in rtlsim.sources())
    on_disk = sorted(f for f in os.listdir(rtlsim.RTL_DIR) if f.endswith(".v"))
    assert listed == on_disk
    assert os.path.basename(rtlsim.sources()[0]) == "conv_layer.v"


def test_rtl_sources_follow_house_style():
    for path in _verilog_files():
        name = os.path.basename(path)
        with open(path) as f:
            text = f.read()
        lines = [line for line in text.splitlines() if line.strip()]
        assert "`default_nettype none" in lines[:3], name
        assert lines[-1] == "`default_nettype wire", name
        modules = re.findall(r"^module\s+(\w+)", text, re.M)
        assert modules == [name[:-2]], (name, modules)  # one module per file, named as the file
        params = re.findall(r"^\s*parameter\s+(\w+)", text, re.M)
        assert all(p == p.upper() for p in params), (name, params)
        if "/tb/" in path:
            continue
        assert not re.search(r"\$(fwrite|fopen|display|monitor)", text), name
        all_lines = text.splitlines()
        for i, line in enumerate(all_lines):
            if re.match(r"^\s*parameter\s+\w+", line):  # every parameter has a comment above it
                assert all_lines[i - 1].strip().startswith("//"), (name, line)


@pytest.mark.parametrize("engine", rtlmodel.ENGINES)
def test_yosys_maps_every_engine_with_its_memories(engine):
    from minisnn import rtlsynth
    layer = random_layer(np.random.default_rng(2), 16, 6, 2, 6, 8, 1)
    cfg = EngineConfig(engine, 2, 2 if engine == "snn" else 4, 1, "ram", "bits")
    ice40 = rtlsynth.synth(layer, cfg, "ice40")
    # the line buffer's three banks are block RAM; nothing is left unmapped
    assert ice40["bram"] >= 3 and ice40["lut"] > 0 and ice40["ff"] > 0
    assert not any(t.startswith("$") for t in ice40["by_type"]), ice40["by_type"]
    xilinx = rtlsynth.synth(layer, cfg, "xilinx")
    # small memories become LUT-RAM on LUT6 devices (the sub-bit tables among them)
    assert xilinx["lutram"] > 0 and xilinx["lut"] > 0
    assert not any(t.startswith("$") for t in xilinx["by_type"]), xilinx["by_type"]


def test_nextpnr_places_a_small_engine_on_an_up5k(tmp_path):
    from minisnn import rtlsynth
    layer = random_layer(np.random.default_rng(4), 8, 8, 3, 6, 6, 1)
    netlist = tmp_path / "netlist.json"
    stats = rtlsynth.synth(layer, EngineConfig("snn", 4, 2, 1, "reg", "bits"), "ice40", netlist=netlist)
    assert 0 < stats["lut"] <= rtlsynth.DEVICES["up5k"][2]
    placed = rtlsynth.place(netlist, "up5k")
    assert placed["device"] == "up5k" and 5 < placed["fmax_mhz"] < 500
