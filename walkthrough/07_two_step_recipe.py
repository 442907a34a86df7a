"""Step 7: binary activations trained the sub-bit authors' way.

The W/1A rows of steps 1 and 3 train a Bi-Real basic block with SGD and
labels. The authors train theirs inside ReActNet's block and recipe
(common.RECIPE_KD): step 1 binarizes the activations only
('step1_a1', real weights), step 2 starts from it and binarizes the weights
too: 1W/1A ('bnn_1a_kd') and sub-bit tau = 6, 5, 4 ('snn6_1a_kd',
'snn5_1a_kd', 'snn4_1a_kd'); every run learns from the step-1
full-precision model's logits (distillation), with Adam and a learning rate
decayed linearly to zero. Refinement against random sampling without it is
measured at tau = 5 with two seeds each ('snn5_1a_kd', 'snn5_1a_kd_s1',
'snn5_1a_kd_norefine', 'snn5_1a_kd_norefine_s1'). Prints the test
accuracies, the refinement comparison (mean and spread over the seeds),
draws the accuracy curves and a kernel figure per sub-bit model (the
paper's Figure 1, right) with the share of codebook kernels refinement
brought in.
"""

import importlib

import numpy as np

import common

NAMES = common.KD_MODELS
REFINE = ("snn5_1a_kd", "snn5_1a_kd_s1")
NO_REFINE = ("snn5_1a_kd_norefine", "snn5_1a_kd_norefine_s1")

step1 = importlib.import_module("01_train_baselines")
step2 = importlib.import_module("02_kernel_distribution")


def refinement_comparison(args):
    """Mean and spread of refinement vs no refinement at tau=5 W/1A, or None
    until all four runs are trained."""
    if not all(common.finished(args, n) for n in REFINE + NO_REFINE):
        return None
    acc = {n: 100 * common.metrics(args, n)["final_test_acc"] for n in REFINE + NO_REFINE}
    with_r = np.array([acc[n] for n in REFINE])
    without = np.array([acc[n] for n in NO_REFINE])
    gap = with_r.mean() - without.mean()
    spread = max(np.ptp(with_r), np.ptp(without))
    return {"refine": acc, "refine_mean": with_r.mean(), "norefine_mean": without.mean(),
            "gap": gap, "seed_spread": spread, "beyond_spread": bool(abs(gap) > spread)}


def main(argv=None):
    args = common.parser(__doc__, NAMES).parse_args(argv)
    step1.train_and_report(args, f"{args.out}/07_recipe_accuracy.png",
                           "ResNet-20, ReActNet blocks, distilled: test accuracy per epoch")
    c = refinement_comparison(args)
    if c:
        print(f"\ntau=5 W/1A, two seeds each: refinement {c['refine_mean']:.2f}% vs without "
              f"{c['norefine_mean']:.2f}%: {c['gap']:+.2f} points; the seed-to-seed spread is "
              f"{c['seed_spread']:.2f}, so refinement "
              + ("helps beyond it" if c["beyond_spread"] and c["gap"] > 0 else
                 "hurts beyond it" if c["beyond_spread"] else "does not differ beyond it"))
    subbit = [n for n in args.only if n.startswith("snn")]
    if subbit:
        step2.kernel_figures(args, subbit, "07")


if __name__ == "__main__":
    main()
