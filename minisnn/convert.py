"""Import a PyTorch checkpoint of the sub-bit authors' ResNet-18 into a minisnn model.

    python -m minisnn.convert CKPT --out model.npz

reads ``CKPT`` with :mod:`minisnn.torchfile` (no torch, no code from the
file runs), places every array in minisnn's ReActNet ResNet-18
(``block='reactnet'``, ImageNet stem) and writes a checkpoint that
:func:`minisnn.checkpoint.load_model` rebuilds.

The authors' layout (github.com/yikaiw/SNN, step2/birealnet.py): a dict
with ``state_dict`` (keys prefixed ``module.`` by DataParallel), ``epoch``,
``best_top1_acc`` and ``optimizer`` (ignored); a bare state dict works too.
The keys are minisnn's own names (``conv1``, ``bn1``, ``layerS.B.move0``,
``binary_conv``, ``bn1``, ``move1``, ``prelu``, ``move2``, ``downsample.1``
and ``.2``, ``fc``) except in the block convs, whose form sets the mode:

==========================================  ==============================
block conv keys                             minisnn mode
==========================================  ==============================
``binary_conv.weight`` (C_out, C_in, 3, 3)  ``snn``, tau = log2 of the rows
+ ``binary_conv.binarize.patterns``         (the authors' step 2)
``binary_conv.weights`` (C_out*C_in*9, 1)   ``bnn`` (ReActNet's sign conv)
``binary_conv.weight`` alone                ``fp`` with binary activations
                                            (step 1); ``bnn`` with
                                            ``--sign-weights``
==========================================  ==============================

Widths, classes and tau come from the shapes; ``num_batches_tracked`` is
dropped. Patterns: the codebook's P is the patterns as stored, its kernels
(``codes``, bit j = 3*row + col, 1 for +1) their signs, in the file's row
order so exact ties go to the lowest row, as the authors' argmin does. An
entry below 1e-3 in magnitude kept, in the authors' model, a previous sign
the file does not hold: minisnn takes sign(p), +1 for an exact zero, and
warns.

Assignment: the authors' model gives each latent kernel the codebook kernel
at the smallest float32 distance, ``torch.norm(w - K, dim=2).argmin``. A
converted model does the same by default (``assign='float32'``, kept in its
config, so ``load_model``, ``compile``, ``kernels`` and ``export --rom`` use
it too): :func:`minisnn.subbit.nearest_kernels_float32` reproduces PyTorch's
CPU kernel bit for bit, so the model computes what the PyTorch model
computes on a CPU. ``--assign exact`` takes the exactly nearest kernel
instead (minisnn's own rule). The two differ on kernels nearly tied between
two codebook kernels (3 to 6 of the 1.2 million in each full-size fixture
of scripts/make_torch_fixtures.py): counted and warned about, since PyTorch
on a GPU, or its generic CPU kernel, sums in another order and may have
picked either. Anything it cannot place is refused (exit status 2) naming
the first key or shape.
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import re
import sys
import warnings

import numpy as np

from . import models, torchfile
from .checkpoint import save_inference
from .quant import QuantConv2d
from .subbit import NEAREST, SIGN_MEMORY, SubBitConv2d

ARCH = "resnet18"
PATTERNS = ".binary_conv.binarize.patterns"
FLAT_WEIGHTS = ".binary_conv.weights"  # ReActNet's HardBinaryConv: (N, 1)
_BIT_WEIGHTS = 1 << np.arange(9)


def read_state(obj, source):
    """``(state, info)`` from a loaded checkpoint: the arrays by name
    (``module.`` stripped when every key has it) and ``epoch`` /
    ``best_top1_acc`` as numbers where present."""
    info = {}
    if isinstance(obj, dict) and "state_dict" in obj:
        for key in ("epoch", "best_top1_acc"):
            value = obj.get(key)
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                info[key] = value
        state = obj["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict")
    elif isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state = obj
    else:
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{source}: neither the authors' checkpoint (a dict with 'state_dict') "
                         f"nor a state dict of tensors; found {found}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{source}: state dict entry {key!r} is a {type(value).__name__}, "
                             "not a tensor")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state), info


def _shape(state, key, source, ndim, what):
    if key not in state:
        raise ValueError(f"{source}: no key {key!r} ({what}); the first keys are "
                         f"{list(state)[:4]}")
    shape = state[key].shape
    if len(shape) != ndim:
        raise ValueError(f"{source}: {key!r} has shape {shape}, expected {ndim} dimensions "
                         f"({what})")
    return shape


def _block_kind(state, block, source, sign_weights):
    """``(quant, tau, key)`` of the conv of ``block``: its mode and the key that says so."""
    if block + PATTERNS in state:
        key = block + PATTERNS
        rows, cols = _shape(state, key, source, 2, "sub-bit patterns (2^tau, 9)")
        tau = int(rows).bit_length() - 1
        if cols != 9 or rows != 1 << tau or not 1 <= tau <= 9:
            raise ValueError(f"{source}: {key!r} has shape {(rows, cols)}, expected (2^tau, 9) "
                             "with tau in 1..9")
        return "snn", tau, key
    if block + FLAT_WEIGHTS in state:
        return "bnn", None, block + FLAT_WEIGHTS
    return ("bnn" if sign_weights else "fp"), None, block + ".binary_conv.weight"


def infer(state, source="checkpoint", sign_weights=False):
    """The minisnn config of a state dict: mode, tau, widths and classes from shapes."""
    c0 = _shape(state, "conv1.weight", source, 4, "the stem's 7x7 conv")[0]
    widths = [_shape(state, f"layer{s}.0.bn1.weight", source, 1,
                     f"stage {s}'s first batch norm, whose size is the stage width")[0]
              for s in range(1, 5)]
    if c0 != widths[0]:
        raise ValueError(f"{source}: 'conv1.weight' has {c0} output channels, but layer1 is "
                         f"{widths[0]} wide; minisnn's stem is as wide as layer1")
    classes, features = _shape(state, "fc.weight", source, 2, "the classifier")
    if features != widths[-1]:
        raise ValueError(f"{source}: 'fc.weight' has shape {state['fc.weight'].shape}, expected "
                         f"(classes, {widths[-1]}) after layer4's {widths[-1]} channels")
    # blocks with a conv, in order (a block without one fails placement, named there)
    blocks = sorted({m.group(1) for m in map(re.compile(r"(layer\d+\.\d+)\.binary_conv\.").match,
                                             state) if m},
                    key=lambda b: [int(n) for n in re.findall(r"\d+", b)])
    if not blocks:
        first = next((k for k in state if k.startswith("layer1.")), None)
        raise ValueError(f"{source}: no block conv ('layerS.B.binary_conv.*') in the checkpoint; "
                         f"layer1's first key is {first!r}: not the authors' ReActNet layout")
    quant, tau, _ = _block_kind(state, blocks[0], source, sign_weights)
    for block in blocks[1:]:
        other, other_tau, key = _block_kind(state, block, source, sign_weights)
        if (other, other_tau) != (quant, tau):
            raise ValueError(f"{source}: {key!r} makes {block} a {other} conv"
                             + (f" of tau {other_tau}" if other_tau else "")
                             + f", but {blocks[0]} is {quant}" + (f" of tau {tau}" if tau else "")
                             + "; minisnn models use one mode and one tau")
    return {"arch": ARCH, "quant": quant, "act": "binary", "tau": tau, "seed": 0,
            "num_classes": int(classes), "act_grad": "approxsign", "block": "reactnet",
            "snn_options": {}, "widths": [int(w) for w in widths]}


def pattern_codes(patterns, key, source="checkpoint"):
    """Kernel codes of the authors' patterns (2^tau, 9): sign per entry, +1 for 0.

    Returns ``(codes, small, zeros)``: the uint16 codes in row order and the
    counts of entries below the sign memory's 1e-3 and of exact zeros.
    Duplicate codes are refused (minisnn codebooks hold distinct kernels).
    """
    p = np.asarray(patterns, dtype=np.float64)
    codes = ((p >= 0).astype(np.int64) @ _BIT_WEIGHTS).astype(np.uint16)
    values, counts = np.unique(codes, return_counts=True)
    if (counts > 1).any():
        code = values[counts > 1][0]
        rows = np.flatnonzero(codes == code)[:2]
        raise ValueError(f"{source}: {key!r} rows {rows[0]} and {rows[1]} have the same sign "
                         f"pattern (kernel code {code}); a minisnn codebook holds 2^tau distinct "
                         "kernels (the authors' next refinement step replaces such duplicates)")
    return codes, int((np.abs(p) < SIGN_MEMORY).sum()), int((p == 0).sum())


def rule_differences(model):
    """Per sub-bit layer of ``model``: how many kernels the other nearest-kernel
    rule (exact or float32, see :data:`minisnn.subbit.NEAREST`) would assign
    to another codebook kernel than the layer's own rule does."""
    counts = {}
    for name, mod in model.named_modules():
        if isinstance(mod, SubBitConv2d):
            other = next(rule for rule in NEAREST if rule != mod.codebook.rule)
            idx = NEAREST[other](mod.weight.data.reshape(-1, 9), mod.codebook.kernels)
            counts[name] = int((idx != mod.idx.ravel()).sum())
    return counts


def convert(state, source="checkpoint", sign_weights=False, seed=0, assign="float32"):
    """A minisnn model (eval mode) holding the arrays of an authors'-layout state dict.

    Every checkpoint key is placed or the call fails naming the first one it
    could not place; every model array must be filled. Sub-bit layers assign
    kernels by the rule ``assign`` ('float32': PyTorch's on a CPU; 'exact').
    Warns about pattern entries whose sign the file does not determine, about
    kernels the two assignment rules assign differently and about exact-zero
    latent weights of a sign (BNN) conv.

    Memory: the model is built without drawing weights and takes the
    state's float32 arrays themselves (read-only, as
    :func:`minisnn.torchfile.load` returns them), so the checkpoint is held
    once. Convert and save; train from the saved file, not in place.
    """
    if assign not in NEAREST:
        raise ValueError(f"unknown assignment rule {assign!r}, expected one of {tuple(NEAREST)}")
    config = dict(infer(state, source, sign_weights), seed=int(seed))
    if config["quant"] == "snn":
        config["snn_options"] = {"assign": assign}
    model = models.build_model(config, init=False)  # no weights drawn: all are loaded
    targets = {name: p.data for name, p in model.named_parameters()}
    targets.update(dict(model.named_buffers()))
    filled, small, zeros, small_layers = {}, 0, 0, []
    for key, value in state.items():
        if key.endswith(".num_batches_tracked") and value.size == 1 \
                and value.dtype.kind in "iu":
            continue
        name = key
        if key.endswith(PATTERNS):
            name = key[:-len(PATTERNS)] + ".binary_conv.codebook.weight"
        elif key.endswith(FLAT_WEIGHTS):
            name = key[:-1]
        if name not in targets:
            raise ValueError(f"{source}: cannot place key {key!r} (shape {value.shape}): "
                             f"minisnn's ReActNet ResNet-18 ({config['quant']}, widths "
                             f"{config['widths']}, 4 blocks per stage) has no such array")
        want = targets[name].shape
        if key.endswith(FLAT_WEIGHTS) and value.shape == (int(np.prod(want)), 1):
            value = value.reshape(want)  # ReActNet stores the kernel row-major, flat
        if value.shape != want or value.dtype.kind != "f":
            raise ValueError(f"{source}: key {key!r} has shape {value.shape} and dtype "
                             f"{value.dtype}, expected {want} float for minisnn's {name!r}")
        if not np.isfinite(value).all():
            raise ValueError(f"{source}: key {key!r} holds {int((~np.isfinite(value)).sum())} "
                             "values that are NaN or infinite")
        filled[name] = value
        if key.endswith(PATTERNS):
            codes, n_small, n_zero = pattern_codes(value, key, source)
            filled[name[:-len("weight")] + "codes"] = codes
            if n_small:
                small, zeros = small + n_small, zeros + n_zero
                small_layers.append(key[:-len(PATTERNS)])
        if config["quant"] == "bnn" and name.endswith(".binary_conv.weight") \
                and (value == 0).any():
            warnings.warn(f"{source}: {key!r} has {int((value == 0).sum())} latent weights of "
                          "exactly 0: PyTorch's sign gives 0 there, minisnn's +1")
    if small:
        warnings.warn(f"{source}: {small} pattern entries in {len(small_layers)} layers "
                      f"(first {small_layers[0]}) are below {SIGN_MEMORY} in magnitude: the "
                      "authors' model keeps their previous sign, which the file does not hold; "
                      f"minisnn takes sign(p), and +1 for the {zeros} exact zeros")
    for name, array in targets.items():
        if name in filled:
            continue
        if name.endswith((".codebook.seed", ".codebook.step", ".binary_conv.idx")):
            filled[name] = array  # the model's own; idx is re-derived on load
            continue
        source_key = name.replace(".binary_conv.codebook.weight", PATTERNS)
        raise ValueError(f"{source}: no key {source_key!r} for minisnn's {name!r} "
                         f"(shape {array.shape})")
    model.load_state_dict(filled, source=str(source), assign=True)  # no second copy
    differ = rule_differences(model)
    if sum(differ.values()):
        layers = [name for name, n in differ.items() if n]
        warnings.warn(
            f"{source}: {sum(differ.values())} kernels in {len(layers)} layers (first "
            f"{layers[0]}: {differ[layers[0]]}) are so nearly tied between two codebook "
            "kernels that the exact and the float32 rule assign them differently; this model "
            f"uses {assign}" + (
                ", as PyTorch does on a CPU (a GPU rounds otherwise and may have picked the "
                "other kernel)" if assign == "float32" else
                ", PyTorch on a CPU float32, so logits can differ from PyTorch's there"))
    return model.eval()


def describe(model):
    """Lines saying what was converted: architecture, tau per layer, parameters, bits."""
    config = model.config
    mode = models.mode_name(config["quant"], config["act"], config.get("tau"))
    widths = "/".join(map(str, config["widths"]))
    step1 = ", step 1: real weights" if config["quant"] == "fp" else ""
    lines = [f"architecture: ReActNet Bi-Real ResNet-18 ({mode}{step1}): stem 7x7 conv, "
             f"stages {widths} x 4 blocks, {config['num_classes']} classes"]
    if config["quant"] == "snn":
        rule = config["snn_options"].get("assign", "exact")
        lines.append(f"kernel assignment: {rule} (" + (
            "float32 distances, as PyTorch on a CPU)" if rule == "float32" else
            "the exactly nearest codebook kernel)"))
    binary_bits = binary_weights = 0
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, QuantConv2d):
            continue
        c_out, c_in = mod.weight.data.shape[:2]
        kernels = c_out * c_in
        if isinstance(mod, SubBitConv2d):
            kind, bits = f"tau={mod.tau}", mod.tau * kernels + 9 * mod.codebook.size
        elif config["quant"] == "bnn":
            kind, bits = "binary", 9 * kernels
        else:
            kind, bits = "real", 32 * 9 * kernels
        binary_bits += bits
        binary_weights += 9 * kernels
        rows.append(f"  {name:<24} {c_out:>4} x {c_in:<4} {kind:<7} {bits:>12,} bits")
    params = sum(p.data.size for p in model.parameters())
    latent = sum(m.weight.data.size + (m.codebook.weight.data.size
                                      if isinstance(m, SubBitConv2d) else 0)
                 for _, m in model.named_modules() if isinstance(m, QuantConv2d))
    lines.append(f"block convs ({len(rows)}), stored as used in inference:")
    lines += rows
    lines.append(f"parameters: {params:,} ({latent:,} of them latent block-conv weights and "
                 "codebooks, which inference does not need)")
    lines.append(f"bits: block convs {binary_bits:,} ({binary_bits / binary_weights:.3f} per "
                 f"weight), other parameters {32 * (params - latent):,} (32 bit)")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minisnn.convert",
        description="Convert a PyTorch checkpoint of the sub-bit authors' ReActNet ResNet-18 "
                    "(zip or legacy torch.save format; no torch needed) into a minisnn "
                    "checkpoint that minisnn.checkpoint.load_model rebuilds.")
    parser.add_argument("checkpoint", help="the .pth / .pth.tar file")
    parser.add_argument("--out", required=True, help="minisnn checkpoint to write (.npz)")
    parser.add_argument("--sign-weights", action="store_true",
                        help="read 4-D block conv weights without patterns as a BNN's latent "
                             "weights (sign) instead of step 1's real weights")
    parser.add_argument("--assign", choices=tuple(NEAREST), default="float32",
                        help="nearest-kernel rule of the sub-bit layers: float32 (default) "
                             "computes what the PyTorch model computes on a CPU; exact takes "
                             "the exactly nearest codebook kernel")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the model's random state: the codebooks' replacement "
                             "draws if the model is trained further (default 0)")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state, info = read_state(torchfile.load(args.checkpoint), args.checkpoint)
            model = convert(state, args.checkpoint, args.sign_weights, args.seed, args.assign)
        del state
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        print("\n".join(describe(model)))
        path = save_inference(args.out, model, converted_from=str(args.checkpoint), **info)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
