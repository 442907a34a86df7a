"""Compare minisnn's conversions of the full-size fixtures with PyTorch's logits.

    python scripts/make_torch_fixtures.py --full /tmp/full   # needs torch
    python scripts/compare_full_fixtures.py /tmp/full        # does not

For each checkpoint in ``DIR/logits.npz`` and each assignment rule
(``--assign float32``, the default, and ``exact``): the largest difference
between minisnn's float logits and PyTorch's (float32 assignment, as the
authors' model computes on a CPU) relative to the largest PyTorch logit,
the same against PyTorch with exact assignment (``NAME:exact``), the number
of kernels the two rules assign differently, and whether the integer
engine's logits equal the float model's bit for bit (float32 rule only).
A BNN, without codebooks, is converted once.
"""

import argparse
import pathlib
import warnings

import numpy as np

from minisnn import convert, torchfile
from minisnn.compile import compile_model


def relative(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=pathlib.Path, help="folder written by "
                        "make_torch_fixtures.py --full")
    args = parser.parse_args(argv)
    stored = np.load(args.dir / "logits.npz")
    x = stored["x"]
    print(f"{'checkpoint':<32} {'assign':<8} {'vs torch':>9} {'vs exact':>9} {'differ':>6}  "
          "integer == float")
    for name in [k for k in stored.files if k != "x" and not k.endswith(":exact")]:
        state, _ = convert.read_state(torchfile.load(args.dir / name), name)
        for assign in ("float32", "exact"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the rule differences are printed below
                model = convert.convert(dict(state), name, assign=assign)
            out = model.forward(x.copy())
            differ = sum(convert.rule_differences(model).values())
            same = ""
            if assign == "float32":
                same = np.array_equal(compile_model(model, input_size=x.shape[-1]).predict(x),
                                      out)
            print(f"{name:<32} {assign:<8} {relative(out, stored[name]):9.2e} "
                  f"{relative(out, stored[name + ':exact']):9.2e} {differ:6d}  {same}",
                  flush=True)
            if model.config["quant"] != "snn":
                break  # no codebooks: one rule is all there is


if __name__ == "__main__":
    main()
