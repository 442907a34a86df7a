"""Kernel distribution of binary 3x3 layers (the paper's Figure 1) and coverage.

In a trained BNN the 3x3 kernels of a layer cluster on a few of the 512
binary kernels. :func:`kernel_histogram` counts them, :func:`coverage` is
the share of a layer's kernels that fall in its 2^tau most frequent ones:
what a sub-bit layer with a perfect ('frequent') codebook could keep.

``python -m minisnn.kernels CHECKPOINT [...] --out DIR`` writes, per
checkpoint, ``DIR/<name>_kernels.png`` (one bar panel per binary layer: the
percentage of the layer's kernels on each binary kernel, most frequent
first; an SNN's codebook kernels highlighted) and ``DIR/<name>_coverage.json``,
and prints the coverage table. ``<name>`` is the file's stem, prefixed by its
directory's name where two checkpoints share a stem.
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import pathlib
import tempfile

import numpy as np

from .checkpoint import load_model, write_json
from .models import build_model
from .quant import QuantConv2d
from .subbit import NUM_KERNELS, SubBitConv2d, binary_kernel_codes

DEFAULT_TAUS = (4, 5, 6)


def kernel_histogram(kernel_codes):
    """Counts (512,) of each 9-bit code among ``kernel_codes`` (any shape)."""
    codes = np.asarray(kernel_codes)
    if codes.size and (codes.min() < 0 or codes.max() >= NUM_KERNELS):
        raise ValueError(f"kernel codes must lie in [0, 511], found {codes.min()}..{codes.max()}")
    return np.bincount(codes.astype(np.int64).ravel(), minlength=NUM_KERNELS)


def coverage(counts, tau):
    """Share of kernels among the 2^tau most frequent codes of ``counts`` (512,)."""
    counts = np.asarray(counts)
    if counts.shape != (NUM_KERNELS,):
        raise ValueError(f"counts must have shape ({NUM_KERNELS},), found {counts.shape}")
    total = counts.sum()
    if total == 0:
        raise ValueError("coverage of an empty histogram (no kernels counted)")
    return float(np.sort(counts)[::-1][:1 << tau].sum() / total)


def _initial_codebooks(model):
    """Layer name -> codes its codebook started from, rebuilt from the model's
    config and seed; {} unless the codebooks were drawn at random (a 'frequent'
    codebook came from a BNN the config does not name)."""
    config = getattr(model, "config", None)
    if not config or config.get("quant") != "snn" or \
            config.get("snn_options", {}).get("init", "random") != "random":
        return {}
    return {name: mod.codebook.codes for name, mod in build_model(config).named_modules()
            if isinstance(mod, SubBitConv2d)}


def layer_statistics(model, taus=DEFAULT_TAUS):
    """Per binary 3x3 layer: counts, coverage for each tau, the SNN codebook and
    ``codebook_new``, how many of its kernels were not in the initial random
    sample (what refinement changed; None for BNNs and 'frequent' codebooks)."""
    stats = {}
    initial = _initial_codebooks(model)
    for name, mod in model.named_modules():
        if not isinstance(mod, QuantConv2d):
            continue
        counts = kernel_histogram(binary_kernel_codes(mod))
        codebook = (mod.codebook.codes.astype(int).tolist() if isinstance(mod, SubBitConv2d)
                    else None)
        new = len(set(codebook) - set(initial[name].tolist())) if name in initial else None
        stats[name] = {"counts": counts, "kernels": int(counts.sum()),
                       "distinct": int(np.count_nonzero(counts)),
                       "coverage": {t: coverage(counts, t) for t in taus}, "codebook": codebook,
                       "codebook_new": new}
    if not stats:
        raise ValueError("the model has no binary 3x3 layer (is it a full-precision model?)")
    return stats


def format_coverage(stats, taus=DEFAULT_TAUS):
    head = ["layer", "kernels", "distinct"] + [f"top {1 << t} (tau={t})" for t in taus]
    rows = [[name, f"{s['kernels']:,}", str(s["distinct"])]
            + [f"{100 * s['coverage'][t]:.1f}%" for t in taus] for name, s in stats.items()]
    means = [np.mean([s["coverage"][t] for s in stats.values()]) for t in taus]
    rows.append(["mean", "", ""] + [f"{100 * m:.1f}%" for m in means])
    new = [s["codebook_new"] for s in stats.values()]
    if any(n is not None for n in new):  # a random-init SNN: what refinement changed
        head.append("new in codebook")
        sizes = [len(s["codebook"]) for s in stats.values()]
        for row, n, size in zip(rows, new, sizes):
            row.append(f"{n}/{size}")
        rows[-1].append(f"{sum(new)}/{sum(sizes)}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), "-" * len(fmt(head))] + [fmt(r) for r in rows])


def plot_layers(stats, path, title, order="frequency", ncols=3):
    """One bar panel per layer (percent of its kernels per binary kernel), tiled."""
    from .figures import bar_plot, grid
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, s) in enumerate(stats.items()):
            counts = s["counts"]
            perm = (np.lexsort((np.arange(NUM_KERNELS), -counts)) if order == "frequency"
                    else np.arange(NUM_KERNELS))
            mask = np.zeros(NUM_KERNELS, bool)
            if s["codebook"] is not None:
                mask[s["codebook"]] = True
            panels.append(bar_plot(
                100.0 * counts[perm] / s["kernels"], pathlib.Path(tmp) / f"{i:03d}.png",
                title=f"{title}: {name}",
                xlabel=("binary kernels by rank, most frequent first" if order == "frequency"
                        else "binary kernel code"),
                ylabel="% of the layer's kernels",
                highlight=mask[perm] if s["codebook"] is not None else None,
                legend=("other kernels", "codebook"), size=(700, 300)))
        return grid(panels, path, ncols)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minisnn.kernels",
        description="Binary-kernel frequency per layer (Figure 1) and top-2^tau coverage of "
                    "BNN/SNN checkpoints.")
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (.npz)")
    parser.add_argument("--out", required=True, help="output directory for PNG and JSON files")
    parser.add_argument("--taus", type=int, nargs="+", default=list(DEFAULT_TAUS),
                        help="codebook sizes 2^tau for the coverage table (default 4 5 6)")
    parser.add_argument("--order", choices=("frequency", "code"), default="frequency",
                        help="x-axis order of the 512 kernels (default: most frequent first)")
    args = parser.parse_args(argv)
    if any(not 1 <= t <= 9 for t in args.taus):
        parser.error(f"--taus must lie in 1..9, found {args.taus}")
    out = pathlib.Path(args.out)
    results = {}
    stems = [pathlib.Path(c).stem for c in args.checkpoints]
    for ckpt, stem in zip(args.checkpoints, stems):
        if stems.count(stem) > 1:  # runs/bnn/checkpoint.npz, runs/snn/checkpoint.npz
            stem = f"{pathlib.Path(ckpt).parent.name}_{stem}"
        try:
            model = load_model(ckpt)
            stats = layer_statistics(model, args.taus)
        except ValueError as exc:
            parser.exit(2, f"error: {ckpt}: {exc}\n")
        png = plot_layers(stats, out / f"{stem}_kernels.png", stem, args.order)
        record = {"checkpoint": str(ckpt), "model": model.config,
                  "layers": {n: {"kernels": s["kernels"], "distinct": s["distinct"],
                                 "coverage": {str(t): c for t, c in s["coverage"].items()},
                                 "codebook": s["codebook"], "codebook_new": s["codebook_new"]}
                             for n, s in stats.items()}}
        json_path = out / f"{stem}_coverage.json"
        write_json(json_path, record)
        results[stem] = record
        print(f"{ckpt}: share of each layer's kernels in its 2^tau most frequent")
        print(format_coverage(stats, args.taus))
        print(f"wrote {png} and {json_path}\n")
    return results


if __name__ == "__main__":
    main()
