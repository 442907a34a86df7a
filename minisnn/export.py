"""Compiled binary layers -> ROM files for the Verilog engines (rtl/*.v).

``python -m minisnn.export --rom CHECKPOINT --out DIR`` writes, per binary
3x3 layer, ``$readmemh`` text files (one hex word per line, no address
markers) and ``DIR/manifest.json`` with shapes, word widths, address
orders and the sha256 of every file. ``--random`` writes a demo layer
instead. ``read_layer`` reads a layer back and verifies hashes and widths.

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
import sys

import numpy as np

from minisnn import compile as compile_mod
from minisnn.compile import BinaryConvLayer
from minisnn.subbit import NUM_KERNELS

MANIFEST = "manifest.json"
FORMAT = "minisnn-rom-1"
_ADDR_IO = "i * c_out + o"
_ADDR_O = "o"


def random_layer(rng, c_in, c_out, tau, height=8, width=8, stride=1, name="random", thresholds=True):
    """A sub-bit layer with a random codebook of 2**tau distinct codes, random
    indices, scale/shift and (if ``thresholds``) thresholds and flips."""
    if not 1 <= tau <= 9:
        raise ValueError(f"layer {name}: tau must lie in 1..9, found {tau}")
    codebook = rng.choice(NUM_KERNELS, size=2**tau, replace=False).astype(np.uint16)
    idx = rng.integers(0, 2**tau, size=(c_out, c_in)).astype(np.uint16)
    bound = 9 * c_in
    return BinaryConvLayer(
        name=name, c_in=c_in, c_out=c_out, height=height, width=width, stride=stride,
        kernel_codes=codebook[idx],
        scale=rng.uniform(0.01, 1.0, size=c_out).astype(np.float32),
        shift=rng.normal(size=c_out).astype(np.float32),
        tau=tau, codebook=codebook, idx=idx,
        threshold=rng.integers(-bound, bound + 1, size=c_out).astype(np.int32) if thresholds else None,
        flip=rng.random(c_out) < 0.5 if thresholds else None,
    )


def _check_layer(layer):
    """Shapes and ranges the ROM format relies on; ValueError naming the layer."""
    name, shape = layer.name, (layer.c_out, layer.c_in)
    codes = np.asarray(layer.kernel_codes)
    if codes.shape != shape:
        raise ValueError(f"layer {name}: kernel_codes must have shape {shape}, found {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= NUM_KERNELS):
        raise ValueError(f"layer {name}: kernel_codes must lie in [0, 511], found {codes.min()}..{codes.max()}")
    if layer.stride not in (1, 2):
        raise ValueError(f"layer {name}: stride must be 1 or 2, found {layer.stride}")
    if layer.tau is not None:
        codebook, idx = np.asarray(layer.codebook), np.asarray(layer.idx)
        if codebook.shape != (2**layer.tau,):
            raise ValueError(f"layer {name}: codebook must have shape {(2**layer.tau,)}, found {codebook.shape}")
        if len(np.unique(codebook)) != codebook.size or codebook.min() < 0 or codebook.max() >= NUM_KERNELS:
            raise ValueError(f"layer {name}: codebook must hold {codebook.size} distinct codes in [0, 511]")
        if idx.shape != shape or idx.min() < 0 or idx.max() >= 2**layer.tau:
            raise ValueError(f"layer {name}: idx must have shape {shape} with values < {2**layer.tau}")
        if not np.array_equal(codebook[idx], codes):
            raise ValueError(f"layer {name}: kernel_codes differ from codebook[idx]")
    for field in ("scale", "shift", "threshold", "flip"):
        value = getattr(layer, field)
        if value is not None and np.shape(value) != (layer.c_out,):
            raise ValueError(f"layer {name}: {field} must have shape {(layer.c_out,)}, found {np.shape(value)}")


def _rom_specs(layer):
    """(role, words as unsigned ints, width, address order) for every ROM of a layer."""
    specs = [("kernel", np.asarray(layer.kernel_codes).T.ravel(), 9, _ADDR_IO)]
    if layer.tau is not None:
        specs.append(("codebook", np.asarray(layer.codebook).ravel(), 9, "s"))
        specs.append(("idx", np.asarray(layer.idx).T.ravel(), layer.tau, _ADDR_IO))
    if layer.threshold is not None:
        flip = np.zeros(layer.c_out, bool) if layer.flip is None else np.asarray(layer.flip, bool)
        specs.append(("threshold", np.asarray(layer.threshold, np.int32).view(np.uint32), 32, _ADDR_O))
        specs.append(("flip", flip.astype(np.uint32), 1, _ADDR_O))
    for role in ("scale", "shift"):
        value = getattr(layer, role)
        if value is not None:
            specs.append((role, np.asarray(value, np.float32).view(np.uint32), 32, _ADDR_O))
    return specs


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export_layer(layer: BinaryConvLayer, out_dir):
    """Write the ROM files of one layer into ``out_dir``; return its manifest entry."""
    _check_layer(layer)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for role, words, width, order in _rom_specs(layer):
        fname = f"{layer.name}.{role}.hex"
        digits = (width + 3) // 4
        with open(os.path.join(out_dir, fname), "w") as f:
            f.write("".join(f"{int(w):0{digits}x}\n" for w in words))
        files[role] = {
            "file": fname, "width": width, "depth": int(words.size), "address": order,
            "sha256": _sha256(os.path.join(out_dir, fname)),
        }
    return {
        "name": layer.name, "c_in": layer.c_in, "c_out": layer.c_out,
        "height": layer.height, "width": layer.width, "stride": layer.stride,
        "out_height": layer.out_height, "out_width": layer.out_width,
        "tau": layer.tau, "files": files,
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
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return path


def _read_rom(manifest_dir, spec):
    """Words of one ROM file as int64, after checking sha256, depth and width."""
    path = os.path.join(manifest_dir, spec["file"])
    if not os.path.exists(path):
        raise ValueError(f"ROM file {path} listed in the manifest is missing")
    found = _sha256(path)
    if found != spec["sha256"]:
        raise ValueError(f"ROM file {path}: sha256 {found} differs from the manifest's {spec['sha256']} (corrupted?)")
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    if len(lines) != spec["depth"]:
        raise ValueError(f"ROM file {path}: expected {spec['depth']} words, found {len(lines)}")
    try:
        words = np.array([int(line, 16) for line in lines], dtype=np.int64)
    except ValueError as exc:
        raise ValueError(f"ROM file {path}: not a $readmemh hex word per line ({exc})") from None
    if words.size and words.max() >= 2 ** spec["width"]:
        raise ValueError(f"ROM file {path}: word {words.max():#x} exceeds the {spec['width']}-bit width")
    return words


def read_layer(manifest_dir, name) -> BinaryConvLayer:
    """Read layer ``name`` back from an exported directory (hashes and widths verified)."""
    path = os.path.join(manifest_dir, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"manifest {path} cannot be read: {exc}") from None
    entries = {e["name"]: e for e in manifest.get("layers", [])}
    if name not in entries:
        raise ValueError(f"manifest {path}: no layer {name!r}, found {sorted(entries)}")
    entry = entries[name]
    c_in, c_out, files = entry["c_in"], entry["c_out"], entry["files"]
    rom = {role: _read_rom(manifest_dir, spec) for role, spec in files.items()}

    def per_o(role, dtype):
        return rom[role].astype(np.uint32).view(dtype) if role in rom else None

    layer = BinaryConvLayer(
        name=name, c_in=c_in, c_out=c_out, height=entry["height"], width=entry["width"],
        stride=entry["stride"],
        kernel_codes=rom["kernel"].reshape(c_in, c_out).T.astype(np.uint16),
        scale=per_o("scale", np.float32), shift=per_o("shift", np.float32), tau=entry["tau"],
        codebook=rom["codebook"].astype(np.uint16) if "codebook" in rom else None,
        idx=rom["idx"].reshape(c_in, c_out).T.astype(np.uint16) if "idx" in rom else None,
        threshold=per_o("threshold", np.int32),
        flip=rom["flip"].astype(bool) if "flip" in rom else None,
    )
    _check_layer(layer)
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
        else:
            layers = compile_mod.compile_checkpoint(args.rom).layers
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
        print(f"{e['name']}: {e['c_out']}x{e['c_in']} tau={e['tau']} -> {', '.join(f['file'] for f in e['files'].values())}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
