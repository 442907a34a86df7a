"""Bit, size and operation accounting of FP, BNN and SNN versions of a model.

``python -m minisnn.summary CHECKPOINT_OR_ARCH [--tau T] [--json]`` prints a
per-layer table in the spirit of Larq's model summary. An architecture name
(``resnet20``: CIFAR 32x32 inputs, ``resnet18``: ImageNet 224x224) needs no
checkpoint. Layer shapes and feature-map sizes come from tracing one forward
pass of the real model, so the accounting cannot drift from the model code.

Conventions (also printed with the table):
- Binary layers are the 3x3 convs inside the residual blocks. The first
  conv, the 1x1 projection shortcuts, the classifier (weights and bias) and
  batch norm stay full precision (32 bits) in the BNN and SNN counts.
- Batch norm counts 2 values per channel (scale and shift: at inference the
  running statistics fold into them). The binary layers' per-channel alpha
  folds into the following batch norm, so it costs nothing extra.
- FP model: every weight 32 bits. BNN: 1 bit per binary weight (9 per 3x3
  kernel). SNN: tau bits of index per kernel + 9 * 2^tau codebook bits per
  layer; "bits/weight" is tau / 9 (the codebook amortised separately).
- Dot9 = one 9-element binary dot product (XNOR + popcount of a 3x3 patch).
  BNN: C_out * C_in per output position. SNN (the paper's processing
  element): 2^tau * C_in per output position, shared by all output
  channels through the lookup table (so more work than the BNN where
  C_out < 2^tau, as in ResNet-20's first stage at tau = 5). Per image.
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import json
import pathlib
import sys

import numpy as np

from . import models
from .checkpoint import load_model
from .nn import BatchNorm2d, Conv2d, Linear
from .quant import BinaryConv2d, QuantConv2d
from .subbit import SubBitConv2d

DEFAULT_TAU = 5
CONVENTIONS = [
    "binary layers: the 3x3 convs in the residual blocks; first conv, 1x1 shortcut convs, "
    "classifier (weight + bias) and batch norm are full precision (32 bit) in every model",
    "batch norm: 2 values per channel (running statistics fold into scale and shift); "
    "the binary layers' alpha folds into batch norm",
    "BNN: 1 bit per binary weight; SNN: tau bits of index per 3x3 kernel + 9 * 2^tau "
    "codebook bits per layer; bits/weight = tau / 9",
    "Dot9 = one 9-element binary dot product per image; BNN: C_out * C_in per output "
    "position; SNN: 2^tau * C_in per output position (shared across output channels), "
    "more than the BNN's where C_out < 2^tau",
]


def _trace(model, input_size):
    """Input/output shapes of every conv and linear, from one eval forward."""
    shapes = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (Conv2d, QuantConv2d, Linear)):
            def record(module, x, out, name=name):
                shapes[name] = (x.shape, out.shape)
            handles.append(mod.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()(np.zeros((1, 3, input_size, input_size), np.float32))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes


def _model_taus(model):
    return {m.tau for _, m in model.named_modules() if isinstance(m, SubBitConv2d)}


def _build(arch, tau):
    if arch not in models.ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: expected a checkpoint file or one of "
                         f"{sorted(models.ARCHS)}")
    return getattr(models, arch)(quant="snn", act="real", tau=tau)


def summarize(model_or_arch, tau=None):
    """Per-layer and total bit/op accounting as a JSON-able dict.

    ``model_or_arch``: a model (BNN/SNN; an fp model is summarised through
    its architecture) or an architecture name. ``tau`` is the SNN setting for
    models without sub-bit layers (default 5); an SNN model uses its own and
    a different ``tau`` is an error.
    """
    model = model_or_arch
    if isinstance(model_or_arch, str):
        model = _build(model_or_arch, tau if tau is not None else DEFAULT_TAU)
    taus = _model_taus(model)
    if len(taus) > 1:
        raise ValueError(f"model mixes sub-bit layers of tau {sorted(taus)}; summary expects one")
    if taus:
        (own,) = taus
        if tau is not None and tau != own:
            raise ValueError(f"the model's sub-bit layers have tau={own}, but tau={tau} was asked")
        tau = own
    elif not any(isinstance(m, BinaryConv2d) for _, m in model.named_modules()):
        return summarize(model.config["arch"], tau)  # fp model: same shapes
    tau = DEFAULT_TAU if tau is None else tau
    if not 1 <= tau <= 9:
        raise ValueError(f"tau must lie in 1..9, found {tau}")

    shapes = _trace(model, model.input_size)
    rows = []
    bn_values = 0
    for name, mod in model.named_modules():
        if isinstance(mod, BatchNorm2d):
            bn_values += 2 * mod.weight.data.size
            continue
        if name not in shapes:
            continue
        in_shape, out_shape = shapes[name]
        row = {"name": name}
        if isinstance(mod, Linear):
            c_out, c_in = mod.weight.data.shape
            params = c_out * c_in + c_out
            row.update(kind="fp", shape=[int(c_out), int(c_in)], input=None, output=None,
                       macs=int(c_out * c_in))
        else:
            c_out, c_in, kh, kw = mod.weight.data.shape
            ho, wo = out_shape[2:]
            params = c_out * c_in * kh * kw
            row.update(shape=[int(c_out), int(c_in), int(kh), int(kw)],
                       input=[int(in_shape[2]), int(in_shape[3])], output=[int(ho), int(wo)],
                       macs=int(params * ho * wo))
        row["fp_bits"] = 32 * int(params)
        if isinstance(mod, QuantConv2d):
            kernels = c_out * c_in
            positions = ho * wo
            row.update(kind="snn" if isinstance(mod, SubBitConv2d) else "bnn", tau=tau,
                       bits_per_weight=tau / 9, index_bits=int(tau * kernels),
                       codebook_bits=int(9 * 2 ** tau), bnn_bits=int(9 * kernels),
                       snn_bits=int(tau * kernels + 9 * 2 ** tau),
                       bnn_dot9=int(kernels * positions), snn_dot9=int(2 ** tau * c_in * positions))
        else:
            row.setdefault("kind", "fp")
            row.update(bnn_bits=row["fp_bits"], snn_bits=row["fp_bits"])
        rows.append(row)

    binary = [r for r in rows if r["kind"] != "fp"]
    fp_bits = sum(r["fp_bits"] for r in rows) + 32 * bn_values
    bnn_bits = sum(r["bnn_bits"] for r in rows) + 32 * bn_values
    snn_bits = sum(r["snn_bits"] for r in rows) + 32 * bn_values
    bnn_dot9 = sum(r["bnn_dot9"] for r in binary)
    snn_dot9 = sum(r["snn_dot9"] for r in binary)
    totals = {
        "fp_bytes": fp_bits / 8, "bnn_bytes": bnn_bits / 8, "snn_bytes": snn_bits / 8,
        "batchnorm_values": bn_values,
        "binary_layers": len(binary),
        "binary_bnn_bits": sum(r["bnn_bits"] for r in binary),
        "binary_snn_bits": sum(r["snn_bits"] for r in binary),
        "compression_fp_over_snn": fp_bits / snn_bits,
        "compression_bnn_over_snn": bnn_bits / snn_bits,
        "binary_layers_compression": (sum(r["bnn_bits"] for r in binary)
                                      / sum(r["snn_bits"] for r in binary)),
        "bnn_dot9": bnn_dot9, "snn_dot9": snn_dot9,
        "dot9_reduction": bnn_dot9 / snn_dot9,
        "fp_macs": sum(r["macs"] for r in rows),
    }
    config = model.config
    return {"arch": config["arch"], "mode": models.mode_name(config["quant"], config["act"],
                                                             config.get("tau")),
            "tau": tau, "input_size": model.input_size, "conventions": CONVENTIONS,
            "layers": rows, "totals": totals}


def _fmt_int(v):
    return f"{v:,}"


def format_table(summary):
    """The summary as aligned text."""
    head = ["layer", "type", "kernel shape", "in -> out", "tau", "bits/w", "index bits",
            "codebook bits", "BNN bits", "FP bits", "BNN Dot9", "SNN Dot9"]
    lines = []
    for r in summary["layers"]:
        binary = r["kind"] != "fp"
        lines.append([
            r["name"], r["kind"], "x".join(map(str, r["shape"])),
            (f"{r['input'][0]}x{r['input'][1]} -> {r['output'][0]}x{r['output'][1]}"
             if r["input"] else "-"),
            str(r["tau"]) if binary else "-",
            f"{r['bits_per_weight']:.2f}" if binary else "32",
            _fmt_int(r["index_bits"]) if binary else "-",
            _fmt_int(r["codebook_bits"]) if binary else "-",
            _fmt_int(r["bnn_bits"]), _fmt_int(r["fp_bits"]),
            _fmt_int(r["bnn_dot9"]) if binary else "-",
            _fmt_int(r["snn_dot9"]) if binary else "-"])
    t = summary["totals"]
    lines.append(["batch norm (all)", "fp", f"{t['batchnorm_values']:,} values", "", "-", "32",
                  "-", "-", _fmt_int(32 * t["batchnorm_values"]),
                  _fmt_int(32 * t["batchnorm_values"]), "-", "-"])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    left = {0, 1, 2, 3}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(fmt(head))
    out = [f"{summary['arch']} ({summary['mode']}), input {summary['input_size']}x"
           f"{summary['input_size']}, SNN tau={summary['tau']}", rule, fmt(head), rule]
    out += [fmt(l) for l in lines]
    out += [rule,
            f"model size   FP {t['fp_bytes'] / 1024:,.1f} KiB   "
            f"BNN {t['bnn_bytes'] / 1024:,.1f} KiB   SNN {t['snn_bytes'] / 1024:,.1f} KiB",
            f"compression  FP/SNN {t['compression_fp_over_snn']:.2f}x   BNN/SNN "
            f"{t['compression_bnn_over_snn']:.2f}x   binary layers only BNN/SNN "
            f"{t['binary_layers_compression']:.2f}x ({t['binary_bnn_bits']:,} -> "
            f"{t['binary_snn_bits']:,} bits in {t['binary_layers']} layers)",
            f"Dot9 / image BNN {t['bnn_dot9']:,}   SNN {t['snn_dot9']:,}   reduction "
            f"{t['dot9_reduction']:.2f}x   (full-precision MACs {t['fp_macs']:,})",
            "conventions:"]
    out += [f"  - {c}" for c in summary["conventions"]]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minisnn.summary",
        description="Per-layer bits, model sizes and binary dot-product counts of the FP, BNN "
                    "and SNN versions of a model.")
    parser.add_argument("target", help="a checkpoint file, or an architecture name "
                                       f"({', '.join(sorted(models.ARCHS))})")
    parser.add_argument("--tau", type=int, default=None,
                        help=f"SNN bits per 3x3 kernel (default {DEFAULT_TAU}; an SNN "
                             "checkpoint uses its own)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    target = pathlib.Path(args.target)
    try:
        model_or_arch = load_model(target) if target.is_file() else args.target
        summary = summarize(model_or_arch, args.tau)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(format_table(summary))


if __name__ == "__main__":
    main()
