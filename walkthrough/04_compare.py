"""Step 4: the comparison table, the paper's story in one place.

For every model of steps 1, 3 and 7 (each row says its recipe: 'sgd-cosine'
for steps 1 and 3, 'reactnet-kd' for step 7): test accuracy, bits per weight of the
binary 3x3 layers, model size in bytes (32-bit floats for the full-precision
layers and batch norm, the binary layers at their own width), binary
dot-product (Dot9) operations per image, and compression and Dot9 reduction
against the BNN with the same activations. Look at how little accuracy each
step below one bit costs, and note that on ResNet-20's narrow layers
(C_out <= 2^tau in most of them) the Dot9 count does not fall: the
acceleration needs layers wider than the codebook (see step 6). The table is
``<out>/results.json`` and ``04_accuracy_vs_bits.png``; it also checks the
issue's accuracy targets and says which are met.

``--include`` adds the rows of earlier runs of this step (another results
folder, another machine) from their ``results.json``, tagged run A, B, ...
(this folder's rows come last); a target is checked within every run that
has all its rows, or else across runs, and says which.
"""

import json
from pathlib import Path

import common
from minisnn.checkpoint import load_model
from minisnn.figures import scatter_plot
from minisnn.summary import summarize

ORDER = ("fp", "bnn_32a", "snn6_32a", "snn5_32a", "snn4_32a", "snn5_32a_norefine",
         "snn5_32a_frequent", "bnn_1a", "snn5_1a") + common.KD_MODELS
DATA_NOTE = ("CIFAR-10 as re-encoded to JPEG in ../shared/data/cifar10-jpg.tar.gz (50,000 train / "
             "10,000 test images); accuracy is on all 10,000 test images")


def row(args, name):
    m = common.metrics(args, name)
    model = load_model(common.checkpoint(args, name))
    totals = summarize(model)["totals"]
    quant = m["model"]["quant"]
    prior = common.with_dependencies(name)[:-1]  # models it starts from, trained first
    r = {"name": name, "model": common.MODELS[name][0], "mode": m["mode"],
         "recipe": common.recipe_of(name),
         "epochs": m["epoch"][-1], "train_minutes": round(m["total_seconds"] / 60, 1),
         "starts_from": {option.lstrip("-"): dep for option, dep in common.DEPENDS.get(name, [])},
         "prior_epochs": sum(common.metrics(args, n)["epoch"][-1] for n in prior),
         "test_accuracy": round(100 * m["final_test_acc"], 2),
         "best_epoch_accuracy": round(100 * max(m["test_acc"]), 2)}
    if quant == "fp":
        r.update(bits_per_weight=32.0, size_bytes=int(totals["fp_bytes"]), dot9_ops=None)
    else:
        key = "bnn" if quant == "bnn" else "snn"
        bits = 1.0 if quant == "bnn" else m["model"]["tau"] / 9  # sub-bit: tau bits per 9 weights
        r.update(bits_per_weight=round(bits, 4), size_bytes=int(totals[f"{key}_bytes"]),
                 dot9_ops=int(totals[f"{key}_dot9"]))
        r.update(compression_vs_bnn=round(totals["bnn_bytes"] / r["size_bytes"], 3),
                 dot9_reduction_vs_bnn=round(totals["bnn_dot9"] / r["dot9_ops"], 3))
    return r


# The accuracy targets: (text, rows it reads, value from their accuracies, bound, op).
CHECKS = [("full precision >= 88%", ("fp",), lambda a: a["fp"], 88.0, ">="),
          ("1W/32A >= 85%", ("bnn_32a",), lambda a: a["bnn_32a"], 85.0, ">="),
          ("tau=5 W/32A within 3.0 of 1W/32A", ("bnn_32a", "snn5_32a"),
           lambda a: a["bnn_32a"] - a["snn5_32a"], 3.0, "<="),
          ("tau=6 W/32A within 1.5 of 1W/32A", ("bnn_32a", "snn6_32a"),
           lambda a: a["bnn_32a"] - a["snn6_32a"], 1.5, "<="),
          ("1W/1A >= 75%", ("bnn_1a",), lambda a: a["bnn_1a"], 75.0, ">="),
          ("tau=5 W/1A within 4.0 of 1W/1A", ("bnn_1a", "snn5_1a"),
           lambda a: a["bnn_1a"] - a["snn5_1a"], 4.0, "<="),
          ("refinement beats no refinement at tau=5", ("snn5_32a", "snn5_32a_norefine"),
           lambda a: a["snn5_32a"] - a["snn5_32a_norefine"], 0.0, ">"),
          # the authors' recipe (step 7)
          ("1W/1A (KD) >= 80%", ("bnn_1a_kd",), lambda a: a["bnn_1a_kd"], 80.0, ">="),
          ("tau=6 W/1A (KD) within 2.0 of 1W/1A (KD)", ("bnn_1a_kd", "snn6_1a_kd"),
           lambda a: a["bnn_1a_kd"] - a["snn6_1a_kd"], 2.0, "<="),
          ("tau=5 W/1A (KD) within 3.0 of 1W/1A (KD)", ("bnn_1a_kd", "snn5_1a_kd"),
           lambda a: a["bnn_1a_kd"] - a["snn5_1a_kd"], 3.0, "<="),
          ("tau=4 W/1A (KD) within 4.5 of 1W/1A (KD)", ("bnn_1a_kd", "snn4_1a_kd"),
           lambda a: a["bnn_1a_kd"] - a["snn4_1a_kd"], 4.5, "<="),
          ("refinement beats no refinement at tau=5 W/1A (KD), mean of two seeds",
           ("snn5_1a_kd", "snn5_1a_kd_s1", "snn5_1a_kd_norefine", "snn5_1a_kd_norefine_s1"),
           lambda a: (a["snn5_1a_kd"] + a["snn5_1a_kd_s1"] - a["snn5_1a_kd_norefine"]
                      - a["snn5_1a_kd_norefine_s1"]) / 2, 0.0, ">")]


def targets(rows):
    """Each target with its measured value and met/missed, once per run that has
    all its rows; a target no single run can check takes every row from the
    latest run that has it. ``runs`` names the run of each row used."""
    acc = {(r.get("run"), r["name"]): r["test_accuracy"] for r in rows}
    runs = sorted({run for run, _ in acc}, key=str)
    out = []
    for text, names, value, bound, op in CHECKS:
        picks = [{n: run for n in names} for run in runs if all((run, n) in acc for n in names)]
        if not picks:
            latest = {n: [run for run in runs if (run, n) in acc] for n in names}
            if not all(latest.values()):
                continue
            picks = [{n: found[-1] for n, found in latest.items()}]
        for pick in picks:
            v = round(value({n: acc[(run, n)] for n, run in pick.items()}), 2)
            met = {">=": v >= bound, "<=": v <= bound, ">": v > bound}[op]
            out.append({"target": text, "value": v, "met": bool(met),
                        **({"runs": pick} if any(pick.values()) else {})})
    return out


def _runs_text(runs):
    tags = sorted(set(runs.values()))
    if not tags:
        return ""
    if len(tags) == 1:
        return f" (run {tags[0]})"
    return " (across runs: " + ", ".join(f"{n} {run}" for n, run in runs.items()) + ")"


def included_rows(paths, recipe, quick):
    """Rows of earlier results.json files, tagged with run letters A, B, ...

    Refuses a file of another recipe or data mode (its rows would not
    compare) and one that already merges runs (include its sources instead).
    """
    rows, sources = [], []
    for k, path in enumerate(paths):
        run = chr(ord("A") + k)
        try:
            results = json.loads(Path(path).read_text())
            earlier = results["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--include {path}: not a results.json of this step ({exc})")
        if results.get("quick") != quick or results.get("recipe") != recipe:
            raise SystemExit(f"--include {path}: trained with quick={results.get('quick')} and "
                             f"recipe {results.get('recipe')!r}, this run with quick={quick} and "
                             f"recipe {recipe!r}: its rows do not compare")
        unknown = [r.get("name") for r in earlier if r.get("name") not in ORDER]
        if unknown:
            raise SystemExit(f"--include {path}: rows {unknown} are not models of this walkthrough")
        if len(results.get("runs", [])) > 1:
            raise SystemExit(f"--include {path} already merges {len(results['runs'])} runs: "
                             "include the results.json of each instead")
        # rows written before the second recipe existed are all of the first
        rows += [dict({"recipe": "sgd-cosine"}, **r, run=run) for r in earlier]
        sources.append({"run": run, "source": str(path), "rows": [r["name"] for r in earlier]})
    return rows, sources


def format_table(rows):
    runs = len({r.get("run") for r in rows}) > 1  # a run column only when there are several
    head = ["run"] * runs + ["model", "recipe", "epochs (+ prior stages)", "train min", "test acc",
                             "bits/weight", "size (bytes)", "Dot9/image", "compr. vs BNN",
                             "Dot9 red. vs BNN"]
    body = [([r["run"]] if runs else []) + [
             r["model"], r.get("recipe", "sgd-cosine"),
             f"{r['epochs']} (+{r['prior_epochs']})" if r["prior_epochs"]
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
    p = common.parser(__doc__)
    p.add_argument("--include", nargs="+", default=[], metavar="RESULTS_JSON",
                   help="results.json of earlier runs of this step whose rows join the table "
                   "as runs A, B, ... (this folder's rows are the next run)")
    args = p.parse_args(argv)
    recipe = " ".join(common.recipe_args(args.quick))
    rows, runs = included_rows(args.include, recipe, args.quick)
    names = [n for n in ORDER if all(common.finished(args, d) for d in common.with_dependencies(n))]
    missing = [n for n in ORDER if n not in names and n not in {r["name"] for r in rows}]
    if not names and not rows:
        raise SystemExit(f"no trained model under {args.out}/models: run steps 1, 3 and 7 first")
    here = [row(args, n) for n in names]
    if runs:  # this folder's rows are the next run; each model's rows stay together
        if here:
            run = chr(ord("A") + len(runs))
            here = [dict(r, run=run) for r in here]
            runs.append({"run": run, "source": str(args.out), "rows": names})
        rows = sorted(rows + here, key=lambda r: (ORDER.index(r["name"]), r["run"]))
    else:
        rows = here
    checks = targets(rows)
    print(format_table(rows))
    if missing:
        print(f"\nnot trained yet (run steps 1, 3 and 7): {', '.join(missing)}")
    print()
    for c in checks:
        print(f"{'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['value']:.2f}"
              f"{_runs_text(c.get('runs', {}))}")
    data = (f"--quick: {common.QUICK['subset']} training and {common.QUICK['test_subset']} test "
            "images" if args.quick else DATA_NOTE)
    results = {"data": data, "quick": args.quick, "recipe": recipe,
               "recipes": {name: " ".join(common.recipe_args(args.quick, name))
                           for name in common.RECIPES}, "rows": rows,
               "not_trained_yet": missing, "targets": checks}
    if runs:
        results["runs"] = runs
    print(f"\nwrote {common.write_json(f'{args.out}/results.json', results)}")
    points = [{"x": r["bits_per_weight"], "y": r["test_accuracy"],
               "label": r["model"] + (f" ({r['run']})" if runs else "")}
              for r in rows if r["name"] != "fp"]
    if points:
        png = scatter_plot(points, f"{args.out}/04_accuracy_vs_bits.png",
                           title="ResNet-20 on CIFAR-10: accuracy vs bits per binary-layer weight",
                           xlabel="bits per weight (binary 3x3 layers)", ylabel="test accuracy (%)")
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
