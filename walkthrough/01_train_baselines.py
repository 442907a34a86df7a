"""Step 1: train the full-precision and the binarized ResNet-20s on CIFAR-10.

Trains 'fp' (full precision), 'bnn_32a' (1W/32A: binary weights, real
activations) and 'bnn_1a' (1W/1A: binary weights and activations) with the
walkthrough's one recipe, then prints their test accuracy per epoch and
draws the three test-accuracy curves in one figure.
"""

import common
from minisnn.figures import line_plot

NAMES = ("fp", "bnn_32a", "bnn_1a")


def accuracy_figure(args, names, path, title):
    series = []
    for name in names:
        m = common.metrics(args, name)
        series.append({"x": m["epoch"], "y": [100 * a for a in m["test_acc"]],
                       "label": common.MODELS[name][0]})
    return line_plot(series, path, title=title, xlabel="epoch", ylabel="test accuracy (%)")


def print_accuracies(args, names):
    for name in names:
        m = common.metrics(args, name)
        curve = " ".join(f"{100 * a:.1f}" for a in m["test_acc"])
        print(f"{common.MODELS[name][0]:>30}: {100 * m['final_test_acc']:.2f}% "
              f"({m['epoch'][-1]} epochs, {m['total_seconds'] / 60:.1f} min); per epoch: {curve}")


def train_and_report(args, png, title):
    """Train ``args.only`` (what is missing), print their test accuracies and draw
    their curves into ``png``: what the training steps share."""
    common.train_models(args, args.only)
    print("\ntest accuracy (the last epoch's, after batch-norm recalibration):")
    print_accuracies(args, args.only)
    print(f"wrote {accuracy_figure(args, args.only, png, title)}")


def main(argv=None):
    args = common.parser(__doc__, NAMES).parse_args(argv)
    train_and_report(args, f"{args.out}/01_baselines_accuracy.png",
                     "ResNet-20 on CIFAR-10: test accuracy per epoch")


if __name__ == "__main__":
    main()
