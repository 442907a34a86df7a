"""Compiled binary layers -> ROM files for the Verilog engines (rtl/*.v).

``python -m minisnn.export --rom CHECKPOINT --out DIR`` writes, per binary
3x3 layer (minisnn.romlayer.BinaryConvLayer), ``$readmemh`` text files (one
hex word per line, no address markers) and ``DIR/manifest.json`` (format
``minisnn-rom-2``) with each layer's kind ("bnn" or "subbit"), shapes, word
widths, address orders and the sha256 of every file. ``--random`` writes a
demo layer instead. Manifests of format ``minisnn-rom-1`` (no kind: a null
tau meant a bnn layer) are still read.

``read_layer`` reads a layer back trusting nothing: the manifest is
validated field by field, file names must name regular files inside the
ROM directory, sizes are bounded before reading, hashes are checked, and
every word must be what ``$readmemh`` reads unambiguously here: exactly the
hex digits of its declared width, one per line, each line ending in a
newline (so ``0x1f``, ``-1``, ``+1f``, ``1_f`` or ``x`` are refused naming
the file and line); NaN scale or shift bit patterns are refused too. The
Verilog co-simulation (minisnn.rtlsim) reads its layers through it.

Files per layer NAME (address orders as the RTL reads them):
  NAME.kernel.hex     c_in*c_out words, 9 bits, kernel code, address i*c_out + o
  NAME.codebook.hex   2**tau words, 9 bits, kernel code, address s   (sub-bit)
  NAME.idx.hex        c_in*c_out words, tau bits, address i*c_out + o (sub-bit)
  NAME.threshold.hex  c_out words, 32-bit two's complement, address o
  NAME.flip.hex       c_out words, 1 bit (1: bit = sum <= threshold), address o
  NAME.scale.hex, NAME.shift.hex   c_out words, float32 bit patterns, address o
Kernel codes: bit j = element (j // 3, j % 3), 1 = +1 (minisnn.subbit).
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import hashlib
import json
import os
import pathlib
import re
import sys

import numpy as np

from minisnn.atomic import write_atomically
from minisnn.checkpoint import read_json
from minisnn.romlayer import TAU_RANGE, BinaryConvLayer, check_kind, check_layer
from minisnn.subbit import NUM_KERNELS

MANIFEST = "manifest.json"
FORMAT = "minisnn-rom-2"
FORMAT_1 = "minisnn-rom-1"  # still read: its layers had no kind, a null tau meant a bnn layer
_ADDR_IO = "i * c_out + o"
_ADDR_O = "o"
MAX_CHANNELS = 1 << 16  # bound on c_in, c_out, height and width read from a manifest
_HEX = re.compile(r"[0-9a-fA-F]+")
_NIBBLE = np.zeros(256, np.uint8)  # hex digit character -> value
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def random_layer(rng, c_in, c_out, tau, height=8, width=8, stride=1, name="random", thresholds=True):
    """A sub-bit layer with a random codebook of 2**tau distinct codes, random
    indices, scale/shift and (if ``thresholds``) thresholds and flips."""
    check_kind("subbit", tau, f"layer {name}")
    codebook = rng.choice(NUM_KERNELS, size=2**tau, replace=False).astype(np.uint16)
    idx = rng.integers(0, 2**tau, size=(c_out, c_in)).astype(np.uint16)
    bound = 9 * c_in
    return BinaryConvLayer(
        name=name, c_in=c_in, c_out=c_out, height=height, width=width, stride=stride,
        kernel_codes=codebook[idx],
        scale=rng.uniform(0.01, 1.0, size=c_out).astype(np.float32),
        shift=rng.normal(size=c_out).astype(np.float32),
        kind="subbit", tau=tau, codebook=codebook, idx=idx,
        threshold=rng.integers(-bound, bound + 1, size=c_out).astype(np.int32) if thresholds else None,
        flip=rng.random(c_out) < 0.5 if thresholds else None,
    )


def _formats(c_in, c_out, kind, tau):
    """role -> (width, depth, address order) of every ROM a layer of this kind and these
    sizes can have."""
    formats = {"kernel": (9, c_in * c_out, _ADDR_IO), "threshold": (32, c_out, _ADDR_O),
               "flip": (1, c_out, _ADDR_O), "scale": (32, c_out, _ADDR_O),
               "shift": (32, c_out, _ADDR_O)}
    if kind == "subbit":
        formats.update(codebook=(9, 2**tau, "s"), idx=(tau, c_in * c_out, _ADDR_IO))
    return formats


def _rom_specs(layer):
    """(role, words as unsigned ints, width, address order) for every ROM of a layer."""
    words = {"kernel": np.asarray(layer.kernel_codes).T.ravel()}
    if layer.kind == "subbit":
        words["codebook"] = np.asarray(layer.codebook).ravel()
        words["idx"] = np.asarray(layer.idx).T.ravel()
    if layer.threshold is not None:
        flip = np.zeros(layer.c_out, bool) if layer.flip is None else np.asarray(layer.flip, bool)
        words["threshold"] = np.asarray(layer.threshold, np.int32).view(np.uint32)
        words["flip"] = flip.astype(np.uint32)
    for role in ("scale", "shift"):
        value = getattr(layer, role)
        if value is not None:
            words[role] = np.asarray(value, np.float32).view(np.uint32)
    formats = _formats(layer.c_in, layer.c_out, layer.kind, layer.tau)
    return [(role, w, formats[role][0], formats[role][2]) for role, w in words.items()]


def _hex_text(words, digits):
    """``digits`` lower-case hex digits and a newline per word (numpy: a 512 x 512 layer
    writes in milliseconds)."""
    shifts = 4 * np.arange(digits - 1, -1, -1, dtype=np.uint64)
    nibbles = (np.asarray(words, np.uint64)[:, None] >> shifts) & np.uint64(15)
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles.astype(np.intp)]
    lines = np.concatenate([chars, np.full((len(chars), 1), ord("\n"), np.uint8)], axis=1)
    return lines.tobytes()


def _parse_words(raw, digits):
    """int64 words of ``raw`` if every line is exactly ``digits`` hex digits, else None."""
    if not re.fullmatch(rb"(?:[0-9a-fA-F]{%d}\n)*" % digits, raw):
        return None
    chars = np.frombuffer(raw, np.uint8).reshape(-1, digits + 1)[:, :digits]
    values = _NIBBLE[chars].astype(np.int64)
    return values @ (np.int64(1) << (4 * np.arange(digits - 1, -1, -1, dtype=np.int64)))


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export_layer(layer: BinaryConvLayer, out_dir):
    """Write the ROM files of one layer into ``out_dir``; return its manifest entry."""
    check_layer(layer)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for role, words, width, order in _rom_specs(layer):
        fname = f"{layer.name}.{role}.hex"
        digits = (width + 3) // 4
        text = _hex_text(words, digits)
        write_atomically(pathlib.Path(out_dir, fname), lambda f: f.write(text))
        files[role] = {
            "file": fname, "width": width, "depth": int(words.size), "address": order,
            "sha256": _sha256(os.path.join(out_dir, fname)),
        }
    return {
        "name": layer.name, "c_in": layer.c_in, "c_out": layer.c_out,
        "height": layer.height, "width": layer.width, "stride": layer.stride,
        "out_height": layer.out_height, "out_width": layer.out_width,
        "kind": layer.kind, "tau": layer.tau, "files": files,
    }


def write_manifest(out_dir, entries):
    """Write ``manifest.json`` listing the given layer entries; return its path."""
    path = os.path.join(out_dir, MANIFEST)
    manifest = {
        "format": FORMAT,
        "kernel_code": "bit j = element (j // 3, j % 3), 1 = +1",
        "threshold_rule": "bit = sum <= threshold if flip else sum >= threshold",
        "layers": entries,
    }
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    write_atomically(pathlib.Path(path), lambda f: f.write(text.encode("utf-8")))
    return path


def _rom_path(manifest_dir, name, where):
    """The regular file ``name`` names inside ``manifest_dir``, or ValueError: no
    absolute paths, no ``..``, no subdirectories, no symlinks leading out, no devices."""
    inside = False
    if isinstance(name, str) and name not in ("", ".", "..") and os.path.basename(name) == name:
        path = os.path.join(manifest_dir, name)
        real = os.path.realpath(path)
        inside = (os.path.dirname(real) == os.path.realpath(manifest_dir)
                  and os.path.isfile(real))
    if not inside:
        raise ValueError(f"{where}.file is {name!r}, not the name of a file in the ROM directory "
                         f"{manifest_dir}")
    return path


def _raise_at_first_bad_line(path, raw, width, digits):
    """ValueError naming the first line of ``raw`` that is not one ``width``-bit word
    (_parse_words found one)."""
    lines = raw.split(b"\n")
    if lines[-1]:
        raise ValueError(f"ROM file {path}, line {len(lines)}: no newline at the end of the "
                         "last word")
    for n, line in enumerate(lines[:-1]):
        text = line.decode("latin1")
        if len(text) != digits or not _HEX.fullmatch(text):
            raise ValueError(f"ROM file {path}, line {n + 1}: {text!r} is not a {width}-bit "
                             f"$readmemh word: {digits} hex digit{'s' if digits > 1 else ''} "
                             "and nothing else")
        if int(text, 16) >= 2**width:
            raise ValueError(f"ROM file {path}, line {n + 1}: word {int(text, 16):#x} exceeds "
                             f"the {width}-bit width")


def _read_rom(manifest_dir, spec, where):
    """Words of one ROM file as int64: the file confined to ``manifest_dir``, its size
    bounded before reading, its sha256 checked, each line exactly one word of
    ``spec["width"]`` bits in ``(width + 3) // 4`` hex digits."""
    path = _rom_path(manifest_dir, spec["file"], where)
    width, depth = spec["width"], spec["depth"]
    digits = (width + 3) // 4
    limit = 2 * depth * (digits + 1) + 1024  # twice the exact size: room to name the bad line
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError(f"ROM file {path}: {size} bytes, far more than {depth} words of "
                         f"{digits} hex digits need")
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    found = hashlib.sha256(raw).hexdigest()
    if found != spec["sha256"]:
        raise ValueError(f"ROM file {path}: sha256 {found} differs from the manifest's {spec['sha256']} (corrupted?)")
    words = _parse_words(raw, digits)
    if words is None:
        _raise_at_first_bad_line(path, raw, width, digits)
    wide = np.flatnonzero(words >= 2**width)
    if wide.size:
        raise ValueError(f"ROM file {path}, line {wide[0] + 1}: word {words[wide[0]]:#x} exceeds "
                         f"the {width}-bit width")
    if len(words) != depth:
        raise ValueError(f"ROM file {path}: expected {depth} words, found {len(words)}")
    return words


def _field(entry, key, where):
    if key not in entry:
        raise ValueError(f"{where}: missing field {key!r}")
    return entry[key]


def _integer(entry, key, where, low, high):
    value = _field(entry, key, where)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{where}: {key} must be an integer in {low}..{high}, found {value!r}")
    return value


def _check_entry(entry, where, fmt):
    """Validate one manifest layer entry of format ``fmt`` field by field (ValueError
    naming the field); return the layer's kind."""
    c_in = _integer(entry, "c_in", where, 1, MAX_CHANNELS)
    c_out = _integer(entry, "c_out", where, 1, MAX_CHANNELS)
    height = _integer(entry, "height", where, 1, MAX_CHANNELS)
    width = _integer(entry, "width", where, 1, MAX_CHANNELS)
    stride = _field(entry, "stride", where)
    if type(stride) is not int or stride not in (1, 2):
        raise ValueError(f"{where}: stride must be 1 or 2, found {stride!r}")
    tau = _field(entry, "tau", where)
    low, high = TAU_RANGE
    if tau is not None and (type(tau) is not int or not low <= tau <= high):
        raise ValueError(f"{where}: tau must be null or an integer in {low}..{high}, found {tau!r}")
    kind = ("bnn" if tau is None else "subbit") if fmt == FORMAT_1 else _field(entry, "kind", where)
    check_kind(kind, tau, where)
    for key, size in (("out_height", height), ("out_width", width)):
        if key in entry and entry[key] != (size - 1) // stride + 1:
            raise ValueError(f"{where}: {key} is {entry[key]!r}, expected {(size - 1) // stride + 1}")
    files = _field(entry, "files", where)
    if not isinstance(files, dict):
        raise ValueError(f"{where}: files must be an object, found {type(files).__name__}")
    formats = _formats(c_in, c_out, kind, tau)
    required = ["kernel"] + (["codebook", "idx"] if kind == "subbit" else [])
    required += ["threshold", "flip"] if "threshold" in files or "flip" in files else []
    for role in required:
        if role not in files:
            raise ValueError(f"{where}: files lacks {role!r}")
    for role, spec in files.items():
        if role not in formats:
            raise ValueError(f"{where}: unknown ROM role {role!r}; expected one of {sorted(formats)}")
        here = f"{where}: files.{role}"
        if not isinstance(spec, dict):
            raise ValueError(f"{here} must be an object, found {type(spec).__name__}")
        for key, want in zip(("width", "depth", "address"), formats[role]):
            if _field(spec, key, here) != want:
                raise ValueError(f"{here}.{key} is {spec[key]!r}, expected {want!r}")
        if not isinstance(_field(spec, "sha256", here), str) or not _SHA256.fullmatch(spec["sha256"]):
            raise ValueError(f"{here}.sha256 must be 64 hex digits, found {spec['sha256']!r}")
        if not isinstance(_field(spec, "file", here), str):
            raise ValueError(f"{here}.file must be a file name, found {spec['file']!r}")
    return kind


def read_layer(manifest_dir, name) -> BinaryConvLayer:
    """Read layer ``name`` back from an exported directory (see the module doc for
    what is verified); every fault is a ValueError naming the file, field or line."""
    path = os.path.join(manifest_dir, MANIFEST)
    manifest = read_json(path, "manifest")
    where = f"manifest {path}"
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(manifest).__name__}")
    fmt = manifest.get("format")
    if fmt not in (FORMAT, FORMAT_1):
        raise ValueError(f"{where}: format is {fmt!r}, expected {FORMAT!r} (or the older "
                         f"{FORMAT_1!r})")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{where}: layers must be a list of layer objects, found "
                         f"{type(layers).__name__}")
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: layers[{i}] must be an object, found {type(entry).__name__}")
    entries = {e.get("name"): e for e in layers}
    if name not in entries:
        raise ValueError(f"{where}: no layer {name!r}, found {sorted(map(str, entries))}")
    entry = entries[name]
    where = f"{where}: layer {name!r}"
    kind = _check_entry(entry, where, fmt)
    c_in, c_out, files = entry["c_in"], entry["c_out"], entry["files"]
    rom = {role: _read_rom(manifest_dir, spec, f"{where}: files.{role}")
           for role, spec in files.items()}
    for role in ("scale", "shift"):
        nan = np.isnan(rom[role].astype(np.uint32).view(np.float32)) if role in rom else []
        if np.any(nan):
            at = int(np.flatnonzero(nan)[0])
            raise ValueError(f"ROM file {os.path.join(manifest_dir, files[role]['file'])}, line "
                             f"{at + 1}: {rom[role][at]:08x} is a float32 NaN, not a {role}")

    def per_o(role, dtype):
        return rom[role].astype(np.uint32).view(dtype) if role in rom else None

    layer = BinaryConvLayer(
        name=name, c_in=c_in, c_out=c_out, height=entry["height"], width=entry["width"],
        stride=entry["stride"],
        kernel_codes=rom["kernel"].reshape(c_in, c_out).T.astype(np.uint16),
        scale=per_o("scale", np.float32), shift=per_o("shift", np.float32), kind=kind,
        tau=entry["tau"],
        codebook=rom["codebook"].astype(np.uint16) if "codebook" in rom else None,
        idx=rom["idx"].reshape(c_in, c_out).T.astype(np.uint16) if "idx" in rom else None,
        threshold=per_o("threshold", np.int32),
        flip=rom["flip"].astype(bool) if "flip" in rom else None,
    )
    check_layer(layer)
    return layer


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minisnn.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rom", metavar="CHECKPOINT", help="export the binary 3x3 layers of a checkpoint")
    source.add_argument("--random", action="store_true", help="export one random demo sub-bit layer")
    parser.add_argument("--out", default="runs/rom", help="output directory (default: runs/rom)")
    parser.add_argument("--layer", help="export only this layer (with --rom)")
    demo = parser.add_argument_group("--random layer")
    demo.add_argument("--tau", type=int, default=5, help="codebook index bits (default 5)")
    demo.add_argument("--cin", type=int, default=16, help="input channels (default 16)")
    demo.add_argument("--cout", type=int, default=16, help="output channels (default 16)")
    demo.add_argument("--height", type=int, default=8, help="input height (default 8)")
    demo.add_argument("--width", type=int, default=8, help="input width (default 8)")
    demo.add_argument("--stride", type=int, default=1, choices=(1, 2), help="stride (default 1)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        if args.random:
            layers = [random_layer(np.random.default_rng(args.seed), args.cin, args.cout, args.tau,
                                   args.height, args.width, args.stride)]
        else:  # the engine only here: writing and reading ROMs need none of it
            from minisnn.compile import compile_checkpoint
            layers = compile_checkpoint(args.rom).layers
        if args.layer is not None:
            layers = [l for l in layers if l.name == args.layer]
            if not layers:
                raise ValueError(f"no binary 3x3 layer named {args.layer!r} to export")
        entries = [export_layer(layer, args.out) for layer in layers]
        path = write_manifest(args.out, entries)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for e in entries:
        kind = f"subbit tau={e['tau']}" if e["kind"] == "subbit" else "bnn"
        print(f"{e['name']}: {e['c_out']}x{e['c_in']} {kind} -> "
              f"{', '.join(f['file'] for f in e['files'].values())}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
