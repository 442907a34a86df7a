"""Copy trained walkthrough models into walkthrough/models/, the shipped pretrained models.

For each finished model (``<out>/models/<name>/metrics.json``) writes
``walkthrough/models/<name>.npz``: the model's state alone, compressed
(minisnn.checkpoint.save_inference; ``minisnn.checkpoint.load_model``
rebuilds it), and its entry in ``walkthrough/models/manifest.json``: file,
sha256, mode, recipe, seed, epochs, training minutes and the test accuracy
it reached on all 10,000 CIFAR-10 test images.
"""

import json
from pathlib import Path

import common
from minisnn.checkpoint import file_sha256, load_model, save_inference, write_json

MODELS_DIR = common.MODELS_DIR


def publish(args, name, folder=MODELS_DIR):
    """Write ``name``'s inference checkpoint and manifest entry into ``folder``."""
    m = common.metrics(args, name)
    model = load_model(common.checkpoint(args, name))
    entry = {"mode": m["mode"], "recipe": common.recipe_of(name),
             "label": common.MODELS[name][0], "seed": m["model"]["seed"],
             "epochs": m["epoch"][-1], "train_minutes": round(m["total_seconds"] / 60, 1),
             "test_accuracy": round(100 * m["final_test_acc"], 2),
             "test_correct": round(m["final_test_acc"] * len_test(m))}
    metrics = {k: v for k, v in m.items() if k != "train"}  # the run's own paths stay out
    path = save_inference(folder / f"{name}.npz", model, metrics=metrics, **entry)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[name] = dict(entry, file=path.name, sha256=file_sha256(path))
    write_json(manifest_path, dict(sorted(manifest.items())))
    return path, manifest[name]


def len_test(metrics):
    """Test images the accuracy was measured on (all of them unless --test-subset)."""
    return metrics["train"].get("test_subset") or 10000


def main(argv=None):
    p = common.parser(__doc__, list(common.MODELS))
    p.add_argument("--to", default=str(MODELS_DIR), metavar="DIR",
                   help="folder of the published models and their manifest.json")
    args = p.parse_args(argv)
    if args.pretrained:
        raise SystemExit("--pretrained models are already published")
    if args.quick and Path(args.to) == MODELS_DIR:
        raise SystemExit("--quick models are not worth shipping: publish full runs only")
    for name in args.only:
        if not common.finished(args, name):
            print(f"{name}: not trained under {args.out}, skipped")
            continue
        path, entry = publish(args, name, Path(args.to))
        print(f"{name}: {path} ({path.stat().st_size:,} bytes), "
              f"{entry['test_accuracy']:.2f}% test accuracy")


if __name__ == "__main__":
    main()
