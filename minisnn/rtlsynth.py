"""Synthesis of the Verilog engines: yosys cell counts and nextpnr-ice40 timing.

``synth`` maps rtl/conv_layer.v with one layer's real memory contents (so
ROMs and RAMs are counted, never black-boxed) to a target:
  "generic"  yosys ``synth`` (technology-independent cells),
  "ice40"    ``synth_ice40``: SB_LUT4, flip-flops, SB_RAM40_4K, SB_CARRY,
  "xilinx"   ``synth_xilinx`` (7-series LUT6): LUTs, LUT-RAM (in LUTs, as
             "LUT as memory"), flip-flops, block RAM (RAMB36 units).
``place`` runs nextpnr-ice40 on the ice40 netlist for a UP5K or HX8K and
returns the maximum clock frequency it reports, or None if the design does
not fit the device.
"""

import json
import os
import re
import subprocess
import tempfile

from minisnn import rtlmodel, rtlsim
from minisnn.romlayer import BinaryConvLayer
from minisnn.rtlmodel import EngineConfig

TARGETS = ("generic", "ice40", "xilinx")
DEVICES = {"up5k": ("--up5k", "sg48", 5280), "hx8k": ("--hx8k", "ct256", 7680)}  # LUT4 counts
ICE40_BRAMS = {"up5k": 30, "hx8k": 32}
# LUTs a 7-series LUT-RAM / shift-register primitive occupies
_XILINX_LUTRAM = {"RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
                  "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4,
                  "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1}


def _run_yosys(script, work, what):
    yosys = rtlsim.require_tool("yosys")
    proc = subprocess.run([yosys, "-q", "-p", script], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0 or "ERROR" in proc.stderr:
        raise RuntimeError(f"yosys failed for {what}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def _counts(by_type, target):
    if target == "ice40":
        return {"lut": by_type.get("SB_LUT4", 0),
                "ff": sum(n for t, n in by_type.items() if t.startswith("SB_DFF")),
                "bram": sum(n for t, n in by_type.items() if t.startswith("SB_RAM40")),
                "lutram": 0, "carry": by_type.get("SB_CARRY", 0)}
    if target == "xilinx":
        return {"lut": sum(n for t, n in by_type.items() if re.fullmatch(r"LUT[1-6]|INV", t)),
                "lutram": sum(_XILINX_LUTRAM[t] * n for t, n in by_type.items() if t in _XILINX_LUTRAM),
                "ff": sum(n for t, n in by_type.items() if re.fullmatch(r"FD[CPRS]E?", t)),
                "bram": by_type.get("RAMB36E1", 0) + 0.5 * by_type.get("RAMB18E1", 0),
                "dsp": by_type.get("DSP48E1", 0), "carry": by_type.get("CARRY4", 0)}
    return {"cells": sum(by_type.values())}


WRAPPER = os.path.join(rtlsim.RTL_DIR, "tb", "pnr_wrap.v")


def synth(layer: BinaryConvLayer, cfg: EngineConfig, target="ice40", netlist=None):
    """Cell counts of conv_layer.v for ``layer`` on ``cfg`` (see module docstring).

    Returns {"cells", "by_type", plus the target's counts}. ice40 maps the
    engine inside rtl/tb/pnr_wrap.v (one input pin shifting the input beat in,
    the output beat XOR-reduced to one pin), as placed by ``place``; with
    ``netlist`` the mapped design is written there as JSON."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, found {target!r}")
    top = "pnr_wrap" if target == "ice40" else "conv_layer"
    params = rtlmodel.verilog_params(layer, cfg)
    chparam = " ".join(f"-set {k} {v}" for k, v in sorted(params.items()))
    step = {"generic": f"synth -flatten -top {top}", "ice40": f"synth_ice40 -top {top}",
            "xilinx": f"synth_xilinx -flatten -noiopad -family xc7 -top {top}"}[target]
    files = rtlsim.sources() + ([WRAPPER] if target == "ice40" else [])
    with tempfile.TemporaryDirectory(prefix="minisnn-synth-") as work:
        rtlmodel.write_memories(layer, cfg, work)
        script = f"read_verilog -defer {' '.join(files)}; chparam {chparam} {top}; {step}; "
        if netlist is not None:
            script += f"write_json {os.path.abspath(netlist)}; "
        script += "tee -q -o stat.json stat -json"
        _run_yosys(script, work, f"layer {layer.name} ({rtlmodel.describe(cfg, layer.tau)}, {target})")
        with open(os.path.join(work, "stat.json")) as f:
            stat = json.load(f)
    by_type = stat["modules"][f"\\{top}"]["num_cells_by_type"]
    return dict({"cells": sum(by_type.values()), "by_type": by_type}, **_counts(by_type, target))


def place(netlist, device="up5k", seed=1, timeout=3600):
    """nextpnr-ice40 on a synth(..., "ice40", netlist=...) netlist: {"device", "fmax_mhz"}
    (post-route maximum frequency of clk), or None if the design does not fit the
    device (more cells than it has, or placement fails)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {tuple(DEVICES)}, found {device!r}")
    nextpnr = rtlsim.require_tool("nextpnr-ice40")
    flag, package, _ = DEVICES[device]
    cmd = [nextpnr, flag, "--package", package, "--json", os.path.abspath(netlist), "--seed", str(seed),
           "--freq", "12", "--timing-allow-fail", "-q", "-l", "/dev/stdout"]
    with tempfile.TemporaryDirectory(prefix="minisnn-pnr-") as work:
        proc = subprocess.run(cmd + ["--asc", os.path.join(work, "out.asc")], cwd=work,
                              capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        # over capacity: more cells than the device has, or (after packing flip-flops and
        # carries into logic cells) an analytic placer region it cannot expand
        if re.search(r"Design uses \d+ .* but device only has|Unable to place|failed to place|too many"
                     r"|Failed to expand region", log, re.I):
            return None
        raise RuntimeError(f"nextpnr-ice40 failed on {netlist}:\n{log[-4000:]}")
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", log)
    if not found:
        raise RuntimeError(f"nextpnr-ice40 reported no clock frequency for {netlist}:\n{log[-4000:]}")
    return {"device": device, "fmax_mhz": float(found[-1])}
