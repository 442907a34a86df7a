"""Bit-exact Python model of the streaming engines in rtl/ (conv_layer.v).

An engine configuration (:class:`EngineConfig`) picks the engine, its
lanes and Dot9 units, the activation width and the sub-bit table storage;
this module gives, for a layer record (minisnn.romlayer.BinaryConvLayer):

- the golden outputs: exact integer sums of the 3x3 conv (padding 1) of
  A-bit activations with the layer's +-1 kernels, and threshold bits;
- the engine's memory images (weights, codebook, thresholds) and the
  activation stream words;
- the exact cycle count of a run (:func:`cycle_model`), which the
  co-simulation tests keep equal to Icarus.

Activations are A-bit codes u in 0 .. 2^A - 1 standing for 2u - (2^A - 1):
A = 1 is the +-1 of a binary network (u = 1 is +1, as in the kernel codes).
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from minisnn import popcount
from minisnn.atomic import write_atomically
from minisnn.romlayer import BinaryConvLayer
from minisnn.subbit import codes_to_kernels

ENGINES = ("bnn", "snn", "dec")  # BNN, sub-bit (shared Dot9 table), decompress
TABLES = ("reg", "ram")
OUTPUTS = ("sums", "bits")
ACT_BITS = (1, 2, 4, 8)


def clog2(x):
    """Bits to count 0 .. x - 1 ($clog2 of Verilog)."""
    return max(0, (int(x) - 1).bit_length())


def ceil_div(a, b):
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    engine: str = "snn"
    lanes: int = 4
    dot9: int = 4  # Dot9 units
    act_bits: int = 1
    table: str = "reg"  # sub-bit table storage: registers + mux, or per-lane RAM
    out: str = "sums"  # output beats: lane sums or the C_out threshold bits of a pixel

    @property
    def k(self):
        """Input channels per stage: the BNN and decompress lanes own dot9 / lanes Dot9 units."""
        return 1 if self.engine == "snn" else self.dot9 // self.lanes


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Derived sizes of one layer on one engine (the localparams of conv_layer.v)."""

    groups: int  # output-channel groups of `lanes`
    ng: int  # input-channel groups (items per position)
    steps: int  # Dot9 steps per item (sub-bit)
    sum_w: int  # width of a sum and a threshold
    ho: int
    wo: int


def check_config(layer: BinaryConvLayer, cfg: EngineConfig):
    """ValueError naming the layer and value unless conv_layer.v can run ``layer`` with ``cfg``."""
    name = f"layer {layer.name}"
    if cfg.engine not in ENGINES:
        raise ValueError(f"{name}: engine must be one of {ENGINES}, found {cfg.engine!r}")
    if cfg.table not in TABLES or cfg.out not in OUTPUTS:
        raise ValueError(f"{name}: table must be one of {TABLES} and out one of {OUTPUTS}, "
                         f"found {cfg.table!r}, {cfg.out!r}")
    if not 1 <= cfg.act_bits <= 8:
        raise ValueError(f"{name}: act_bits must lie in 1..8, found {cfg.act_bits}")
    if cfg.lanes < 1 or cfg.dot9 < 1:
        raise ValueError(f"{name}: lanes and dot9 must be >= 1, found {cfg.lanes}, {cfg.dot9}")
    if layer.stride not in (1, 2):
        raise ValueError(f"{name}: stride must be 1 or 2, found {layer.stride}")
    if cfg.engine == "bnn":
        if cfg.dot9 % cfg.lanes:
            raise ValueError(f"{name}: the bnn engine needs dot9 a multiple of lanes, found {cfg.dot9}, {cfg.lanes}")
        return
    if layer.kind != "subbit":
        raise ValueError(f"{name}: the {cfg.engine} engine needs a sub-bit layer (tau, codebook, idx)")
    if cfg.engine == "dec" and cfg.dot9 % cfg.lanes:
        raise ValueError(f"{name}: the dec engine needs dot9 a multiple of lanes, found {cfg.dot9}, {cfg.lanes}")
    if cfg.engine == "snn" and (cfg.dot9 & (cfg.dot9 - 1) or cfg.dot9 > 2**layer.tau):
        raise ValueError(f"{name}: the snn engine needs dot9 a power of two <= 2^tau = {2**layer.tau}, "
                         f"found {cfg.dot9}")


def geometry(layer: BinaryConvLayer, cfg: EngineConfig) -> Geometry:
    check_config(layer, cfg)
    m = 2**cfg.act_bits - 1
    return Geometry(
        groups=ceil_div(layer.c_out, cfg.lanes), ng=ceil_div(layer.c_in, cfg.k),
        steps=2**layer.tau // cfg.dot9 if cfg.engine == "snn" else 1,
        sum_w=clog2(9 * m * layer.c_in + 2) + 1, ho=layer.out_height, wo=layer.out_width)


def verilog_params(layer: BinaryConvLayer, cfg: EngineConfig, prefix="layer"):
    """Parameters of conv_layer.v for ``layer`` with memory files named ``prefix``.*.hex."""
    check_config(layer, cfg)
    return {
        "ENGINE": ENGINES.index(cfg.engine), "C_IN": layer.c_in, "C_OUT": layer.c_out,
        "H": layer.height, "W": layer.width, "STRIDE": layer.stride, "A": cfg.act_bits,
        "TAU": layer.tau or 1, "LANES": cfg.lanes, "DOT9": cfg.dot9,
        "TABLE_RAM": int(cfg.table == "ram"), "HAS_THRESH": int(layer.threshold is not None),
        "OUT_SUMS": int(cfg.out == "sums"),
        "WEIGHT_FILE": f'"{prefix}.weight.hex"', "CODEBOOK_FILE": f'"{prefix}.codebook.hex"',
        "THRESH_FILE": f'"{prefix}.thresh.hex"',
    }


# ------------------------------------------------------------------ golden model

def check_activations(layer: BinaryConvLayer, codes, act_bits):
    """Activation codes as int64 (C_in, H, W); ValueError naming the layer otherwise."""
    a = np.asarray(codes)
    shape = (layer.c_in, layer.height, layer.width)
    if a.shape != shape:
        raise ValueError(f"layer {layer.name}: activations must have shape {shape}, found {a.shape}")
    if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= 2**act_bits)):
        raise ValueError(f"layer {layer.name}: activations must be integer codes in 0..{2**act_bits - 1}, "
                         f"found {a.dtype} {a.min() if a.size else ''}..{a.max() if a.size else ''}")
    return a.astype(np.int64)


def golden_sums(layer: BinaryConvLayer, codes, act_bits):
    """Exact sums int64 (C_out, Ho, Wo): 3x3 conv, padding 1, of the values 2u - (2^A - 1)
    with the +-1 kernels kernel_codes (plain im2col, no shortcuts)."""
    u = check_activations(layer, codes, act_bits)
    values = np.pad(2 * u - (2**act_bits - 1), ((0, 0), (1, 1), (1, 1)))
    s, ho, wo = layer.stride, layer.out_height, layer.out_width
    cols = np.stack([values[:, dy:dy + s * (ho - 1) + 1:s, dx:dx + s * (wo - 1) + 1:s]
                     for dy in range(3) for dx in range(3)], axis=1)  # (C_in, 9, Ho, Wo)
    kernels = codes_to_kernels(layer.kernel_codes, np.int64).reshape(layer.c_out, -1)  # (C_out, C_in*9)
    return (kernels @ cols.reshape(-1, ho * wo)).reshape(layer.c_out, ho, wo)


def golden_bits(layer: BinaryConvLayer, sums):
    """Threshold bits uint8 (C_out, Ho, Wo) of ``sums``, or None without thresholds."""
    if layer.threshold is None:
        return None
    flip = np.zeros(layer.c_out, bool) if layer.flip is None else np.asarray(layer.flip, bool)
    return popcount.apply_thresholds(np.asarray(sums)[None], np.asarray(layer.threshold, np.int64), flip)[0]


def codes_from_signs(signs):
    """A = 1 codes (1 for +1) of a {-1, +1} array."""
    return (np.asarray(signs) > 0).astype(np.uint8)


# ------------------------------------------------------------------ memory images

def _hex_lines(words, width):
    digits = max(1, ceil_div(width, 4))
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def _write(path, text):
    # scratch memory images for one simulation: atomic, no need to survive a power loss
    write_atomically(path, lambda f: f.write(text.encode("ascii")), durable=False)


def _pack(fields, width):
    """One big-int word from ``fields`` (lowest first), each ``width`` bits."""
    word = 0
    for i, f in enumerate(fields):
        word |= int(f) << (i * width)
    return word


def weight_words(layer: BinaryConvLayer, cfg: EngineConfig):
    """Weight ROM words (address g*groups + j) and their width: lane l, channel k of
    the group in field l*K + k, a 9-bit kernel code (bnn) or a tau-bit index."""
    geo = geometry(layer, cfg)
    k, lanes = cfg.k, cfg.lanes
    table = np.asarray(layer.kernel_codes if cfg.engine == "bnn" else layer.idx, np.int64)
    width = 9 if cfg.engine == "bnn" else layer.tau
    padded = np.zeros((geo.groups * lanes, geo.ng * k), np.int64)
    padded[:layer.c_out, :layer.c_in] = table
    words = []
    for g in range(geo.ng):
        for j in range(geo.groups):
            block = padded[j * lanes:(j + 1) * lanes, g * k:(g + 1) * k]  # (lanes, K)
            words.append(_pack(block.ravel(), width))
    return words, lanes * k * width


def threshold_words(layer: BinaryConvLayer, cfg: EngineConfig):
    """Threshold ROM words (address j): lane l = {flip, flip ? ~thr : thr} in sum_w + 1
    bits (lane_acc.v compares sum ^ flip with it). Thresholds are clamped to
    +-(max |sum| + 1), which keeps every comparison."""
    geo = geometry(layer, cfg)
    bound = 9 * (2**cfg.act_bits - 1) * layer.c_in + 1
    thr = np.zeros(geo.groups * cfg.lanes, np.int64)
    flip = np.zeros(geo.groups * cfg.lanes, np.int64)
    thr[:layer.c_out] = np.clip(np.asarray(layer.threshold, np.int64), -bound, bound)
    if layer.flip is not None:
        flip[:layer.c_out] = np.asarray(layer.flip, bool)
    field = ((np.where(flip == 1, ~thr, thr)) & ((1 << geo.sum_w) - 1)) | (flip << geo.sum_w)
    return [_pack(field[j * cfg.lanes:(j + 1) * cfg.lanes], geo.sum_w + 1) for j in range(geo.groups)]


def write_memories(layer: BinaryConvLayer, cfg: EngineConfig, directory, prefix="layer"):
    """Write ``prefix``.weight.hex, .codebook.hex (snn, dec) and .thresh.hex (with
    thresholds) as conv_layer.v reads them; return the paths."""
    geo = geometry(layer, cfg)
    paths = []
    words, width = weight_words(layer, cfg)
    paths.append(os.path.join(directory, f"{prefix}.weight.hex"))
    _write(paths[-1], _hex_lines(words, width))
    if cfg.engine != "bnn":
        codebook = np.asarray(layer.codebook, np.int64)
        if cfg.engine == "snn":  # step s: unit u's kernel in field u
            words = [_pack(codebook[s * cfg.dot9:(s + 1) * cfg.dot9], 9) for s in range(geo.steps)]
            text = _hex_lines(words, 9 * cfg.dot9)
        else:
            text = _hex_lines(codebook, 9)
        paths.append(os.path.join(directory, f"{prefix}.codebook.hex"))
        _write(paths[-1], text)
    if layer.threshold is not None:
        paths.append(os.path.join(directory, f"{prefix}.thresh.hex"))
        _write(paths[-1], _hex_lines(threshold_words(layer, cfg), cfg.lanes * (geo.sum_w + 1)))
    return paths


def stream_words(codes, act_bits):
    """Input beats of an image (C_in, H, W) of codes: one word per pixel in raster
    order, channel c in bits [c*A +: A]."""
    c = codes.shape[0]
    flat = np.asarray(codes, np.int64).reshape(c, -1).T  # (H*W, C_in)
    return [_pack(pixel, act_bits) for pixel in flat]


def parse_beats(layer: BinaryConvLayer, cfg: EngineConfig, beats):
    """(sums int64 (C_out, Ho, Wo) or None, bits uint8 (C_out, Ho, Wo) or None) of one
    image's output beats (ints, in order); ValueError on a wrong count."""
    geo = geometry(layer, cfg)
    positions = geo.ho * geo.wo
    expected = positions * (geo.groups if cfg.out == "sums" else 1)
    if len(beats) != expected:
        raise ValueError(f"layer {layer.name}: expected {expected} output beats, found {len(beats)}")
    if cfg.out == "bits":
        bits = np.array([[(b >> o) & 1 for o in range(layer.c_out)] for b in beats], np.uint8)
        return None, bits.T.reshape(layer.c_out, geo.ho, geo.wo)
    field = geo.sum_w + 1
    sums = np.zeros((geo.groups * cfg.lanes, positions), np.int64)
    bits = np.zeros_like(sums, dtype=np.uint8)
    for n, beat in enumerate(beats):
        p, j = divmod(n, geo.groups)
        for l in range(cfg.lanes):
            f = (beat >> (l * field)) & ((1 << field) - 1)
            s = f & ((1 << geo.sum_w) - 1)
            sums[j * cfg.lanes + l, p] = s - (1 << geo.sum_w) if s >> (geo.sum_w - 1) else s
            bits[j * cfg.lanes + l, p] = f >> geo.sum_w
    shape = (layer.c_out, geo.ho, geo.wo)
    return sums[:layer.c_out].reshape(shape), (bits[:layer.c_out].reshape(shape)
                                               if layer.threshold is not None else None)


# ------------------------------------------------------------------ cycle model

def cycle_model(c_in, c_out, height, width, stride, cfg: EngineConfig, tau=None, images=1):
    """Exact cycles of conv_layer.v from the first accepted input beat to the last
    output beat (inclusive) for ``images`` images streamed back to back with
    tvalid and tready always high.

    The writer takes a pixel every NG cycles and starts an input row only when
    one of the 3 + stride ring rows is free; a stage may read an item only when
    its output row's input rows are complete. Stages: BNN / decompress GROUPS
    cycles per item; sub-bit max(STEPS, GROUPS), except an image's first
    (STEPS, Dot9 only) and a drain stage (GROUPS, lanes only) after its last."""
    layer = BinaryConvLayer(name="model", c_in=c_in, c_out=c_out, height=height, width=width,
                            stride=stride, kernel_codes=np.zeros((c_out, c_in), np.uint16),
                            scale=None, shift=None, kind="bnn" if tau is None else "subbit", tau=tau)
    geo = geometry(layer, cfg)
    snn = cfg.engine == "snn"
    sl = max(geo.steps, geo.groups) if snn else geo.groups
    ring = 3 + stride
    row_cycles = width * geo.ng
    accepts = []  # cycle each global input row's first pixel is accepted
    releases = []  # (rows freed so far, first cycle the writer sees it)

    def row_complete(y):
        """First cycle the reader sees global input row y complete."""
        while len(accepts) <= y:
            r = len(accepts)
            t = accepts[-1] + row_cycles if accepts else 0
            if r - ring + 1 > 0:
                t = max(t, next(seen for freed, seen in releases if freed >= r - ring + 1))
            accepts.append(t)
        return accepts[y] + row_cycles + 1

    free_at = 0  # first cycle no stage runs
    freed = 0
    items = geo.wo * geo.ng
    for n in range(images):
        for oy in range(geo.ho):
            start = max(free_at, row_complete(n * height + min(oy * stride + 2, height) - 1))
            first_len = geo.steps if snn and oy == 0 else sl
            last = start if items == 1 else start + first_len + (items - 2) * sl
            freed = n * height + (height if oy == geo.ho - 1 else (oy + 1) * stride - 1)
            releases.append((freed, last + 1))
            free_at = last + (first_len if items == 1 else sl)
        if snn:  # drain: lanes of the image's last item
            last, free_at = free_at, free_at + geo.groups
        end = last + geo.groups + 5 + (1 if snn and cfg.table == "ram" else 0)
    return end + 1


def weight_bits(engine, c_in, c_out, tau):
    """Bits of weight memory: 9 per kernel (bnn), tau per kernel plus the codebook."""
    return 9 * c_in * c_out if engine == "bnn" else tau * c_in * c_out + 9 * 2**tau


def random_codes(rng, shape, act_bits):
    """Random activation codes uint8 in 0 .. 2^act_bits - 1."""
    return rng.integers(0, 2**act_bits, size=shape).astype(np.uint8)


def with_random_thresholds(layer: BinaryConvLayer, rng, act_bits):
    """``layer`` with thresholds spread over the sum range of act_bits activations."""
    bound = 9 * (2**act_bits - 1) * layer.c_in
    return dataclasses.replace(layer, threshold=rng.integers(-bound - 2, bound + 3, layer.c_out).astype(np.int32),
                               flip=rng.random(layer.c_out) < 0.5)


def describe(cfg: EngineConfig, tau: Optional[int] = None):
    """Short label of a configuration, e.g. 'snn t5 A1 L16 D4 ram'."""
    parts = [cfg.engine] + ([f"t{tau}"] if tau and cfg.engine != "bnn" else [])
    parts += [f"A{cfg.act_bits}", f"L{cfg.lanes}", f"D{cfg.dot9}"]
    return " ".join(parts + ([cfg.table] if cfg.engine == "snn" else []))
