"""The Verilog engines measured: ``python -m minisnn.bench rtl [--sweep]``.

Every configuration (engine, table, tau, activation bits A, lanes L, Dot9
units D) is
- co-simulated at reduced height and width against the golden model, with
  the exact cycle model asserted equal to the simulation there;
- timed at full size by the cycle model (every ResNet-20 and ResNet-18
  binary 3x3 conv shape, summed over each network);
- synthesized with its real memory contents: iCE40 (synth_ice40, then
  nextpnr-ice40 on a UP5K or HX8K for the configurations that decide the
  equal-area comparison) on ResNet-20's 64->64 8x8 layer, and a 7-series
  LUT6 part (synth_xilinx) on ResNet-18's 256->256 14x14 layer.

Measurements are cached one JSON line each (``--cache``), so an interrupted
sweep resumes where it stopped; ``rtl/results.json`` is rewritten from the
cache after every measurement.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from minisnn import figures, rtlmodel, rtlsim, rtlsynth
from minisnn.export import random_layer
from minisnn.rtlmodel import EngineConfig

PAPER_SPEEDUP_RESNET18 = 3.13  # Wang et al., FPGA runtime at tau = 5 (0.56 bit)
PAPER_SPEEDUP_RESNET34 = 3.33
TAUS = (4, 5, 6)
VARIANTS = (("bnn", None), ("snn", "reg"), ("snn", "ram"), ("dec", None))  # (engine, table)
SIM_SIZE = 3  # simulated height and width: corners, edges and the centre
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
XILINX_SHAPE = RESNET18[4]


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


def _variant_points(target, shape, act_bits, configs):
    """Points for every engine variant: configs maps variant -> [(lanes, dot9)]."""
    points = []
    for engine, table in VARIANTS:
        for tau in ((0,) if engine == "bnn" else TAUS):
            for lanes, dot9 in configs[(engine, table)]:
                if engine == "snn" and dot9 > 2**tau or lanes > shape.c_out:
                    continue
                points.append(Point(target, shape.name, engine, table or "", tau, act_bits, lanes, dot9))
    return points


def _configs(full):
    """(lanes, dot9) per variant: ``full`` for A = 1, a smaller family for the other A."""
    snn = [(d * r, d) for d in (2, 4, 8) for r in (1, 2, 4, 8)] if full else [(8, 2), (16, 4), (32, 8)]
    return {("bnn", None): [(d, d) for d in ((2, 4, 8, 16, 32) if full else (4, 8, 16))],
            ("snn", "reg"): snn, ("snn", "ram"): snn,
            ("dec", None): [(d, d) for d in ((2, 4, 8, 16) if full else (4, 8))]}


def _xilinx_configs(full):
    snn = [(8 * r, 8) for r in (1, 2, 4, 8)] + [(16, 4), (64, 16)] if full else [(8, 8), (32, 8)]
    return {("bnn", None): [(d, d) for d in ((4, 8, 16, 32, 64) if full else (8, 32))],
            ("snn", "reg"): snn, ("snn", "ram"): snn,
            ("dec", None): [(d, d) for d in ((8, 32) if full else (8,))]}


def sweep_points(quick=False):
    """Synthesis points in priority order: A = 1 (full grids) first, then A = 4, 8, 2."""
    if quick:  # a few configurations, for a first look
        cfg = {("bnn", None): [(8, 8)], ("snn", "reg"): [(16, 4)], ("snn", "ram"): [(16, 4)],
               ("dec", None): [(8, 8)]}
        return [p for p in _variant_points("ice40", ICE40_SHAPE, 1, cfg) if p.tau in (0, 5)]
    points = []
    for act_bits in (1, 4, 8, 2):
        full = act_bits == 1
        points += _variant_points("ice40", ICE40_SHAPE, act_bits, _configs(full))
        points += _variant_points("xilinx", XILINX_SHAPE, act_bits, _xilinx_configs(full))
    return points


def shape_check_points():
    """Simulation checks of every network shape: each variant at one configuration, A = 1 and 4."""
    points = []
    for net in NETWORKS.values():
        for shape in net:
            for act_bits in (1, 4):
                for engine, table in VARIANTS:
                    lanes, dot9 = (16, 4) if engine == "snn" else (8, 8)
                    points.append(Point("sim", shape.name, engine, table or "", 0 if engine == "bnn" else 5,
                                        act_bits, lanes, dot9))
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


def place_point(point, seed, netlists, counts):
    """nextpnr on the smallest iCE40 the counts fit (UP5K, else HX8K); the netlist is
    deleted afterwards (re-synthesized if it is missing)."""
    netlist = _netlist_path(netlists, point)
    if not os.path.exists(netlist):
        synth_point(point, seed, netlists)
    result = {"device": None, "fmax_mhz": None}
    for device in rtlsynth.DEVICES:
        if counts["lut"] <= rtlsynth.DEVICES[device][2] and counts["bram"] <= rtlsynth.ICE40_BRAMS[device]:
            start = time.time()
            placed = rtlsynth.place(netlist, device)
            if placed is not None:
                result = dict(placed, pnr_seconds=round(time.time() - start, 1))
                break
    os.remove(netlist)
    return result


def _run(task):
    kind, point, seed, netlists, counts = task
    if kind == "sim":
        return simulate_point(point, seed)
    if kind == "synth":
        return synth_point(point, seed, netlists)
    return place_point(point, seed, netlists, counts)


class Cache:
    """Measurements, one JSON line each: {"kind", "point", "result"}."""

    def __init__(self, path):
        self.path, self.entries = path, {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        e = json.loads(line)
                        self.entries[(e["kind"], json.dumps(e["point"], sort_keys=True))] = e["result"]

    def get(self, kind, point):
        return self.entries.get((kind, point.key()))

    def put(self, kind, point, result):
        self.entries[(kind, point.key())] = result
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a") as f:  # one line per write: an interrupted run loses at most it
            f.write(json.dumps({"kind": kind, "point": dataclasses.asdict(point), "result": result}) + "\n")


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


def run_sweep(points, cache, netlists, seed=0, workers=2, log=print, on_result=None):
    """Measure ``points`` (skipping cached ones): simulation check and synthesis of
    each; then, per (engine, table, tau, A) group of ice40 points, place the
    configurations on its LUT-cycles Pareto front that fit an iCE40."""
    todo = [("sim", dataclasses.replace(p, target="sim")) for p in points]
    todo += [("synth", p) for p in points]
    _execute([(k, p, seed, netlists, None) for k, p in todo if cache.get(k, p) is None],
             cache, workers, log, on_result)
    groups = {}
    for p in points:
        if p.target == "ice40":
            groups.setdefault((p.engine, p.table, p.tau, p.act_bits), []).append(p)
    synthesized = {p: cache.get("synth", p) for p in points if p.target == "ice40"}
    largest = max(d[2] for d in rtlsynth.DEVICES.values())
    place = [("place", p, seed, netlists, synthesized[p]) for group in groups.values()
             for p in _pareto(group, synthesized)
             if cache.get("place", p) is None and synthesized[p]["lut"] <= largest]
    _execute(place, cache, workers, log, on_result)


def _execute(tasks, cache, workers, log, on_result):
    if not tasks:
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run, task): task for task in tasks}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            kind, point = futures[future][:2]
            result = future.result()
            cache.put(kind, point, result)
            log(f"[{done}/{len(tasks)}] {kind} {point.target} {point.shape} "
                f"{rtlmodel.describe(point.cfg, point.tau)}: {result}")
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


def rows_from_cache(points, cache):
    rows = []
    for p in points:
        synth = cache.get("synth", p)
        if synth is None:
            continue
        shape = _shape(p.shape)
        sim = cache.get("sim", dataclasses.replace(p, target="sim")) or {}
        placed = cache.get("place", p) or {}
        cycles = _cycles(p)
        fmax = placed.get("fmax_mhz")
        rows.append({
            "engine": p.engine, "layer": p.shape, "c_in": shape.c_in, "c_out": shape.c_out,
            "height": shape.height, "width": shape.width, "stride": shape.stride, "tau": p.tau or None,
            "act_bits": p.act_bits, "lanes": p.lanes, "dot9_units": p.dot9, "table": p.table or None,
            "cycles": cycles, "lut": synth["lut"], "ff": synth["ff"], "bram": synth["bram"],
            "lutram": synth["lutram"], "fmax_mhz": fmax, "device": placed.get("device"), "target": p.target,
            "time_us": cycles / fmax if fmax else None,
            "weight_bits": rtlmodel.weight_bits(p.engine, shape.c_in, shape.c_out, p.tau or None),
            "sim_height": sim.get("sim_height"), "sim_width": sim.get("sim_width"),
            "cycles_sim": sim.get("cycles_sim"),
            "resnet18_cycles": network_cycles(p.cfg, p.tau or None, "resnet18"),
            "resnet20_cycles": network_cycles(p.cfg, p.tau or None, "resnet20"),
        })
    return rows


def _variant(row):
    return row["engine"] + (f"-{row['table']}" if row["table"] else "")


def headline(rows):
    """The comparisons the README quotes, per tau and activation bits (see rtl/README.md)."""
    head = {"equal_dot9_speedup_resnet18": {}, "equal_dot9_lanes_per_dot9": {},
            "equal_dot9_speedup_resnet18_by_ratio": {}, "equal_area_speedup_ice40": {},
            "equal_area_best_ice40": {}, "paper_speedup_resnet18": PAPER_SPEEDUP_RESNET18,
            "paper_speedup_resnet34": PAPER_SPEEDUP_RESNET34}
    dot9 = 8
    bnn = network_cycles(EngineConfig("bnn", dot9, dot9), None, "resnet18")
    for tau in TAUS:
        by_ratio = {r: bnn / network_cycles(EngineConfig("snn", r * dot9, dot9, table="ram"), tau, "resnet18")
                    for r in (1, 2, 4, 8, 16)}
        head["equal_dot9_speedup_resnet18_by_ratio"][str(tau)] = {str(r): round(v, 3) for r, v in by_ratio.items()}
        for key in ("equal_dot9_speedup_resnet18", "equal_dot9_lanes_per_dot9", "equal_area_speedup_ice40",
                    "equal_area_best_ice40"):
            head[key][str(tau)] = {}
        for act_bits in rtlmodel.ACT_BITS:
            # the lanes per Dot9 unit where the sub-bit engine's LUTs x cycles is lowest (LUT6, D = 8)
            snn = [r for r in rows if r["target"] == "xilinx" and r["engine"] == "snn" and r["tau"] == tau
                   and r["act_bits"] == act_bits and r["dot9_units"] == dot9]
            if snn:
                best = min(snn, key=lambda r: (r["lut"] + r["lutram"]) * r["cycles"])
                ratio = best["lanes"] // dot9
                head["equal_dot9_lanes_per_dot9"][str(tau)][str(act_bits)] = ratio
                head["equal_dot9_speedup_resnet18"][str(tau)][str(act_bits)] = round(
                    bnn / best["resnet18_cycles"], 3)
            # the fastest placed configuration of each engine on the same iCE40 (UP5K)
            placed = [r for r in rows if r["target"] == "ice40" and r["device"] == "up5k"
                      and r["act_bits"] == act_bits and r["tau"] in (None, tau)]
            fastest = {}
            for r in placed:
                v = _variant(r)
                if v not in fastest or r["time_us"] < fastest[v]["time_us"]:
                    fastest[v] = r
            if "bnn" in fastest:
                head["equal_area_best_ice40"][str(tau)][str(act_bits)] = {
                    v: {k: r[k] for k in ("lanes", "dot9_units", "lut", "bram", "fmax_mhz", "cycles", "time_us")}
                    for v, r in fastest.items()}
                subbit = [r for v, r in fastest.items() if v.startswith("snn")]
                if subbit:
                    head["equal_area_speedup_ice40"][str(tau)][str(act_bits)] = round(
                        fastest["bnn"]["time_us"] / min(r["time_us"] for r in subbit), 3)
    return head


def write_results(path, points, cache, checks=()):
    rows = rows_from_cache(points, cache)
    checked = [dict(dataclasses.asdict(p), **cache.get("sim", p)) for p in checks if cache.get("sim", p)]
    result = {"format": RESULTS_FORMAT, "rows": rows, "headline": headline(rows), "shape_checks": checked,
              "ice40_layer": ICE40_SHAPE.name, "xilinx_layer": XILINX_SHAPE.name,
              "sim_size": SIM_SIZE, "tools": tool_versions()}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return result


def tool_versions():
    import subprocess
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
            ("ice40", lambda r: r["time_us"], "time per image on the layer (microseconds, placed fmax)",
             lambda r: r["lut"], "SB_LUT4"),
            ("xilinx", lambda r: r["cycles"] / 1e3, "cycles per image on the layer (thousands)",
             lambda r: r["lut"] + r["lutram"], "LUT6 (logic + LUT-RAM)")):
        series = []
        for v, colour in _COLOURS.items():
            own = [r for r in rows if r["target"] == target and _variant(r) == v
                   and (target != "ice40" or r["time_us"])]
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
    series = []
    for i, (t, by_ratio) in enumerate(sorted(result["headline"]["equal_dot9_speedup_resnet18_by_ratio"].items())):
        ratios = sorted(by_ratio, key=int)
        series.append({"x": [math.log2(int(r)) for r in ratios], "y": [by_ratio[r] for r in ratios],
                       "label": f"tau = {t}", "color": figures.PALETTE[i], "marker": True})
    series.append({"x": [0, 4], "y": [PAPER_SPEEDUP_RESNET18] * 2, "label": "paper, ResNet-18 (3.13x)",
                   "color": figures.PALETTE[6]})
    path = os.path.join(out_dir, "speedup_resnet18_equal_dot9.png")
    figures.line_plot(series, path, title="ResNet-18 binary convs: sub-bit over BNN cycles, both with 8 Dot9 units",
                      xlabel="log2 (sub-bit lanes per Dot9 unit)", ylabel="speed-up (BNN cycles / sub-bit cycles)")
    return paths + [path]


def main_sweep(args, log=print):
    quick = not args.sweep
    points = sweep_points(quick=quick)
    checks = [] if quick else shape_check_points()
    cache = Cache(args.cache)

    def save():
        write_results(args.out, points, cache, checks)

    netlists = os.path.join(os.path.dirname(os.path.abspath(args.cache)), "netlists")
    run_sweep(points, cache, netlists, args.seed, args.workers, log, save)
    todo = [("sim", p, args.seed, None, None) for p in checks if cache.get("sim", p) is None]
    _execute(todo, cache, args.workers, log, save)
    result = write_results(args.out, points, cache, checks)
    if not quick:
        for tau in TAUS:
            for act_bits in rtlmodel.ACT_BITS:
                plot_results(result, args.plots, tau, act_bits)
    return result


def _rounded(value):
    return None if value is None else round(value, 2)


def print_table(result, out=sys.stdout):
    print(f"{'target':<7}{'layer':<26}{'engine':<9}{'tau':>4}{'A':>3}{'L':>5}{'D':>4}{'cycles':>10}"
          f"{'LUT':>7}{'LUTRAM':>7}{'FF':>7}{'BRAM':>6}{'MHz':>7}{'us':>9}", file=out)
    for r in result["rows"]:
        print(f"{r['target']:<7}{r['layer']:<26}{_variant(r):<9}{r['tau'] or '-':>4}{r['act_bits']:>3}"
              f"{r['lanes']:>5}{r['dot9_units']:>4}{r['cycles']:>10}{r['lut']:>7}{r['lutram']:>7}{r['ff']:>7}"
              f"{r['bram']:>6}{_rounded(r['fmax_mhz']) or '-':>7}{_rounded(r['time_us']) or '-':>9}", file=out)
