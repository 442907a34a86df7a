"""Step 3: train the sub-bit ResNet-20s and look at their kernels.

Sub-bit (SNN) models with random codebook sampling and refinement: tau = 6,
5, 4 with real activations and tau = 5 with binary activations; then two
ablations at tau = 5 (real activations): random sampling without
refinement, and codebooks initialised with the 2^tau most frequent kernels
of the step-1 1W/32A model ('frequent', which trains that model first if
needed). A kernel figure per model is the paper's Figure 1 (right): every
layer uses only its 2^tau codebook kernels (highlighted); set beside each
other, the figures show what refinement and the initialisation change.
"""

import importlib

import common

NAMES = ("snn6_32a", "snn5_32a", "snn4_32a", "snn5_1a", "snn5_32a_norefine", "snn5_32a_frequent")

step1 = importlib.import_module("01_train_baselines")
step2 = importlib.import_module("02_kernel_distribution")


def main(argv=None):
    args = common.parser(__doc__, NAMES).parse_args(argv)
    step1.train_and_report(args, f"{args.out}/03_subbit_accuracy.png",
                           "sub-bit ResNet-20 on CIFAR-10: test accuracy per epoch")
    step2.kernel_figures(args, args.only, "03")


if __name__ == "__main__":
    main()
