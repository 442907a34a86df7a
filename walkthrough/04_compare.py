"""Step 4: the comparison table, the paper's story in one place.

For every model of steps 1 and 3: test accuracy, bits per weight of the
binary 3x3 layers, model size in bytes (32-bit floats for the full-precision
layers and batch norm, the binary layers at their own width), binary
dot-product (Dot9) operations per image, and compression and Dot9 reduction
against the BNN with the same activations. Look at how little accuracy each
step below one bit costs, and note that on ResNet-20's narrow layers
(C_out <= 2^tau in most of them) the Dot9 count does not fall: the
acceleration needs layers wider than the codebook (see step 6). The table is
``<out>/results.json`` and ``04_accuracy_vs_bits.png``; it also checks the
issue's accuracy targets and says which are met.
"""

import common
from minisnn.checkpoint import load_model
from minisnn.figures import scatter_plot
from minisnn.summary import summarize

ORDER = ("fp", "bnn_32a", "snn6_32a", "snn5_32a", "snn4_32a", "snn5_32a_norefine",
         "snn5_32a_frequent", "bnn_1a", "snn5_1a")
DATA_NOTE = ("CIFAR-10 as re-encoded to JPEG in ../shared/data/cifar10-jpg.tar.gz (50,000 train / "
             "10,000 test images); accuracy is on all 10,000 test images")


def row(args, name):
    m = common.metrics(args, name)
    model = load_model(common.checkpoint(args, name))
    totals = summarize(model)["totals"]
    quant = m["model"]["quant"]
    prior = common.with_dependencies(name)[:-1]  # models it starts from, trained first
    r = {"name": name, "model": common.MODELS[name][0], "mode": m["mode"],
         "epochs": m["epoch"][-1], "train_minutes": round(m["total_seconds"] / 60, 1),
         "starts_from": {option.lstrip("-"): dep for option, dep in common.DEPENDS.get(name, [])},
         "prior_epochs": sum(common.metrics(args, n)["epoch"][-1] for n in prior),
         "test_accuracy": round(100 * m["final_test_acc"], 2),
         "best_epoch_accuracy": round(100 * max(m["test_acc"]), 2)}
    if quant == "fp":
        r.update(bits_per_weight=32.0, size_bytes=int(totals["fp_bytes"]), dot9_ops=None)
    else:
        tau = 9 if quant == "bnn" else m["model"]["tau"]
        key = "bnn" if quant == "bnn" else "snn"
        r.update(bits_per_weight=round(tau / 9, 4), size_bytes=int(totals[f"{key}_bytes"]),
                 dot9_ops=int(totals[f"{key}_dot9"]))
        r.update(compression_vs_bnn=round(totals["bnn_bytes"] / r["size_bytes"], 3),
                 dot9_reduction_vs_bnn=round(totals["bnn_dot9"] / r["dot9_ops"], 3))
    return r


def targets(rows):
    """The issue's accuracy targets, each with the measured value and met/missed."""
    acc = {r["name"]: r["test_accuracy"] for r in rows}
    checks = [("full precision >= 88%", "fp", lambda a: a["fp"], 88.0, ">="),
              ("1W/32A >= 85%", "bnn_32a", lambda a: a["bnn_32a"], 85.0, ">="),
              ("tau=5 W/32A within 3.0 of 1W/32A", "snn5_32a",
               lambda a: a["bnn_32a"] - a["snn5_32a"], 3.0, "<="),
              ("tau=6 W/32A within 1.5 of 1W/32A", "snn6_32a",
               lambda a: a["bnn_32a"] - a["snn6_32a"], 1.5, "<="),
              ("1W/1A >= 75%", "bnn_1a", lambda a: a["bnn_1a"], 75.0, ">="),
              ("tau=5 W/1A within 4.0 of 1W/1A", "snn5_1a",
               lambda a: a["bnn_1a"] - a["snn5_1a"], 4.0, "<="),
              ("refinement beats no refinement at tau=5", "snn5_32a_norefine",
               lambda a: a["snn5_32a"] - a["snn5_32a_norefine"], 0.0, ">")]
    out = []
    for text, _, value, bound, op in checks:
        try:
            v = round(value(acc), 2)
        except KeyError:
            continue
        met = {">=": v >= bound, "<=": v <= bound, ">": v > bound}[op]
        out.append({"target": text, "value": v, "met": bool(met)})
    return out


def format_table(rows):
    head = ["model", "epochs (+ prior stages)", "train min", "test acc", "bits/weight",
            "size (bytes)", "Dot9/image", "compr. vs BNN", "Dot9 red. vs BNN"]
    body = [[r["model"], f"{r['epochs']} (+{r['prior_epochs']})" if r["prior_epochs"]
             else str(r["epochs"]), f"{r['train_minutes']:.1f}", f"{r['test_accuracy']:.2f}%",
             f"{r['bits_per_weight']:.2f}",
             f"{r['size_bytes']:,}", "-" if r["dot9_ops"] is None else f"{r['dot9_ops']:,}",
             f"{r['compression_vs_bnn']:.2f}x" if "compression_vs_bnn" in r else "-",
             f"{r['dot9_reduction_vs_bnn']:.2f}x" if "dot9_reduction_vs_bnn" in r else "-"]
            for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    names = [n for n in ORDER if all(common.finished(args, d) for d in common.with_dependencies(n))]
    missing = [n for n in ORDER if n not in names]
    if not names:
        raise SystemExit(f"no trained model under {args.out}/models: run steps 1 and 3 first")
    rows = [row(args, n) for n in names]
    checks = targets(rows)
    print(format_table(rows))
    if missing:
        print(f"\nnot trained yet (run steps 1 and 3): {', '.join(missing)}")
    print()
    for c in checks:
        print(f"{'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['value']:.2f}")
    data = (f"--quick: {common.QUICK['subset']} training and {common.QUICK['test_subset']} test "
            "images" if args.quick else DATA_NOTE)
    results = {"data": data, "quick": args.quick, "recipe": " ".join(common.recipe_args(args.quick)),
               "rows": rows, "not_trained_yet": missing, "targets": checks}
    print(f"\nwrote {common.write_json(f'{args.out}/results.json', results)}")
    points = [{"x": r["bits_per_weight"], "y": r["test_accuracy"], "label": r["model"]}
              for r in rows if r["name"] != "fp"]
    if points:
        png = scatter_plot(points, f"{args.out}/04_accuracy_vs_bits.png",
                           title="ResNet-20 on CIFAR-10: accuracy vs bits per binary-layer weight",
                           xlabel="bits per weight (binary 3x3 layers)", ylabel="test accuracy (%)")
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
