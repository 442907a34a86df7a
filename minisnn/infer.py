"""Integer-engine inference: ``python -m minisnn.infer CHECKPOINT``.

Compiles a 1W/1A or sub-bit W/1A checkpoint (minisnn.compile), runs it on
the CIFAR-10 test set next to the float model in eval mode, and reports the
engine's accuracy, its agreement with the float model (differing
predictions, images whose logits are exactly equal, max |logit
difference|) and the images/s of both, each timed over the same batches.
An ImageNet model (e.g. one ``minisnn.convert`` wrote) runs on an
ImageNet-style folder instead, ``--data DIR`` with one subfolder per class
(minisnn.imagefolder: resize 256, centre crop 224, ImageNet mean/std),
streamed in batches, with top-1 and top-5 accuracy of both. A checkpoint
the engine cannot run (full precision, real activations) is refused with
the first offending layer named (exit code 2).
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import json
import sys
import time

import numpy as np

from . import data as D
from . import imagefolder
from .checkpoint import load_model
from .compile import compile_model
from .models import mode_name


def logits_in_batches(forward, images, batch_size=500):
    """forward(normalized batch) over uint8 NHWC images in consecutive batches.

    The float and the compiled model must see the same partition: BLAS
    may sum the classifier's dot products differently for another batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, found {batch_size}")
    return np.concatenate([forward(D.normalize(images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])


def _timed_logits(forward, images, batch_size):
    forward(D.normalize(images[:2]))  # warm-up: numba compilation and caches
    start = time.perf_counter()
    logits = logits_in_batches(forward, images, batch_size)
    return logits, time.perf_counter() - start


def compare(model, compiled, images, labels, batch_size=500):
    """Accuracy of both and their agreement on ``images`` (uint8 NHWC)."""
    int_logits, int_seconds = _timed_logits(compiled.predict, images, batch_size)
    float_logits, float_seconds = _timed_logits(model.forward, images, batch_size)
    int_pred, float_pred = int_logits.argmax(axis=1), float_logits.argmax(axis=1)
    differ = int_pred != float_pred
    # a disagreement is harmless only if the float logits tie at the top
    top = float_logits.max(axis=1, keepdims=True)
    tied = (float_logits == top).sum(axis=1) > 1
    n = len(labels)
    return {
        "images": n, "batch_size": batch_size,
        "int_accuracy": float((int_pred == labels).mean()),
        "float_accuracy": float((float_pred == labels).mean()),
        "differing_predictions": int(differ.sum()),
        "differing_at_float_ties": int((differ & tied).sum()),
        "exactly_equal_logits": int(np.all(int_logits == float_logits, axis=1).sum()),
        "max_abs_logit_difference": float(np.abs(int_logits.astype(np.float64)
                                                 - float_logits).max()),
        "int_images_per_s": n / int_seconds, "float_images_per_s": n / float_seconds,
        "speedup": float_seconds / int_seconds,
    }


def _topk_hits(logits, labels, k):
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def compare_folder(model, compiled, root, batch_size=50, limit=None):
    """As :func:`compare`, on an ImageNet-style folder streamed in batches, with
    top-1 and top-5 accuracy; memory stays bounded by one batch."""
    totals = dict.fromkeys(("n", "int_top1", "int_top5", "float_top1", "float_top5", "differ",
                            "tied", "equal"), 0)
    seconds = {"int": 0.0, "float": 0.0}
    max_diff = 0.0
    for x, y in imagefolder.batches(root, batch_size, limit):
        start = time.perf_counter()
        int_logits = compiled.predict(x)
        seconds["int"] += time.perf_counter() - start
        start = time.perf_counter()
        float_logits = model.forward(x)
        seconds["float"] += time.perf_counter() - start
        k = min(5, float_logits.shape[1])
        differ = int_logits.argmax(axis=1) != float_logits.argmax(axis=1)
        tied = (float_logits == float_logits.max(axis=1, keepdims=True)).sum(axis=1) > 1
        totals["n"] += len(y)
        totals["int_top1"] += _topk_hits(int_logits, y, 1)
        totals["int_top5"] += _topk_hits(int_logits, y, k)
        totals["float_top1"] += _topk_hits(float_logits, y, 1)
        totals["float_top5"] += _topk_hits(float_logits, y, k)
        totals["differ"] += int(differ.sum())
        totals["tied"] += int((differ & tied).sum())
        totals["equal"] += int(np.all(int_logits == float_logits, axis=1).sum())
        max_diff = max(max_diff, float(np.abs(int_logits.astype(np.float64) - float_logits).max()))
    n = totals["n"]
    return {
        "images": n, "batch_size": batch_size,
        "int_accuracy": totals["int_top1"] / n, "float_accuracy": totals["float_top1"] / n,
        "int_top5_accuracy": totals["int_top5"] / n, "float_top5_accuracy": totals["float_top5"] / n,
        "differing_predictions": totals["differ"], "differing_at_float_ties": totals["tied"],
        "exactly_equal_logits": totals["equal"], "max_abs_logit_difference": max_diff,
        "int_images_per_s": n / seconds["int"], "float_images_per_s": n / seconds["float"],
        "speedup": seconds["float"] / seconds["int"],
    }


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minisnn.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.npz of a 1W/1A or sub-bit W/1A ResNet "
                   "(CIFAR ResNet-20, or an ImageNet ResNet-18 with --data DIR)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="with an image folder: only the first N images of every class")
    p.add_argument("--batch-size", type=int, default=500,
                   help="images per forward, the same batches for both models (default 500)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    D.add_data_arguments(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be positive, found {args.batch_size}")
        model = load_model(args.checkpoint)
        try:
            compiled = compile_model(model)
        except ValueError as exc:
            raise ValueError(f"{args.checkpoint}: {exc}") from None
        if model.input_size != 32 or (args.data and imagefolder.looks_like_image_folder(args.data)):
            if not args.data:
                raise ValueError(f"{args.checkpoint}: an ImageNet model needs --data DIR, a folder "
                                 "of class subfolders (e.g. the ImageNet validation set)")
            result = compare_folder(model, compiled, args.data, args.batch_size, args.limit)
        else:
            dataset = D.load_from_args(args, progress=not args.json)
            result = compare(model, compiled, dataset["x_test"], dataset["y_test"],
                             args.batch_size)
    except ValueError as exc:  # data.DataError is a ValueError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = compiled.config
    result = dict(checkpoint=str(args.checkpoint), mode=mode_name(config["quant"], config["act"],
                                                                   config.get("tau")), **result)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{result['checkpoint']}: {config.get('arch')} {result['mode']}, "
          f"{len(compiled.layers)} binary 3x3 layers on the integer engine")
    print(f"test images          {result['images']} (batches of {result['batch_size']})")
    print(f"accuracy             integer {100 * result['int_accuracy']:.2f}%, "
          f"float {100 * result['float_accuracy']:.2f}%")
    if "int_top5_accuracy" in result:
        print(f"top-5 accuracy       integer {100 * result['int_top5_accuracy']:.2f}%, "
              f"float {100 * result['float_top5_accuracy']:.2f}%")
    print(f"differing predictions {result['differing_predictions']} "
          f"({result['differing_at_float_ties']} at float ties)")
    print(f"exactly equal logits {result['exactly_equal_logits']} / {result['images']} images, "
          f"max |difference| {result['max_abs_logit_difference']:.3g}")
    print(f"images/s             integer {result['int_images_per_s']:.0f}, "
          f"float {result['float_images_per_s']:.0f} (x{result['speedup']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
