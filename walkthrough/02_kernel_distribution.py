"""Step 2: how the trained BNNs' 3x3 kernels spread over the 512 binary kernels.

The paper's Figure 1 (left): per binary layer of the two BNNs, 1W/32A
(step 1) and 1W/1A (the two-step recipe of step 7, which a run trains first
if it is missing), the share
of the layer's kernels on each of the 512 binary kernels, most frequent
first. A few kernels carry most of every layer, which is what lets a
sub-bit layer keep only 2^tau of them. The coverage table says how much of
each layer sits in its 2^tau most frequent kernels: the part a perfect
('frequent') codebook keeps unchanged.
"""

import json
from pathlib import Path

import common
from minisnn import kernels
from minisnn.summary import load_model

NAMES = ("bnn_32a", "bnn_1a_kd")


def kernel_figures(args, names, prefix):
    """A figure per model, and its coverage records added to <prefix>_coverage.json.

    Records of models not in ``names`` stay in the file: steps run with
    different --only lists add to one table instead of overwriting it.
    """
    path = Path(args.out) / f"{prefix}_coverage.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        stats = kernels.layer_statistics(load_model(common.checkpoint(args, name)))
        label = common.MODELS[name][0]
        png = kernels.plot_layers(stats, f"{args.out}/{prefix}_{name}_kernels.png", label)
        print(f"\n{label}: share of each layer's 3x3 kernels in its 2^tau most frequent")
        print(kernels.format_coverage(stats))
        print(f"wrote {png}")
        records[name] = {layer: {"kernels": s["kernels"], "distinct": s["distinct"],
                                 "coverage": {str(t): c for t, c in s["coverage"].items()},
                                 "codebook": s["codebook"], "codebook_new": s["codebook_new"]}
                         for layer, s in stats.items()}
    print(f"wrote {common.write_json(path, records)}")


def main(argv=None):
    args = common.parser(__doc__, NAMES).parse_args(argv)
    common.train_models(args, args.only)
    kernel_figures(args, args.only, "02")


if __name__ == "__main__":
    main()
