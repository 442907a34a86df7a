"""Verilog engines (rtl/*.v) co-simulated against the popcount golden model."""

import os
import re
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisnn import rtlsim
from minisnn.export import random_layer


def _case(seed, c_in, c_out, tau, h, w, stride, thresholds):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, c_in, c_out, tau, h, w, stride, thresholds=thresholds)
    activations = rng.choice(np.array([-1, 1], np.int8), size=(c_in, h, w))
    return layer, activations


layers = st.builds(
    _case,
    seed=st.integers(0, 2**32 - 1), c_in=st.integers(1, 16), c_out=st.integers(1, 16),
    tau=st.integers(1, 6), h=st.integers(1, 8), w=st.integers(1, 8), stride=st.sampled_from([1, 2]),
    thresholds=st.booleans(),
)
# vvp runs take a second or so each: a bounded number of examples per engine
cosim = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("engine", rtlsim.ENGINES)
@cosim
@given(case=layers, lanes=st.integers(1, 8), p_dot=st.integers(1, 16))
def test_rtl_equals_golden_and_cycle_model(engine, case, lanes, p_dot):
    layer, a = case
    # check_layer: sums and bits equal popcount's; two back-to-back starts give
    # the same outputs, done pulses once per start, no x/z after reset
    result = rtlsim.check_layer(layer, a, engine, lanes=lanes, p_dot=p_dot, runs=2)
    assert (result.bits is None) == (layer.threshold is None)
    assert result.cycles == rtlsim.cycle_model(engine, layer.c_in, layer.c_out, layer.height, layer.width,
                                               layer.stride, layer.tau, lanes, p_dot)


def test_engines_agree_on_one_layer_with_three_runs():
    layer, a = _case(7, 9, 11, 3, 7, 6, 2, True)
    snn = rtlsim.check_layer(layer, a, "snn", lanes=3, p_dot=3, runs=3)
    bnn = rtlsim.check_layer(layer, a, "bnn", lanes=5, runs=3)
    np.testing.assert_array_equal(snn.sums, bnn.sums)
    np.testing.assert_array_equal(snn.bits, bnn.bits)


def test_check_layer_reports_first_mismatch(monkeypatch):
    layer, a = _case(3, 3, 4, 2, 4, 4, 1, False)
    good = rtlsim.golden(layer, a)[0]
    bad = good.copy()
    bad[2, 1, 3] += 2

    def fake(*args, **kwargs):
        return rtlsim.SimResult(sums=bad, bits=None, cycles=0)

    monkeypatch.setattr(rtlsim, "simulate_layer", fake)
    with pytest.raises(ValueError, match=r"output channel 2, position \(y=1, x=3\): expected -?\d+, got -?\d+"):
        rtlsim.check_layer(layer, a)


def _tb_output(layer, lanes, lines):
    return rtlsim._parse_output("\n".join(lines), layer, "snn", lanes, runs=1)


def test_output_parser_rejects_xz_missing_outputs_and_extra_done():
    layer, _ = _case(0, 1, 1, 1, 1, 1, 1, False)
    word = "0" * 31 + "1"
    ok = ["O 0 0 0 %s 1" % word, "C 0 5", "D 1", "X 0"]
    sums, bits, cycles = _tb_output(layer, 1, ok)
    assert sums[0, 0, 0] == 1 and cycles == 5
    with pytest.raises(ValueError, match="x/z on an output"):
        _tb_output(layer, 1, ["O 0 0 0 %s 1" % ("x" + word[1:])] + ok[1:])
    with pytest.raises(ValueError, match="done rose 2 times"):
        _tb_output(layer, 1, ok[:2] + ["D 2", "X 0"])
    with pytest.raises(ValueError, match="x/z in 3 cycles"):
        _tb_output(layer, 1, ok[:3] + ["X 3"])
    with pytest.raises(ValueError, match="expected once"):
        _tb_output(layer, 1, ok[1:])


def test_dot_phase_overlaps_lane_phase():
    # 2^4 / p_dot 4 = 4 Dot9 steps and 16 / lanes 4 = 4 lane groups per channel: with the
    # double buffer a 16-channel position costs 4 cycles per channel (+ fill), not 4 + 4
    layer, a = _case(5, 16, 16, 4, 1, 1, 1, False)
    cycles = rtlsim.check_layer(layer, a, "snn", lanes=4, p_dot=4).cycles
    serial = 3 + 16 * (4 + 4) + 1
    overlapped = 3 + 4 + 15 * 4 + 4 + 1
    assert cycles == overlapped < serial


# --------------------------------------------------------------- lint / synth

SAMPLE_PARAMS = [
    dict(C_IN=5, C_OUT=7, TAU=3, H=6, W=5, STRIDE=2, LANES=3, P_DOT=3, HAS_THRESH=1),
    dict(C_IN=1, C_OUT=1, TAU=1, H=1, W=1, STRIDE=1, LANES=1, P_DOT=1, HAS_THRESH=0),
    dict(C_IN=16, C_OUT=16, TAU=6, H=8, W=8, STRIDE=1, LANES=4, P_DOT=8, HAS_THRESH=1),
]


def _engine_params(engine, params):
    return {k: v for k, v in params.items() if engine == "snn" or k not in ("TAU", "P_DOT")}


@pytest.mark.parametrize("engine", rtlsim.ENGINES)
@pytest.mark.parametrize("params", SAMPLE_PARAMS)
def test_verilator_lint_clean(engine, params):
    verilator = rtlsim.require_tool("verilator")
    cmd = [verilator, "--lint-only", "-Wall", "--top-module", f"{engine}_layer"]
    cmd += [f"-G{k}={v}" for k, v in _engine_params(engine, params).items()]
    cmd += [os.path.join(rtlsim.RTL_DIR, name) for name in rtlsim.ENGINE_SOURCES]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize("engine", rtlsim.ENGINES)
def test_iverilog_2005_compiles_without_warnings(engine):
    # build_testbench fails on any iverilog warning
    params = dict(SAMPLE_PARAMS[0], ENGINE=rtlsim.ENGINES.index(engine))
    assert os.path.getsize(rtlsim.build_testbench(params)) > 0


@pytest.mark.parametrize("engine", rtlsim.ENGINES)
def test_yosys_generic_synth(engine):
    layer, a = _case(1, 4, 6, 2, 4, 5, 2, True)
    real = rtlsim.synth_stats(layer, engine, lanes=2, p_dot=2, target="generic", activations=a)
    # the Dot9 units survive synthesis: XOR/XNOR cells are present
    assert real["rom_instances"] == 0
    assert any("XOR" in t or "XNOR" in t for t in real["by_type"])
    logic = rtlsim.synth_stats(layer, engine, lanes=2, p_dot=2, target="generic")
    # activations, thresholds, flips + codebook and indices (snn) or kernels (bnn)
    assert logic["rom_instances"] == (5 if engine == "snn" else 4)
    assert 0 < logic["cells"]


def test_require_tool_names_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "")
    for tool, package in [("vvp", "iverilog"), ("verilator", "verilator"), ("yosys", "yosys")]:
        with pytest.raises(rtlsim.ToolMissing, match=f"apt-get install -y {package}"):
            rtlsim.require_tool(tool)


def test_rtl_sources_follow_house_style():
    tb_dir = os.path.join(rtlsim.RTL_DIR, "tb")
    sources = sorted(f for f in os.listdir(rtlsim.RTL_DIR) if f.endswith(".v"))
    sources += sorted(f"tb/{f}" for f in os.listdir(tb_dir) if f.endswith(".v"))
    assert set(rtlsim.TB_SOURCES) <= set(sources)
    for path in sources:
        name = os.path.basename(path)
        with open(os.path.join(rtlsim.RTL_DIR, path)) as f:
            text = f.read()
        lines = [l for l in text.splitlines() if l.strip()]
        assert "`default_nettype none" in lines[:3], name
        assert lines[-1] == "`default_nettype wire", name
        modules = re.findall(r"^module\s+(\w+)", text, re.M)
        assert modules == [name[:-2]], (name, modules)  # one module per file, named as the file
        if not name.startswith("tb_"):
            assert not re.search(r"\$(fwrite|fopen|display|finish)", text), name
            for param in re.findall(r"^\s*parameter\s+(\w+)", text, re.M):
                assert param == param.upper(), (name, param)


@pytest.mark.parametrize("engine", ["snn", "bnn"])
def test_trained_layer_on_a_real_test_image(trained, cifar, engine):
    """layer2.0.conv1 (16->32, stride 2) of a trained tau=5 W/1A ResNet-20 on
    the activations the first CIFAR-10 test image produces there: the RTL
    sums equal the integer engine's, and times alpha the float model's conv
    output, bit for bit."""
    from minisnn import compile as C
    from minisnn import data as D
    from minisnn.checkpoint import load_model
    from minisnn.quant import sign, weight_scale

    model = load_model(trained["snn"])
    name = "layer2.0.conv1"
    conv = dict(model.named_modules())[name]
    x, out = C.capture(model, name, D.normalize(cifar["x_test"][:1]))
    layer = next(lay for lay in C.compile_model(model).layers if lay.name == name)
    assert (layer.c_in, layer.c_out, layer.stride, layer.tau) == (16, 32, 2, 5)
    acts = sign(x[0]).astype(np.int8)
    result = rtlsim.check_layer(layer, acts, engine, lanes=8, p_dot=4)
    alpha = weight_scale(conv.weight.data)[:, None, None]
    np.testing.assert_array_equal(result.sums.astype(np.float32) * alpha, out[0])
    assert result.cycles == rtlsim.cycle_model(engine, 16, 32, 32, 32, 2, 5, 8, 4)
