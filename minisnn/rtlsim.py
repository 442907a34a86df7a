"""Co-simulation of the Verilog engines (rtl/*.v) against the popcount model.

``simulate_layer`` writes the stimulus and the layer's ROMs (minisnn.export)
into a temporary directory, runs rtl/tb/tb_layer.v under Icarus (iverilog/vvp;
compiled testbenches are cached per parameter set) and reads the sums, bits
and cycle count back. ``check_layer`` compares them with minisnn.popcount and
raises on the first mismatch.

Activation memory (``act.hex``): one word per input pixel, address
y * W + x, C_in bits per word, bit c = channel c, 1 = +1.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Optional

import numpy as np

from minisnn import popcount
from minisnn.compile import BinaryConvLayer
from minisnn.export import export_layer, random_layer

RTL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rtl")
# synthesizable modules of both engines
ENGINE_SOURCES = ("snn_layer.v", "bnn_layer.v", "layer_seq.v", "act_window.v", "lane_acc.v", "dot9.v", "rom.v")
TB_SOURCES = ("tb/tb_layer.v",) + ENGINE_SOURCES
ENGINES = ("snn", "bnn")
# the name the testbench's memory file parameters expect (tb_layer.v)
_TB_LAYER_NAME = "layer"
_PACKAGES = {"iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator", "yosys": "yosys"}


class ToolMissing(RuntimeError):
    """An external EDA tool is not installed."""


def require_tool(name):
    """Path of tool ``name``, or ToolMissing naming the apt-get command that installs it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found on PATH; install it with: apt-get install -y {_PACKAGES[name]} "
                          f"(all tools the RTL tests use: apt-get install -y iverilog verilator yosys)")
    return path


@dataclasses.dataclass
class SimResult:
    sums: np.ndarray  # int32 (C_out, Ho, Wo)
    bits: Optional[np.ndarray]  # uint8 (C_out, Ho, Wo), None without thresholds
    cycles: int  # busy cycles of one run (start accepted .. done)


def _ceil_div(a, b):
    return -(-a // b)


def cycle_model(engine, c_in, c_out, h, w, stride, tau, lanes, p_dot):
    """Exact cycle count of one run of rtl/{engine}_layer.v (see layer_seq.v):
    per output position 3 window-fetch cycles plus the lockstep stages, and
    one final flush cycle. ``tau``/``p_dot`` are ignored by the BNN engine."""
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    groups = _ceil_div(c_out, lanes)
    if engine == "snn":
        steps = _ceil_div(2**tau, p_dot)
        stages = steps + (c_in - 1) * max(steps, groups) + groups
    elif engine == "bnn":
        stages = c_in * groups
    else:
        raise ValueError(f"engine must be one of {ENGINES}, found {engine!r}")
    return ho * wo * (3 + stages) + 1


def engine_params(layer: BinaryConvLayer, engine, lanes, p_dot):
    """Verilog parameters of tb_layer.v for one layer and engine configuration."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, found {engine!r}")
    if engine == "snn" and layer.tau is None:
        raise ValueError(f"layer {layer.name}: the snn engine needs a sub-bit layer (tau, codebook, idx)")
    if lanes < 1 or p_dot < 1:
        raise ValueError(f"lanes and p_dot must be >= 1, found {lanes}, {p_dot}")
    return {
        "ENGINE": ENGINES.index(engine), "C_IN": layer.c_in, "C_OUT": layer.c_out,
        # TAU/P_DOT only shape the snn engine; fixed for bnn so its builds are shared
        "TAU": layer.tau if engine == "snn" else 1, "P_DOT": p_dot if engine == "snn" else 1,
        "H": layer.height, "W": layer.width, "STRIDE": layer.stride, "LANES": lanes,
        "HAS_THRESH": int(layer.threshold is not None),
    }


def _cache_dir():
    return os.environ.get("MINISNN_RTL_CACHE", os.path.join(tempfile.gettempdir(), "minisnn-rtl-cache"))


def build_testbench(params):
    """Compile tb_layer.v with ``params`` (cached by sources and parameters); path of the .vvp."""
    iverilog = require_tool("iverilog")
    digest = hashlib.sha256(repr(sorted(params.items())).encode())
    for name in TB_SOURCES:
        with open(os.path.join(RTL_DIR, name), "rb") as f:
            digest.update(f.read())
    os.makedirs(_cache_dir(), exist_ok=True)
    out = os.path.join(_cache_dir(), f"tb_{digest.hexdigest()[:24]}.vvp")
    if os.path.exists(out):
        return out
    tmp = f"{out}.{os.getpid()}.tmp"
    cmd = [iverilog, "-g2005", "-Wall", "-s", "tb_layer", "-o", tmp]
    cmd += [f"-Ptb_layer.{k}={v}" for k, v in sorted(params.items())]
    cmd += [os.path.join(RTL_DIR, name) for name in TB_SOURCES]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # warnings count as failures: e.g. an always @* without sensitivities never runs
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"iverilog failed or warned on {params}:\n{proc.stderr}")
    os.replace(tmp, out)  # atomic: parallel builds of one key cannot see half a file
    return out


def write_activations(path, activations):
    """Write the activation memory (see module docstring) of int8 {-1,+1} (C_in, H, W)."""
    c_in = activations.shape[0]
    bits = (activations > 0).reshape(c_in, -1).T.astype(object)  # (H*W, C_in), big ints for C_in > 64
    words = (bits * np.array([1 << c for c in range(c_in)], dtype=object)).sum(axis=1)
    digits = _ceil_div(c_in, 4)
    with open(path, "w") as f:
        f.write("".join(f"{int(w):0{digits}x}\n" for w in words))


def _check_activations(layer, activations):
    a = np.asarray(activations)
    shape = (layer.c_in, layer.height, layer.width)
    if a.shape != shape:
        raise ValueError(f"layer {layer.name}: activations must have shape {shape}, found {a.shape}")
    if not np.isin(a, (-1, 1)).all():
        raise ValueError(f"layer {layer.name}: activations must be -1/+1, found values {np.unique(a)[:8]}")
    return a.astype(np.int8)


def _parse_output(text, layer, engine, lanes, runs):
    """Sums, bits and cycles from tb_layer's out.txt; every run must agree and be complete."""
    ho, wo, c_out = layer.out_height, layer.out_width, layer.c_out
    where = f"layer {layer.name} ({engine} engine)"
    sums = np.zeros((runs, c_out, ho * wo), np.int64)
    bits = np.zeros((runs, c_out, ho * wo), np.uint8)
    seen = np.zeros((runs, c_out, ho * wo), np.int64)
    cycles, done, x_cycles = {}, None, None
    for line in text.splitlines():
        kind, *f = line.split()
        if kind == "O":
            run, pos, grp, sum_bits, out_bits = int(f[0]), int(f[1]), int(f[2]), f[3], f[4]
            if set(sum_bits + out_bits) - {"0", "1"}:
                raise ValueError(f"{where}: x/z on an output at position {pos}, group {grp}: {sum_bits} {out_bits}")
            if run >= runs or pos >= ho * wo:
                raise ValueError(f"{where}: output for run {run}, position {pos} out of range")
            for lane in range(lanes):
                o = grp * lanes + lane
                if o < c_out:  # lanes past c_out in the last group carry nothing
                    word = int(sum_bits[(lanes - 1 - lane) * 32:(lanes - lane) * 32], 2)
                    sums[run, o, pos] = word - (1 << 32) if word >> 31 else word
                    bits[run, o, pos] = int(out_bits[lanes - 1 - lane])
                    seen[run, o, pos] += 1
        elif kind == "C":
            cycles[int(f[0])] = int(f[1])
        elif kind == "D":
            done = int(f[0])
        elif kind == "X":
            x_cycles = int(f[0])
    if done != runs:
        raise ValueError(f"{where}: done rose {done} times for {runs} starts")
    if x_cycles != 0:
        raise ValueError(f"{where}: outputs were x/z in {x_cycles} cycles after reset")
    if not (seen == 1).all():
        run, o, pos = np.argwhere(seen != 1)[0]
        raise ValueError(f"{where}: run {run} produced channel {o} at position {pos} {seen[run, o, pos]} times, expected once")
    if len(set(cycles.values())) != 1 or len(cycles) != runs:
        raise ValueError(f"{where}: cycle counts differ between runs: {cycles}")
    if not ((sums == sums[0]).all() and (bits == bits[0]).all()):
        raise ValueError(f"{where}: back-to-back runs of the same image gave different outputs")
    return sums[0].reshape(c_out, ho, wo).astype(np.int32), bits[0].reshape(c_out, ho, wo), cycles[0]


def simulate_layer(layer: BinaryConvLayer, activations, engine="snn", lanes=4, p_dot=4, runs=2):
    """Run one image (int8 {-1,+1} (C_in, H, W)) through rtl/{engine}_layer.v.

    ``runs`` back-to-back starts on the same image (their outputs must agree).
    Returns SimResult with sums (C_out, Ho, Wo), bits (None if the layer has
    no thresholds) and the cycles of one run."""
    a = _check_activations(layer, activations)
    params = engine_params(layer, engine, lanes, p_dot)
    vvp = require_tool("vvp")
    binary = build_testbench(params)
    expected = cycle_model(engine, layer.c_in, layer.c_out, layer.height, layer.width, layer.stride,
                           layer.tau, lanes, p_dot)
    with tempfile.TemporaryDirectory(prefix="minisnn-rtl-") as work:
        export_layer(dataclasses.replace(layer, name=_TB_LAYER_NAME), work)
        write_activations(os.path.join(work, "act.hex"), a)
        # generous bound so that a hung FSM ends the simulation instead of the test run
        cmd = [vvp, "-n", binary, f"+runs={runs}", f"+max_cycles={4 * expected + 1000}"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        out_path = os.path.join(work, "out.txt")
        if proc.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(f"vvp failed for layer {layer.name} ({engine}):\n{proc.stdout}\n{proc.stderr}")
        with open(out_path) as f:
            text = f.read()
    sums, bits, cycles = _parse_output(text, layer, engine, lanes, runs)
    return SimResult(sums=sums, bits=bits if layer.threshold is not None else None, cycles=cycles)


def _top_params(layer, engine, lanes, p_dot):
    """Verilog parameters of the {engine}_layer top (tb_layer's minus ENGINE)."""
    params = engine_params(layer, engine, lanes, p_dot)
    del params["ENGINE"]
    if engine == "bnn":
        del params["TAU"], params["P_DOT"]
    return params


def synth_stats(layer: BinaryConvLayer, engine="snn", lanes=4, p_dot=4, target="generic", activations=None):
    """Yosys cell counts of {engine}_layer at this layer's parameters.

    With ``activations`` the memories hold the layer's real ROM contents and
    this image (an uninitialised ROM would be optimised away); without, the
    rom module is a black box, so the counts are the engine's logic alone
    ("rom_instances" says how many memories were left out).
    target "generic": ``synth -flatten``; "ice40": ``synth_ice40``, which also
    gives "lut", "ff", "bram", "carry". Returns {"cells", "by_type", ...};
    RuntimeError with the log on any yosys error."""
    yosys = require_tool("yosys")
    top = f"{engine}_layer"
    chparam = " ".join(f"-set {k} {v}" for k, v in sorted(_top_params(layer, engine, lanes, p_dot).items()))
    if target == "generic":
        synth = f"synth -flatten -top {top}"
    elif target == "ice40":
        synth = f"synth_ice40 -top {top}"
    else:
        raise ValueError(f"target must be 'generic' or 'ice40', found {target!r}")
    logic = [os.path.join(RTL_DIR, name) for name in ENGINE_SOURCES if name != "rom.v"]
    rom = os.path.join(RTL_DIR, "rom.v")
    if activations is not None:
        read = f"read_verilog {rom} {' '.join(logic)}"
    else:
        read = f"read_verilog -lib {rom}; read_verilog {' '.join(logic)}"
        # no memory files to read: yosys would still look for them
        files = ("ACT", "THRESH", "FLIP") + (("CODEBOOK", "IDX") if engine == "snn" else ("KERNEL",))
        chparam += "".join(f' -set {f}_FILE ""' for f in files)
    with tempfile.TemporaryDirectory(prefix="minisnn-synth-") as work:
        if activations is not None:
            export_layer(dataclasses.replace(layer, name=_TB_LAYER_NAME), work)
            write_activations(os.path.join(work, "act.hex"), _check_activations(layer, activations))
        script = f"{read}; chparam {chparam} {top}; {synth}; tee -q -o stat.json stat -json"
        proc = subprocess.run([yosys, "-q", "-p", script], cwd=work, capture_output=True, text=True)
        if proc.returncode != 0 or "ERROR" in proc.stderr or not os.path.exists(os.path.join(work, "stat.json")):
            raise RuntimeError(f"yosys {synth} failed for layer {layer.name} ({engine}):\n{proc.stdout}\n{proc.stderr}")
        with open(os.path.join(work, "stat.json")) as f:
            stat = json.load(f)
    counts = stat["modules"][f"\\{top}"]["num_cells_by_type"]
    by_type = {t: n for t, n in counts.items() if not t.endswith("rom")}
    result = {"cells": sum(by_type.values()), "by_type": by_type,
              "rom_instances": sum(n for t, n in counts.items() if t.endswith("rom"))}
    if target == "ice40":
        result["lut"] = by_type.get("SB_LUT4", 0)
        result["ff"] = sum(n for t, n in by_type.items() if t.startswith("SB_DFF"))
        result["bram"] = sum(n for t, n in by_type.items() if t.startswith("SB_RAM"))
        result["carry"] = by_type.get("SB_CARRY", 0)
    return result


def golden(layer: BinaryConvLayer, activations, engine="snn"):
    """Sums (C_out, Ho, Wo) and bits (or None) of the popcount model for one image."""
    a = _check_activations(layer, activations)[None]
    if engine == "snn":
        sums = popcount.snn_conv3x3(a, layer.codebook, layer.idx, layer.stride)
    else:
        sums = popcount.bnn_conv3x3(a, layer.kernel_codes, layer.stride)
    bits = None
    if layer.threshold is not None:
        flip = np.zeros(layer.c_out, bool) if layer.flip is None else np.asarray(layer.flip, bool)
        bits = popcount.apply_thresholds(sums, np.asarray(layer.threshold), flip)[0]
    return sums[0], bits


def _first_mismatch(what, layer, engine, expected, got):
    bad = np.argwhere(expected != got)
    if bad.size:
        o, y, x = bad[0]
        raise ValueError(f"layer {layer.name} ({engine} engine): {what} differ at output channel {o}, "
                         f"position (y={y}, x={x}): expected {expected[o, y, x]}, got {got[o, y, x]} "
                         f"({len(bad)} mismatches)")


def check_layer(layer: BinaryConvLayer, activations, engine="snn", lanes=4, p_dot=4, runs=2):
    """simulate_layer, then ValueError at the first sum or bit that differs from popcount."""
    result = simulate_layer(layer, activations, engine, lanes, p_dot, runs)
    sums, bits = golden(layer, activations, engine)
    _first_mismatch("sums", layer, engine, sums, result.sums)
    if bits is not None:
        _first_mismatch("threshold bits", layer, engine, bits, result.bits)
    return result


def weight_bits(engine, c_in, c_out, tau):
    """Bits of weight memory: BNN 9 per kernel; SNN tau per kernel plus the codebook."""
    return 9 * c_in * c_out if engine == "bnn" else tau * c_in * c_out + 9 * 2**tau


def balanced_p_dot(c_out, tau, lanes):
    """Fewest Dot9 units whose phase (ceil(2^tau / p_dot) cycles) hides behind the
    lane phase (ceil(c_out / lanes) cycles) of the previous channel."""
    return _ceil_div(2**tau, _ceil_div(c_out, lanes))


def bench_layer(name, channels, size, taus, lanes, sim_size, rng, synth_taus=None, ice40=True, log=None):
    """Rows (one BNN, one SNN per tau) for a channels->channels 3x3 stride-1 layer.

    Simulates (and checks against popcount) at sim_size x sim_size, asserts the
    cycle model there, and reports the model at the full size. Synthesis (the
    engine logic, memories black-boxed, see synth_stats) runs for the BNN and
    the SNN taus in ``synth_taus`` (default: all; empty: none). ``log(row)`` is
    called as each row completes."""
    synth_taus = taus if synth_taus is None else synth_taus
    rows = []
    for engine, tau in [("bnn", None)] + [("snn", t) for t in taus]:
        # a 512-kernel codebook is a plain BNN layer; the bnn engine reads kernel_codes
        layer = random_layer(rng, channels, channels, tau or 9, sim_size, sim_size, 1, name=name)
        a = rng.choice(np.array([-1, 1], np.int8), size=(channels, sim_size, sim_size))
        p_dot = balanced_p_dot(channels, tau, lanes) if engine == "snn" else 1
        sim = check_layer(layer, a, engine, lanes, p_dot, runs=1)
        model_sim = cycle_model(engine, channels, channels, sim_size, sim_size, 1, tau, lanes, p_dot)
        if sim.cycles != model_sim:
            raise RuntimeError(f"{name} {engine} tau={tau}: simulated {sim.cycles} cycles, model {model_sim}")
        row = {
            "layer": name, "channels": channels, "size": size, "sim_size": sim_size,
            "engine": engine, "tau": tau, "lanes": lanes, "p_dot": p_dot if engine == "snn" else None,
            "dot9_units": p_dot if engine == "snn" else lanes,
            "cycles_sim": sim.cycles, "cycles_model_sim": model_sim,
            "cycles_model_full": cycle_model(engine, channels, channels, size, size, 1, tau, lanes, p_dot),
            "weight_bits": weight_bits(engine, channels, channels, tau),
        }
        synth = bool(synth_taus) and (engine == "bnn" or tau in synth_taus)
        if synth:
            row["cells"] = synth_stats(layer, engine, lanes, p_dot, "generic")["cells"]
            row["cells_x_cycles"] = row["cells"] * row["cycles_model_full"]
        if synth and ice40:
            stats = synth_stats(layer, engine, lanes, p_dot, "ice40")
            row["ice40"] = {k: stats[k] for k in ("lut", "ff", "bram", "carry")}
        rows.append(row)
        if log is not None:
            log(row)
    return rows
