"""The Verilog engines measured: ``python -m minisnn.bench rtl [--sweep]``.

Every configuration (engine, table, tau, activation bits A, lanes L, Dot9
units D) of the grid (``sweep_tiers``; results.json records it as "grid") is
- timed at full size by the exact cycle model (the layer's cycles, and every
  ResNet-20 and ResNet-18 binary 3x3 conv shape summed over the network);
- synthesized with its real memory contents: on an iCE40 (synth_ice40) on
  ResNet-20's 64->64 8x8 layer, and on a 7-series LUT6 part (synth_xilinx)
  on ResNet-18's 128->128 28x28 layer;
- placed with nextpnr-ice40 on a UP5K (else an HX8K, whose fmax the rows leave out) where ``to_place``
  chooses it: the fastest configuration of each engine that fits a UP5K, and
  at A = 1, tau = 5 each engine's LUT-cycles Pareto front;
- co-simulated (iCE40 points) at reduced height and width against the golden
  model, bit for bit, with the cycle model asserted equal to the simulation;
  and every ResNet-20 and ResNet-18 layer shape likewise (``shape_check_points``).

Measurements are cached one JSON line each (``--cache``), so an interrupted
sweep resumes where it stopped; ``rtl/results.json`` is rewritten atomically
from the cache after every measurement.
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from minisnn import figures, rtlmodel, rtlsim, rtlsynth
from minisnn.atomic import write_atomically
from minisnn.export import random_layer
from minisnn.rtlmodel import EngineConfig

PAPER_SPEEDUP_RESNET18 = 3.13  # Wang et al., FPGA runtime at tau = 5 (0.56 bit)
PAPER_SPEEDUP_RESNET34 = 3.33
TAUS = (4, 5, 6)
SWEEP_ACT_BITS = (1, 2, 4, 8)  # activation bits swept
# A measured at the headline's configurations only (_ice40_configs, _xilinx_configs): a
# synthesis or placement takes 1-10 minutes on a loaded 2-core machine
HEADLINE_ONLY_ACT_BITS = (2, 8)
VARIANTS = (("bnn", None), ("snn", "reg"), ("snn", "ram"), ("dec", None))  # (engine, table)
SIM_SIZE = 3  # simulated height and width: corners, edges and the centre
PNR_TIMEOUT = 900  # seconds per nextpnr run: a design that does not route by then is reported unplaced
PLACE_MARGIN = 0.9  # placed only up to this fraction of a device's LUTs: fuller designs route for hours
RESULTS_FORMAT = "minisnn-rtl-results-1"


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    c_in: int
    c_out: int
    height: int  # input
    width: int
    stride: int
    count: int  # occurrences in the network


RESNET20 = (  # the 18 binary 3x3 convs of a CIFAR ResNet-20
    Shape("resnet20 16->16 32x32", 16, 16, 32, 32, 1, 6),
    Shape("resnet20 16->32 32x32 s2", 16, 32, 32, 32, 2, 1),
    Shape("resnet20 32->32 16x16", 32, 32, 16, 16, 1, 5),
    Shape("resnet20 32->64 16x16 s2", 32, 64, 16, 16, 2, 1),
    Shape("resnet20 64->64 8x8", 64, 64, 8, 8, 1, 5),
)
RESNET18 = (  # the 16 binary 3x3 convs of ReActNet's ResNet-18 (one per block)
    Shape("resnet18 64->64 56x56", 64, 64, 56, 56, 1, 4),
    Shape("resnet18 64->128 56x56 s2", 64, 128, 56, 56, 2, 1),
    Shape("resnet18 128->128 28x28", 128, 128, 28, 28, 1, 3),
    Shape("resnet18 128->256 28x28 s2", 128, 256, 28, 28, 2, 1),
    Shape("resnet18 256->256 14x14", 256, 256, 14, 14, 1, 3),
    Shape("resnet18 256->512 14x14 s2", 256, 512, 14, 14, 2, 1),
    Shape("resnet18 512->512 7x7", 512, 512, 7, 7, 1, 3),
)
NETWORKS = {"resnet20": RESNET20, "resnet18": RESNET18}
ICE40_SHAPE = RESNET20[4]
XILINX_SHAPE = RESNET18[2]


@dataclasses.dataclass(frozen=True)
class Point:
    """One measured configuration on one target."""

    target: str  # "ice40", "xilinx" or "sim"
    shape: str
    engine: str
    table: str  # "reg"/"ram" for snn, "" otherwise
    tau: int  # 0 for bnn
    act_bits: int
    lanes: int
    dot9: int

    @property
    def cfg(self):
        return EngineConfig(self.engine, self.lanes, self.dot9, self.act_bits, self.table or "reg", "bits")

    def key(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _shape(name):
    return next(s for net in NETWORKS.values() for s in net if s.name == name)


def _balanced_dot9(tau, lanes, c_out):
    """Dot9 units whose 2^tau / D table steps take as long as the lanes' C_out / L groups."""
    return max(1, 2**tau * lanes // c_out)


def _ice40_configs(act_bits, tau):
    """iCE40 (ResNet-20 64->64 8x8) configurations (lanes, dot9) per variant at one A and
    tau: at A = 1, tau = 5 a family per engine (the area-time plot); elsewhere the
    configurations the equal-area comparison needs. The sub-bit RAM table is one block
    RAM per lane there (no LUT-RAM): 16 lanes at most."""
    c = ICE40_SHAPE.c_out
    if act_bits in HEADLINE_ONLY_ACT_BITS:  # the BNN sizes that may fit a UP5K; the sub-bit (8, 2), as at A = 4
        # (at A = 8 it needs 37 block RAMs at tau = 5, more than a UP5K's 30: tau = 4 and 6 not synthesized)
        return {("bnn", None): [(16, 16), (32, 32)] if act_bits == 2 else [(8, 8), (16, 16)],
                ("snn", "ram"): [(8, 2)] if act_bits == 2 or tau == 5 else [], ("snn", "reg"): [],
                ("dec", None): []}
    if act_bits == 1 and tau == 5:
        return {("bnn", None): [(4, 4), (8, 8), (16, 16), (32, 32)],
                ("snn", "ram"): [(8, 2), (8, 4), (16, 4), (16, 8)], ("snn", "reg"): [(8, 4)],
                ("dec", None): [(8, 8), (16, 16)]}
    return {("bnn", None): [(16, 16)] if act_bits == 1 else [(16, 16), (32, 32)],
            # at A > 1 a table entry is wider: (8, 2) is what fits a UP5K's block RAMs
            ("snn", "ram"): ([(l, _balanced_dot9(tau, l, c)) for l in (8, 16)] if act_bits == 1
                             else [(8, 2), (16, _balanced_dot9(tau, 16, c))]),
            ("snn", "reg"): [(8, _balanced_dot9(tau, 8, c))] if act_bits == 1 else [],
            ("dec", None): [(16, 16)] if act_bits == 1 else []}


XILINX_DOT9 = 8  # the equal-Dot9 comparison's D


def _xilinx_configs(act_bits, tau):
    """LUT6 (ResNet-18 128->128 28x28) configurations at D = XILINX_DOT9: the BNN, and
    the sub-bit RAM table engine at 1 (A = 1 only), 2, 4, 8 lanes per Dot9 unit (at
    A = 2 and 8, tau = 4 and 6: only the ratio A = 1 and 4 chose, 8 and 2)."""
    d = XILINX_DOT9
    full = act_bits == 1
    if act_bits in HEADLINE_ONLY_ACT_BITS:
        return {("bnn", None): [(d, d)], ("snn", "ram"): [(r * d, d) for r in {4: (8,), 5: (2, 4, 8), 6: (2,)}[tau]],
                ("snn", "reg"): [], ("dec", None): []}
    return {("bnn", None): [(d, d)], ("snn", "ram"): [(r * d, d) for r in ((1, 2, 4, 8) if full else (2, 4, 8))],
            ("snn", "reg"): [(d, d), (4 * d, d)] if full and tau == 5 else [],
            ("dec", None): [(d, d)] if full and tau == 5 else []}


def _grid_points(target, shape, act_bits, taus, configs):
    points = []
    for engine, table in VARIANTS:
        for tau in ((0,) if engine == "bnn" else taus):
            for lanes, dot9 in configs(act_bits, tau or 5)[(engine, table)]:
                if engine == "snn" and dot9 > 2**tau or lanes > shape.c_out:
                    continue
                points.append(Point(target, shape.name, engine, table or "", tau, act_bits, lanes, dot9))
    return points


def sweep_tiers(quick=False):
    """Synthesis points in tiers, most needed first: A = 1 at tau = 5; A = 1 at tau = 4, 6;
    A = 4; A = 2 and 8 at tau = 5; A = 2 and 8 at tau = 4, 6. A sweep synthesizes, places
    and simulates one tier before the next."""
    if quick:  # one configuration per variant, for a first look
        cfg = {("bnn", None): [(8, 8)], ("snn", "reg"): [(8, 4)], ("snn", "ram"): [(8, 4)],
               ("dec", None): [(8, 8)]}
        return [_grid_points("ice40", ICE40_SHAPE, 1, (5,), lambda a, t: cfg)]
    tiers, seen = [], set()
    for act_bits, taus in ((1, (5,)), (1, (4, 6)), (4, TAUS), (HEADLINE_ONLY_ACT_BITS, (5,)),
                           (HEADLINE_ONLY_ACT_BITS, (4, 6))):
        tier = [p for a in (act_bits if isinstance(act_bits, tuple) else (act_bits,))
                for p in (_grid_points("ice40", ICE40_SHAPE, a, taus, _ice40_configs)
                          + _grid_points("xilinx", XILINX_SHAPE, a, taus, _xilinx_configs))]
        tiers.append([p for p in tier if p not in seen])
        seen.update(tier)
    return tiers


def sweep_points(quick=False):
    return [p for tier in sweep_tiers(quick) for p in tier]


def grid_description(points):
    """The measured grid, as results.json records it: per target, variant and A, the
    taus and (lanes, dot9) configurations."""
    grid = {}
    for p in points:
        key = f"{p.target} {p.engine}{'-' + p.table if p.table else ''} A{p.act_bits}"
        entry = grid.setdefault(key, {"layer": p.shape, "taus": [], "lanes_dot9": [],
                                      "headline_only": p.act_bits in HEADLINE_ONLY_ACT_BITS})
        if p.tau and p.tau not in entry["taus"]:
            entry["taus"].append(p.tau)
        if [p.lanes, p.dot9] not in entry["lanes_dot9"]:
            entry["lanes_dot9"].append([p.lanes, p.dot9])
    return grid


def shape_check_points():
    """Simulation checks of every network shape (reduced height and width): the BNN and the
    RAM-table sub-bit engine at one configuration, A = 1, tau = 5 (the other variants are
    co-simulated on the iCE40 layer and on hypothesis-drawn layers by the tests)."""
    points = []
    for engine, table in (("bnn", ""), ("snn", "ram")):
        for net in NETWORKS.values():
            for shape in net:
                lanes, dot9 = (min(32, shape.c_out), 8) if engine == "snn" else (min(16, shape.c_out),) * 2
                points.append(Point("sim", shape.name, engine, table, 0 if engine == "bnn" else 5, 1, lanes, dot9))
    return points


# ------------------------------------------------------------------ measuring

def _layer(shape, point, height, width, seed):
    """A random layer of ``shape`` at height x width (seeded by the point, so every
    run of the sweep synthesizes the same memory contents)."""
    digest = hashlib.sha256(dataclasses.replace(point, target="").key().encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:4], "little")])
    # a bnn point draws its kernels as a tau = 9 codebook would (any of the 512 codes) and
    # drops the codebook: one seeded stream for every engine fixes the memories synthesized
    layer = random_layer(rng, shape.c_in, shape.c_out, point.tau or 9, height, width, shape.stride,
                         name=shape.name.replace(" ", "_"))
    if point.engine == "bnn":
        layer = dataclasses.replace(layer, kind="bnn", tau=None, codebook=None, idx=None)
    return rtlmodel.with_random_thresholds(layer, rng, point.act_bits), rng


def simulate_point(point, seed):
    """Bit-exact check at SIM_SIZE x SIM_SIZE (and model == simulation there)."""
    shape = _shape(point.shape)
    size_h, size_w = min(shape.height, SIM_SIZE), min(shape.width, SIM_SIZE)
    layer, rng = _layer(shape, point, size_h, size_w, seed)
    codes = rtlmodel.random_codes(rng, (shape.c_in, size_h, size_w), point.act_bits)
    start = time.time()
    result = rtlsim.check_layer(layer, codes, point.cfg)  # raises on any difference
    return {"sim_height": size_h, "sim_width": size_w, "cycles_sim": result.cycles,
            "sim_seconds": round(time.time() - start, 1)}


def _netlist_path(netlists, point):
    return os.path.join(netlists, hashlib.sha256(point.key().encode()).hexdigest()[:24] + ".json")


def synth_point(point, seed, netlists):
    """Synthesis counts of a point at full size; an ice40 netlist is kept in ``netlists``
    for place_point."""
    shape = _shape(point.shape)
    layer, _ = _layer(shape, point, shape.height, shape.width, seed)
    start = time.time()
    netlist = None
    if point.target == "ice40":
        os.makedirs(netlists, exist_ok=True)
        netlist = _netlist_path(netlists, point)
    stats = rtlsynth.synth(layer, point.cfg, point.target, netlist=netlist)
    row = {k: stats[k] for k in ("lut", "ff", "bram", "lutram")}
    row["synth_seconds"] = round(time.time() - start, 1)
    return row


def place_point(point, seed, netlists, counts, devices=tuple(rtlsynth.DEVICES)):
    """nextpnr on the first of ``devices`` the counts fit with a margin (UP5K, else HX8K),
    within PNR_TIMEOUT seconds; the netlist is deleted afterwards (re-synthesized if
    it is missing)."""
    netlist = _netlist_path(netlists, point)
    if not os.path.exists(netlist):
        synth_point(point, seed, netlists)
    result = {"device": None, "fmax_mhz": None}
    for device in devices:
        if _fits(counts, device):
            start = time.time()
            try:
                placed = rtlsynth.place(netlist, device, timeout=PNR_TIMEOUT)
            except subprocess.TimeoutExpired:  # a larger device would take longer still
                result["timeout"] = device
                break
            if placed is not None:
                result = dict(placed, pnr_seconds=round(time.time() - start, 1))
                break
    os.remove(netlist)
    return result


def _run(task):
    kind, point, seed, netlists, counts, *devices = task
    if kind == "sim":
        return simulate_point(point, seed)
    if kind == "synth":
        return synth_point(point, seed, netlists)
    return place_point(point, seed, netlists, counts, *devices)


def rtl_digest():
    """sha256 of the Verilog (engine, testbench, harness): measurements of other RTL do not count."""
    digest = hashlib.sha256()
    for path in rtlsim.sources() + [rtlsim.TESTBENCH, rtlsynth.WRAPPER]:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


class Cache:
    """Measurements, one JSON line each: {"kind", "point", "rtl", "result"}; lines of
    other RTL (another rtl_digest) are ignored."""

    def __init__(self, path):
        self.path, self.entries, self.rtl = path, {}, rtl_digest()
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    e = json.loads(line) if line.strip() else {}
                    if e.get("rtl") == self.rtl:
                        self.entries[(e["kind"], json.dumps(e["point"], sort_keys=True))] = e["result"]

    def get(self, kind, point):
        return self.entries.get((kind, point.key()))

    def put(self, kind, point, result):
        self.entries[(kind, point.key())] = result
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a") as f:  # one line per write: an interrupted run loses at most it
            f.write(json.dumps({"kind": kind, "point": dataclasses.asdict(point), "rtl": self.rtl,
                                "result": result}) + "\n")


def _pareto(points, results):
    """Points on the (lut, cycles) Pareto front, fastest first."""
    scored = sorted(points, key=lambda p: (_cycles(p), results[p]["lut"]))
    front, best_lut = [], math.inf
    for p in scored:
        if results[p]["lut"] < best_lut:
            front.append(p)
            best_lut = results[p]["lut"]
    return front


def _cycles(point):
    shape = _shape(point.shape)
    return rtlmodel.cycle_model(shape.c_in, shape.c_out, shape.height, shape.width, shape.stride, point.cfg,
                                point.tau or None)


def _fits(counts, device, margin=PLACE_MARGIN):
    return counts["lut"] <= margin * rtlsynth.DEVICES[device][2] and counts["bram"] <= rtlsynth.ICE40_BRAMS[device]


def to_place(points, synthesized, placed=None):
    """The ice40 points worth placing, (point, devices) per (engine, table, tau, A) group:
    at A = 1 and tau = 5 its LUT-cycles Pareto front (the area-time plots), on a UP5K or
    else an HX8K; elsewhere the fastest configuration that places on a UP5K (the
    equal-area comparison; an HX8K is a faster family, its fmax not comparable), passing
    over those ``placed`` (cached results) shows did not."""
    placed = placed or {}
    groups = {}
    for p in points:
        if p.target == "ice40":
            groups.setdefault((p.engine, p.table, p.tau, p.act_bits), []).append(p)
    chosen = []
    for (_, _, tau, act_bits), group in groups.items():
        fit = [p for p in group if any(_fits(synthesized[p], d) for d in rtlsynth.DEVICES)]
        if act_bits == 1 and tau in (0, 5):
            chosen += [(p, tuple(rtlsynth.DEVICES)) for p in _pareto(fit, synthesized)]
        else:
            up5k = [p for p in fit if _fits(synthesized[p], "up5k")
                    and placed.get(p, {"device": "up5k"})["device"] == "up5k"]
            chosen += [(p, ("up5k",)) for p in sorted(up5k, key=_cycles)[:1]]
    return chosen


class Progress:
    """One log line per finished measurement: its place in the tier and the sweep, elapsed minutes."""

    def __init__(self, total, log):
        self.total, self.done, self.log, self.start = total, 0, log, time.time()

    def __call__(self, stage, i, n, kind, point, result):
        self.done += 1
        self.log(f"[{stage} {i}/{n} | {self.done}/~{self.total} | {(time.time() - self.start) / 60:.1f} min] "
                 f"{kind} {point.target} {point.shape} {rtlmodel.describe(point.cfg, point.tau)}: {result}")


def run_sweep(tiers, cache, netlists, seed=0, workers=2, log=print, on_result=None, checks=()):
    """Measure tier after tier (skipping cached measurements): synthesis of each point;
    the ice40 points to_place() chooses, placed; the simulation check of each iCE40 point.
    The shape checks (every network layer shape simulated at reduced size) run after
    the A = 1 tiers."""
    todo = [("synth", p) for tier in tiers for p in tier]
    todo += [("sim", p) for tier in tiers for p in tier if p.target == "ice40"]
    todo += [("sim", p) for p in checks]
    progress = Progress(sum(1 for k, p in todo if cache.get(k, _sim(p) if k == "sim" else p) is None)
                        + sum(len(t) for t in tiers) // 4, log)
    for n, points in enumerate(tiers, 1):
        stage = f"tier {n}/{len(tiers)}"
        _execute([("synth", p, seed, netlists, None) for p in points if cache.get("synth", p) is None],
                 cache, workers, progress, on_result, stage + " synth")
        synthesized = {p: cache.get("synth", p) for p in points if p.target == "ice40"}
        while True:  # until every group's choice is placed (one that does not place passes its turn on)
            placed = {p: cache.get("place", p) for p in synthesized if cache.get("place", p) is not None}
            chosen = sorted(to_place(points, synthesized, placed), key=lambda c: synthesized[c[0]]["lut"])
            place = [("place", p, seed, netlists, synthesized[p], devices)  # smallest first: a long placement delays none
                     for p, devices in chosen if p not in placed]
            if not place:
                break
            _execute(place, cache, workers, progress, on_result, stage + " place")
        sims = [_sim(p) for p in points if p.target == "ice40"]
        _execute([("sim", p, seed, netlists, None) for p in sims if cache.get("sim", p) is None],
                 cache, workers, progress, on_result, stage + " sim")
        if n < len(tiers) and all(p.act_bits == 1 for t in tiers[:n] for p in t) and tiers[n][0].act_bits != 1:
            _execute([("sim", p, seed, None, None) for p in checks if cache.get("sim", p) is None],
                     cache, workers, progress, on_result, "shape checks")
    _execute([("sim", p, seed, None, None) for p in checks if cache.get("sim", p) is None],
             cache, workers, progress, on_result, "shape checks")


def _sim(point):
    return dataclasses.replace(point, target="sim")


def _execute(tasks, cache, workers, progress, on_result, stage):
    if not tasks:
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run, task): task for task in tasks}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            kind, point = futures[future][:2]
            result = future.result()
            cache.put(kind, point, result)
            progress(stage, done, len(tasks), kind, point, result)
            if on_result is not None:
                on_result()


# ------------------------------------------------------------------ results

def network_cycles(cfg, tau, network):
    """Cycles of one image through every binary conv of ``network`` (one engine
    configuration per layer shape), by the exact cycle model."""
    return sum(s.count * rtlmodel.cycle_model(s.c_in, s.c_out, s.height, s.width, s.stride, cfg, tau)
               for s in NETWORKS[network])


def ideal_speedup(network, tau, ratio):
    """The SNN-METHOD.md formula: sum HW C_in C_out / D over sum HW C_in max(2^tau / D, C_out / L), L = ratio D."""
    bnn = snn = 0.0
    for s in NETWORKS[network]:
        positions = ((s.height - 1) // s.stride + 1) * ((s.width - 1) // s.stride + 1)
        bnn += s.count * positions * s.c_in * s.c_out
        snn += s.count * positions * s.c_in * max(2**tau, s.c_out / ratio)
    return bnn / snn


ROW_FIELDS = ("engine", "layer", "c_in", "c_out", "height", "width", "tau", "act_bits", "lanes", "dot9_units",
              "table", "cycles", "lut", "ff", "bram", "lutram", "fmax_mhz", "target")
ICE40_LUT_BUDGET = rtlsynth.DEVICES["up5k"][2]  # the equal-area comparison: a UP5K's LUTs and block RAMs
ICE40_BRAM_BUDGET = rtlsynth.ICE40_BRAMS["up5k"]


def _up5k_fmax(placed):
    """fmax on a UP5K: the iCE40 rows compare one device (an HX8K is a faster family)."""
    return placed["fmax_mhz"] if placed and placed["device"] == "up5k" else None


def rows_from_cache(points, cache):
    """One row (ROW_FIELDS) per synthesized point: cycles at full size by the cycle model."""
    rows = []
    for p in points:
        synth = cache.get("synth", p)
        if synth is None:
            continue
        shape = _shape(p.shape)
        rows.append({
            "engine": p.engine, "layer": p.shape, "c_in": shape.c_in, "c_out": shape.c_out,
            "height": shape.height, "width": shape.width, "tau": p.tau or None, "act_bits": p.act_bits,
            "lanes": p.lanes, "dot9_units": p.dot9, "table": p.table or None, "cycles": _cycles(p),
            "lut": synth["lut"], "ff": synth["ff"], "bram": synth["bram"], "lutram": synth["lutram"],
            "fmax_mhz": _up5k_fmax(cache.get("place", p)), "target": p.target})
    return rows


def cosim_from_cache(points, cache):
    """The co-simulation checks run: each at reduced height and width, bit-exact against
    the golden model, with the simulated cycles (equal to the cycle model's there)."""
    checks = []
    for p in points:
        sim = cache.get("sim", p)
        if sim is not None:
            checks.append({"engine": p.engine, "layer": p.shape, "tau": p.tau or None, "act_bits": p.act_bits,
                           "lanes": p.lanes, "dot9_units": p.dot9, "table": p.table or None,
                           "sim_height": sim["sim_height"], "sim_width": sim["sim_width"],
                           "cycles_sim": sim["cycles_sim"]})
    return checks


def _variant(row):
    return row["engine"] + (f"-{row['table']}" if row["table"] else "")


def row_config(row):
    """The EngineConfig of a results row."""
    return EngineConfig(row["engine"], row["lanes"], row["dot9_units"], row["act_bits"], row["table"] or "reg",
                        "bits")


def resnet18_cycles(row):
    return network_cycles(row_config(row), row["tau"], "resnet18")


def time_us(row):
    """Microseconds per image on the row's layer at its placed fmax (None if not placed)."""
    return row["cycles"] / row["fmax_mhz"] if row["fmax_mhz"] else None


def headline(rows):
    """The comparisons the README quotes, per tau and A, computed from the rows alone
    (and the exact cycle model, for whole-network cycles):

    equal_dot9_speedup_resnet18: ResNet-18 cycles (all 16 binary convs) of the BNN
      with XILINX_DOT9 Dot9 units over those of the sub-bit engine with as many, at
      the lanes per Dot9 unit (equal_dot9_lanes_per_dot9) where the sub-bit engine's
      LUT6 area (LUT + LUT-RAM) x cycles on the LUT6 layer is lowest;
    equal_dot9_area_time_xilinx: the BNN's (LUT + LUT-RAM) x cycles over that sub-bit
      configuration's, on the LUT6 layer;
    equal_area_speedup_ice40: each engine on the iCE40 layer within a UP5K's LUTs and
      block RAMs, its fastest placed configuration (time = cycles / fmax): the BNN's
      time over the faster sub-bit table's (equal_area_best_ice40 lists each engine's)."""
    head = {k: {} for k in ("equal_dot9_speedup_resnet18", "equal_dot9_lanes_per_dot9",
                            "equal_dot9_area_time_xilinx", "equal_dot9_speedup_resnet18_by_ratio",
                            "equal_area_speedup_ice40", "equal_area_best_ice40")}
    head.update(dot9_units=XILINX_DOT9, ice40_lut_budget=ICE40_LUT_BUDGET, ice40_bram_budget=ICE40_BRAM_BUDGET,
                paper_speedup_resnet18=PAPER_SPEEDUP_RESNET18, paper_speedup_resnet34=PAPER_SPEEDUP_RESNET34)
    for tau in TAUS:
        for key in head:
            if isinstance(head[key], dict):
                head[key][str(tau)] = {}
        for act_bits in SWEEP_ACT_BITS:
            a = str(act_bits)
            lut6 = [r for r in rows if r["target"] == "xilinx" and r["act_bits"] == act_bits
                    and r["dot9_units"] == XILINX_DOT9]
            bnn = [r for r in lut6 if r["engine"] == "bnn" and r["lanes"] == XILINX_DOT9]
            snn = [r for r in lut6 if r["engine"] == "snn" and r["tau"] == tau]
            for key in ("equal_dot9_lanes_per_dot9", "equal_dot9_speedup_resnet18", "equal_dot9_area_time_xilinx",
                        "equal_area_speedup_ice40"):
                head[key][str(tau)][a] = None  # stays None where the rows do not decide it
            if bnn and snn:
                base = resnet18_cycles(bnn[0])
                area_time = lambda r: (r["lut"] + r["lutram"]) * r["cycles"]  # noqa: E731
                best = min(snn, key=area_time)
                head["equal_dot9_lanes_per_dot9"][str(tau)][a] = best["lanes"] // XILINX_DOT9
                head["equal_dot9_speedup_resnet18"][str(tau)][a] = round(base / resnet18_cycles(best), 3)
                head["equal_dot9_area_time_xilinx"][str(tau)][a] = round(area_time(bnn[0]) / area_time(best), 3)
                head["equal_dot9_speedup_resnet18_by_ratio"][str(tau)][a] = {
                    str(r["lanes"] // XILINX_DOT9): round(base / resnet18_cycles(r), 3)
                    for r in sorted(snn, key=lambda r: r["lanes"]) if r["table"] == "ram"}
            placed = [r for r in rows if r["target"] == "ice40" and r["act_bits"] == act_bits
                      and r["tau"] in (None, tau) and r["fmax_mhz"] and r["lut"] <= ICE40_LUT_BUDGET
                      and r["bram"] <= ICE40_BRAM_BUDGET]
            fastest = {}
            for r in placed:
                v = _variant(r)
                if v not in fastest or time_us(r) < time_us(fastest[v]):
                    fastest[v] = r
            if fastest:
                head["equal_area_best_ice40"][str(tau)][a] = {
                    v: dict({k: r[k] for k in ("lanes", "dot9_units", "lut", "bram", "fmax_mhz", "cycles")},
                            time_us=round(time_us(r), 2)) for v, r in sorted(fastest.items())}
            subbit = [time_us(r) for v, r in fastest.items() if v.startswith("snn")]
            if "bnn" in fastest and subbit:
                head["equal_area_speedup_ice40"][str(tau)][a] = round(time_us(fastest["bnn"]) / min(subbit), 3)
    return head


def write_results(path, tiers, cache, checks=()):
    """results.json from the cache, written atomically."""
    points = [p for tier in tiers for p in tier]
    rows = rows_from_cache(points, cache)
    result = {"format": RESULTS_FORMAT, "rtl": cache.rtl, "rows": rows, "headline": headline(rows),
              "grid": grid_description([p for p in points if cache.get("synth", p)]), "ice40_layer": ICE40_SHAPE.name, "xilinx_layer": XILINX_SHAPE.name,
              "cosim": cosim_from_cache([_sim(p) for p in points] + list(checks), cache),
              "sim_size": SIM_SIZE, "tools": tool_versions()}
    text = json.dumps(result, indent=1) + "\n"
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return result


@functools.lru_cache(maxsize=None)
def tool_versions():
    versions = {}
    for tool, flag in (("yosys", "-V"), ("nextpnr-ice40", "--version"), ("iverilog", "-V")):
        try:
            out = subprocess.run([rtlsim.require_tool(tool), flag], capture_output=True, text=True)
            versions[tool] = (out.stdout or out.stderr).splitlines()[0].strip()
        except (rtlsim.ToolMissing, IndexError):
            versions[tool] = None
    return versions


# ------------------------------------------------------------------ plots

_COLOURS = {"bnn": figures.PALETTE[0], "snn-reg": figures.PALETTE[1], "snn-ram": figures.PALETTE[2],
            "dec": figures.PALETTE[3]}


def _front(rows, x, y):
    """Pareto front of rows minimising both x and y, sorted by x."""
    front, best = [], math.inf
    for r in sorted(rows, key=lambda r: (x(r), y(r))):
        if y(r) < best:
            front.append(r)
            best = y(r)
    return front


def plot_results(result, out_dir, tau=5, act_bits=1):
    """PNG plots of area against time per engine: iCE40 (LUT4 vs microseconds) and
    LUT6 (LUTs + LUT-RAM vs cycles), the Pareto front of each engine; and the
    ResNet-18 equal-Dot9 speed-up against lanes per Dot9 with the paper's 3.13x."""
    rows = [r for r in result["rows"] if r["act_bits"] == act_bits and r["tau"] in (None, tau)]
    paths = []
    for target, x, xlabel, y, ylabel in (
            ("ice40", time_us, "time per image on the layer (microseconds, placed fmax)",
             lambda r: r["lut"], "SB_LUT4"),
            ("xilinx", lambda r: r["cycles"] / 1e3, "cycles per image on the layer (thousands)",
             lambda r: r["lut"] + r["lutram"], "LUT6 (logic + LUT-RAM)")):
        series = []
        for v, colour in _COLOURS.items():
            own = [r for r in rows if r["target"] == target and _variant(r) == v
                   and (target != "ice40" or r["fmax_mhz"])]
            if own:
                front = _front(own, x, y)
                series.append({"x": [math.log10(x(r)) for r in front], "y": [math.log10(y(r)) for r in front],
                               "label": v, "color": colour, "marker": True})
        if series:
            layer = result[f"{target}_layer"]
            path = os.path.join(out_dir, f"area_time_{target}_tau{tau}_a{act_bits}.png")
            figures.line_plot(series, path, title=f"{layer}, tau = {tau}, A = {act_bits}: area against time",
                              xlabel=f"log10 {xlabel}", ylabel=f"log10 {ylabel}")
            paths.append(path)
    return paths


def plot_speedup(result, out_dir, act_bits=1):
    """ResNet-18 equal-Dot9 speed-up against lanes per Dot9 unit, per tau, with the paper's 3.13x."""
    series = []
    by_tau = result["headline"]["equal_dot9_speedup_resnet18_by_ratio"]
    for i, tau in enumerate(sorted(by_tau, key=int)):
        by_ratio = by_tau[tau].get(str(act_bits), {})
        ratios = sorted(by_ratio, key=int)
        if ratios:
            series.append({"x": [math.log2(int(r)) for r in ratios], "y": [by_ratio[r] for r in ratios],
                           "label": f"tau = {tau}", "color": figures.PALETTE[i], "marker": True})
    if not series:
        return None
    series.append({"x": [0, 3], "y": [PAPER_SPEEDUP_RESNET18] * 2, "label": "paper, ResNet-18 (3.13x)",
                   "color": figures.PALETTE[6]})
    path = os.path.join(out_dir, f"speedup_resnet18_equal_dot9_a{act_bits}.png")
    figures.line_plot(series, path, title=f"ResNet-18 binary convs, A = {act_bits}: BNN over sub-bit cycles, "
                                          f"both with {XILINX_DOT9} Dot9 units",
                      xlabel="log2 (sub-bit lanes per Dot9 unit)", ylabel="speed-up (BNN cycles / sub-bit cycles)")
    return path


def plot_gain_by_act_bits(result, out_dir):
    """The headline's gains against activation bits A, per tau: LUT6 area x time at equal
    Dot9 units and the iCE40 equal-area speed-up (1 = parity)."""
    head, series = result["headline"], []
    for i, tau in enumerate(str(t) for t in TAUS):
        for key, label, marker in (("equal_dot9_area_time_xilinx", "LUT6 area x time", True),
                                   ("equal_area_speedup_ice40", "iCE40 equal area", False)):
            points = sorted((int(a), v) for a, v in head[key][tau].items() if v is not None)
            if points:
                series.append({"x": [math.log2(a) for a, _ in points], "y": [v for _, v in points],
                               "label": f"{label}, tau = {tau}", "color": figures.PALETTE[i], "marker": marker})
    if not series:
        return None
    series.append({"x": [0, math.log2(max(SWEEP_ACT_BITS))], "y": [1, 1], "label": "parity with the BNN",
                   "color": figures.PALETTE[6]})
    path = os.path.join(out_dir, "gain_by_act_bits.png")
    figures.line_plot(series, path, title="Sub-bit engine over the BNN against activation bits",
                      xlabel="log2 A (activation bits)", ylabel="BNN / sub-bit (area x time; time)")
    return path


def main_sweep(args, log=print):
    quick = not args.sweep
    tiers = sweep_tiers(quick=quick)
    checks = [] if quick else shape_check_points()
    cache = Cache(args.cache)

    def save():
        write_results(args.out, tiers, cache, checks)

    netlists = os.path.join(os.path.dirname(os.path.abspath(args.cache)), "netlists")
    run_sweep(tiers, cache, netlists, args.seed, args.workers, log, save, checks)
    result = write_results(args.out, tiers, cache, checks)
    if not quick:
        # per-A plots where A has the full grid (cycles do not depend on A, so one speed-up plot)
        for act_bits in SWEEP_ACT_BITS:
            if act_bits not in HEADLINE_ONLY_ACT_BITS:
                plot_results(result, args.plots, 5, act_bits)
        plot_speedup(result, args.plots, 1)
        plot_gain_by_act_bits(result, args.plots)
    return result


def _rounded(value):
    return None if value is None else round(value, 2)


def print_table(result, out=sys.stdout):
    print(f"{'target':<7}{'layer':<26}{'engine':<9}{'tau':>4}{'A':>3}{'L':>5}{'D':>4}{'cycles':>10}"
          f"{'LUT':>7}{'LUTRAM':>7}{'FF':>7}{'BRAM':>6}{'MHz':>7}{'us':>9}", file=out)
    for r in result["rows"]:
        print(f"{r['target']:<7}{r['layer']:<26}{_variant(r):<9}{r['tau'] or '-':>4}{r['act_bits']:>3}"
              f"{r['lanes']:>5}{r['dot9_units']:>4}{r['cycles']:>10}{r['lut']:>7}{r['lutram']:>7}{r['ff']:>7}"
              f"{r['bram']:>6}{_rounded(r['fmax_mhz']) or '-':>7}{_rounded(time_us(r)) or '-':>9}", file=out)
