"""Co-simulation of the Verilog engines (rtl/conv_layer.v) under Icarus.

The engines run layers read from ROM files: ``simulate_rom`` and
``check_rom`` take a directory ``python -m minisnn.export`` wrote and read
the layer through export.read_layer, so a file that differs from its
manifest (or is no ``$readmemh`` text) is refused before anything runs, and
what is simulated is what was exported. ``simulate`` and ``check_layer``
(``simulate_chain``, ``check_chain``) take layer records and send them the
same way: export writes them into a temporary ROM directory and the
simulation reads them back from there.

From the layer read, the engine's memory images (packed per lane and Dot9
unit for the configuration) and the input beats (minisnn.rtlmodel) go into a
temporary directory; rtl/tb/tb_layer.v runs with iverilog/vvp (compiled
testbenches are cached per parameter set), optionally with random
valid/ready stalls, and the output beats are read back. The ``check_*``
functions compare them with the golden model and the exact cycle model and
raise on the first difference.

The synthesizable sources are listed, in order, in rtl/sources.f.
"""

import contextlib
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Optional

import numpy as np

from minisnn import export, rtlmodel
from minisnn.romlayer import BinaryConvLayer
from minisnn.rtlmodel import EngineConfig

RTL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rtl")
SOURCE_LIST = os.path.join(RTL_DIR, "sources.f")
TESTBENCH = os.path.join(RTL_DIR, "tb", "tb_layer.v")
INSTALL = "apt-get install -y iverilog verilator yosys nextpnr-ice40 fpga-icestorm"
_PACKAGES = {"iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator", "yosys": "yosys",
             "nextpnr-ice40": "nextpnr-ice40", "icepack": "fpga-icestorm"}


class ToolMissing(RuntimeError):
    """An external EDA tool is not installed."""


def require_tool(name):
    """Path of tool ``name``, or ToolMissing naming the apt-get command that installs it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found on PATH; install it with: apt-get install -y {_PACKAGES[name]} "
                          f"(every tool the RTL tests use: {INSTALL})")
    return path


def sources():
    """Paths of the synthesizable modules, from rtl/sources.f (top first)."""
    with open(SOURCE_LIST) as f:
        names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [os.path.join(RTL_DIR, name) for name in names]


@dataclasses.dataclass
class SimResult:
    sums: Optional[np.ndarray]  # int64 (images, C_out, Ho, Wo); None for bit beats
    bits: Optional[np.ndarray]  # uint8 (images, C_out, Ho, Wo); None without thresholds
    cycles: int  # first input handshake .. last output handshake


def _cache_dir():
    return os.environ.get("MINISNN_RTL_CACHE", os.path.join(tempfile.gettempdir(), "minisnn-rtl-cache"))


def build_testbench(params):
    """Compile tb_layer.v with ``params`` (cached by sources and parameters); path of the .vvp."""
    iverilog = require_tool("iverilog")
    files = [TESTBENCH] + sources()
    digest = hashlib.sha256(repr(sorted(params.items())).encode())
    for name in files:
        with open(name, "rb") as f:
            digest.update(f.read())
    os.makedirs(_cache_dir(), exist_ok=True)
    out = os.path.join(_cache_dir(), f"tb_{digest.hexdigest()[:24]}.vvp")
    if os.path.exists(out):
        return out
    tmp = f"{out}.{os.getpid()}.tmp"
    cmd = [iverilog, "-g2005", "-Wall", "-s", "tb_layer", "-o", tmp]
    cmd += [f"-Ptb_layer.{k}={v}" for k, v in sorted(params.items())]
    proc = subprocess.run(cmd + files, capture_output=True, text=True)
    # warnings count as failures: e.g. an always @* without sensitivities never runs
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"iverilog failed or warned on {params}:\n{proc.stderr}")
    os.replace(tmp, out)  # atomic: parallel builds of one key cannot see half a file
    return out


def _tb_params(layer, cfg, images, layer2=None, cfg2=None):
    params = {k: v for k, v in rtlmodel.verilog_params(layer, cfg).items() if not k.endswith("_FILE")}
    params["IMAGES"] = images
    if layer2 is not None:
        p2 = rtlmodel.verilog_params(layer2, cfg2)
        params["CHAIN"] = 1
        for key in ("ENGINE", "C_OUT", "STRIDE", "TAU", "LANES", "DOT9", "TABLE_RAM", "HAS_THRESH", "OUT_SUMS"):
            params[f"L2_{key}"] = p2[key]
    return params


def _read_beats(text, where, images):
    """Output beats (ints) per image from out.txt, with the testbench's checks."""
    beats, per_image, stats = [], [], {}
    for line in text.splitlines():
        kind, *f = line.split()
        if kind == "B":
            if set(f[0] + f[1].lower()) - set("0123456789abcdef"):
                raise ValueError(f"{where}: x/z on output beat {len(beats)}: tlast {f[0]}, tdata {f[1]}")
            beats.append(int(f[1], 16))
            if f[0] == "1":
                per_image.append(beats)
                beats = []
        else:
            stats[kind] = int(f[0])
    if stats.get("T"):
        raise ValueError(f"{where}: the simulation ran out of cycles (hung?) after {len(per_image)} images")
    for key, what in (("X", "cycles with x/z on an output"), ("V", "output beats changed while stalled"),
                      ("E", "input tlast errors")):
        if stats.get(key):
            raise ValueError(f"{where}: {stats[key]} {what}")
    if beats or len(per_image) != images:
        raise ValueError(f"{where}: expected {images} images ending in tlast, found {len(per_image)} "
                         f"and {len(beats)} trailing beats")
    return per_image, stats["C"]


def _simulate(params, write_files, words, images, where, stall_in, stall_out, seed, budget, tlast_every=None):
    vvp = require_tool("vvp")
    binary = build_testbench(params)
    with tempfile.TemporaryDirectory(prefix="minisnn-rtl-") as work:
        write_files(work)
        width = params["C_IN"] * params["A"]
        with open(os.path.join(work, "in.hex"), "w") as f:
            f.write("".join(f"{w:0{max(1, -(-width // 4))}x}\n" for w in words))
        cmd = [vvp, "-n", binary, f"+seed={seed}", f"+pin={stall_in}", f"+pout={stall_out}",
               f"+max_cycles={budget}"] + ([f"+tlast_every={tlast_every}"] if tlast_every else [])
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        out_path = os.path.join(work, "out.txt")
        # $error in a parameter check prints ERROR and ends the run
        if proc.returncode != 0 or "ERROR" in proc.stdout or not os.path.exists(out_path):
            raise RuntimeError(f"vvp failed for {where}:\n{proc.stdout}\n{proc.stderr}")
        with open(out_path) as f:
            return _read_beats(f.read(), where, images)


def _images(layer, codes, act_bits):
    codes = np.asarray(codes)
    if codes.ndim == 3:
        codes = codes[None]
    return np.stack([rtlmodel.check_activations(layer, c, act_bits) for c in codes])


def _budget(cycles, stall_in, stall_out):
    # generous, so that a hung engine ends the simulation instead of the test run
    return 20 * cycles * (1 + 100 // max(1, 100 - max(stall_in, stall_out))) + 10000


@contextlib.contextmanager
def exported(layers):
    """A temporary ROM directory holding ``layers`` as ``python -m minisnn.export`` writes
    them (ROM files and manifest.json); removed on leaving the context."""
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layers exported together need distinct names, found {names}")
    with tempfile.TemporaryDirectory(prefix="minisnn-rom-") as rom:
        export.write_manifest(rom, [export.export_layer(layer, rom) for layer in layers])
        yield rom


def simulate(layer: BinaryConvLayer, codes, cfg: EngineConfig, stall_in=0, stall_out=0, seed=1,
             tlast_every=None):
    """simulate_rom of ``layer`` exported into a temporary ROM directory: the engine
    runs what export wrote and export.read_layer read back."""
    with exported([layer]) as rom:
        return simulate_rom(rom, layer.name, codes, cfg, stall_in, stall_out, seed, tlast_every)


def simulate_rom(rom_dir, name, codes, cfg: EngineConfig, stall_in=0, stall_out=0, seed=1,
                 tlast_every=None):
    """Stream images of activation codes (C_in, H, W) or (N, C_in, H, W) through
    conv_layer.v running layer ``name`` of the ROM directory ``rom_dir``, as
    export.read_layer reads it (ValueError naming the file on any fault);
    ``stall_in`` / ``stall_out``: percent of cycles the input withholds a beat / the
    output is not ready; ``tlast_every`` beats an input tlast instead of H*W (to test
    the engine's check). Returns SimResult."""
    return _run_layer(export.read_layer(rom_dir, name), codes, cfg, stall_in, stall_out, seed,
                      tlast_every)


def _run_layer(layer, codes, cfg, stall_in, stall_out, seed, tlast_every=None):
    images = _images(layer, codes, cfg.act_bits)
    where = f"layer {layer.name} ({rtlmodel.describe(cfg, layer.tau)})"
    params = _tb_params(layer, cfg, len(images))
    words = [w for img in images for w in rtlmodel.stream_words(img, cfg.act_bits)]
    model = rtlmodel.cycle_model(layer.c_in, layer.c_out, layer.height, layer.width, layer.stride, cfg,
                                 layer.tau, len(images))
    beats, cycles = _simulate(params, lambda d: rtlmodel.write_memories(layer, cfg, d, "l1"), words,
                              len(images), where, stall_in, stall_out, seed,
                              _budget(model, stall_in, stall_out), tlast_every)
    return _result(layer, cfg, beats, cycles)


def _result(layer, cfg, beats, cycles):
    parsed = [rtlmodel.parse_beats(layer, cfg, b) for b in beats]
    sums = None if parsed[0][0] is None else np.stack([p[0] for p in parsed])
    bits = None if parsed[0][1] is None else np.stack([p[1] for p in parsed])
    return SimResult(sums=sums, bits=bits, cycles=cycles)


def simulate_chain(layer1: BinaryConvLayer, cfg1: EngineConfig, layer2: BinaryConvLayer, cfg2: EngineConfig,
                   codes, stall_in=0, stall_out=0, seed=1):
    """Two layers in a row, both exported into a temporary ROM directory and read back
    from there: layer 1's threshold bits (cfg1.out 'bits') are layer 2's 1-bit
    activations. Returns layer 2's SimResult."""
    with exported([layer1, layer2]) as rom:
        layer1, layer2 = [export.read_layer(rom, layer.name) for layer in (layer1, layer2)]
    if layer1.threshold is None or cfg1.out != "bits":
        raise ValueError(f"layer {layer1.name}: a chained first layer needs thresholds and out='bits'")
    if cfg2.act_bits != 1 or (layer2.c_in, layer2.height, layer2.width) != (
            layer1.c_out, layer1.out_height, layer1.out_width):
        raise ValueError(f"layer {layer2.name}: input (C, H, W) = ({layer2.c_in}, {layer2.height}, "
                         f"{layer2.width}) with 1-bit activations expected, to follow layer {layer1.name}")
    images = _images(layer1, codes, cfg1.act_bits)
    where = f"chain {layer1.name} ({rtlmodel.describe(cfg1, layer1.tau)}) -> {layer2.name} " \
            f"({rtlmodel.describe(cfg2, layer2.tau)})"
    params = _tb_params(layer1, cfg1, len(images), layer2, cfg2)

    def write(d):
        rtlmodel.write_memories(layer1, cfg1, d, "l1")
        rtlmodel.write_memories(layer2, cfg2, d, "l2")

    words = [w for img in images for w in rtlmodel.stream_words(img, cfg1.act_bits)]
    model = sum(rtlmodel.cycle_model(lay.c_in, lay.c_out, lay.height, lay.width, lay.stride, c, lay.tau,
                                     len(images)) for lay, c in ((layer1, cfg1), (layer2, cfg2)))
    beats, cycles = _simulate(params, write, words, len(images), where, stall_in, stall_out, seed,
                              _budget(model, stall_in, stall_out))
    return _result(layer2, cfg2, beats, cycles)


def first_mismatch(what, where, expected, got):
    """ValueError at the first element of ``got`` (N, C, H, W) that differs from ``expected``."""
    bad = np.argwhere(np.asarray(expected) != np.asarray(got))
    if bad.size:
        n, o, y, x = bad[0]
        raise ValueError(f"{where}: {what} differ in image {n} at output channel {o}, position (y={y}, x={x}): "
                         f"expected {expected[n, o, y, x]}, got {got[n, o, y, x]} ({len(bad)} mismatches)")


def golden(layer: BinaryConvLayer, codes, act_bits):
    """(sums int64 (N, C_out, Ho, Wo), bits uint8 or None) of the golden model."""
    sums = np.stack([rtlmodel.golden_sums(layer, c, act_bits) for c in _images(layer, codes, act_bits)])
    bits = None if layer.threshold is None else np.stack([rtlmodel.golden_bits(layer, s) for s in sums])
    return sums, bits


def _compare(result, sums, bits, cfg, where):
    if cfg.out == "sums":
        first_mismatch("sums", where, sums, result.sums)
    if bits is not None:
        first_mismatch("threshold bits", where, bits, result.bits)


def check_layer(layer: BinaryConvLayer, codes, cfg: EngineConfig, stall_in=0, stall_out=0, seed=1):
    """simulate (``layer`` through its ROM files), then ValueError at the first sum or
    bit that differs from the golden model of ``layer`` itself, or (without stalls) a
    cycle count that differs from cycle_model."""
    result = simulate(layer, codes, cfg, stall_in, stall_out, seed)
    return _check(layer, codes, cfg, result, stall_in or stall_out)


def check_rom(rom_dir, name, codes, cfg: EngineConfig, stall_in=0, stall_out=0, seed=1):
    """check_layer for layer ``name`` of a ROM directory export wrote: read once by
    export.read_layer, simulated and checked against the golden model of what was read."""
    layer = export.read_layer(rom_dir, name)
    result = _run_layer(layer, codes, cfg, stall_in, stall_out, seed)
    return _check(layer, codes, cfg, result, stall_in or stall_out)


def _check(layer, codes, cfg, result, stalled):
    where = f"layer {layer.name} ({rtlmodel.describe(cfg, layer.tau)})"
    sums, bits = golden(layer, codes, cfg.act_bits)
    _compare(result, sums, bits, cfg, where)
    if not stalled:
        model = rtlmodel.cycle_model(layer.c_in, layer.c_out, layer.height, layer.width, layer.stride, cfg,
                                     layer.tau, len(sums))
        if result.cycles != model:
            raise ValueError(f"{where}: simulated {result.cycles} cycles, the cycle model says {model}")
    return result


def check_chain(layer1, cfg1, layer2, cfg2, codes, stall_in=0, stall_out=0, seed=1):
    """simulate_chain, then ValueError where layer 2's outputs differ from the golden
    model run on layer 1's golden threshold bits."""
    result = simulate_chain(layer1, cfg1, layer2, cfg2, codes, stall_in, stall_out, seed)
    mid = golden(layer1, codes, cfg1.act_bits)[1]
    sums, bits = golden(layer2, mid, 1)
    _compare(result, sums, bits, cfg2, f"chain {layer1.name} -> {layer2.name}")
    return result
