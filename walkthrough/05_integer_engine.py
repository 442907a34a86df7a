"""Step 5: compile the binary-activation models to the integer engine.

The 1W/1A and tau=5 W/1A models of the two-step recipe (step 7; a run
trains them first if they are missing) are compiled (python -m minisnn.infer does
the same for one checkpoint): every binary 3x3 conv runs on packed bits with
XNOR-popcount (BNN) or with the per-channel codebook table (SNN), batch norm
and sign fold into integer thresholds. Look at the agreement: the integer
engine must predict the same class as the float model on every test image
(a difference is allowed only where the float logits tie exactly), and at
the images/s of both engines on this machine.
"""

import common
from minisnn import data as D
from minisnn.checkpoint import load_model
from minisnn.compile import compile_model
from minisnn.infer import compare

NAMES = ("bnn_1a_kd", "snn5_1a_kd")


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    common.train_models(args, NAMES)
    dataset = D.load_cifar10(args.data, progress=False)
    x, y = dataset["x_test"], dataset["y_test"]
    if args.quick:
        x, y = D.take_subset(x, y, common.QUICK["test_subset"])
    results = {}
    for name in NAMES:
        model = load_model(common.checkpoint(args, name))
        compiled = compile_model(model)
        r = compare(model, compiled, x, y)
        results[name] = dict(model=common.MODELS[name][0], layers=len(compiled.layers), **r)
        print(f"{common.MODELS[name][0]}: {len(compiled.layers)} binary 3x3 layers on the integer "
              f"engine, {r['images']} test images")
        print(f"  accuracy    integer {100 * r['int_accuracy']:.2f}%, float "
              f"{100 * r['float_accuracy']:.2f}%")
        print(f"  agreement   {r['images'] - r['differing_predictions']}/{r['images']} same class "
              f"({r['differing_predictions']} differ, {r['differing_at_float_ties']} of them at "
              f"exact float ties); identical logits on {r['exactly_equal_logits']} images")
        print(f"  images/s    integer {r['int_images_per_s']:.0f}, float "
              f"{r['float_images_per_s']:.0f} (x{r['speedup']:.2f})")
        if r["differing_predictions"] != r["differing_at_float_ties"]:
            raise SystemExit(f"{name}: the integer engine disagrees with the float model away "
                             "from a tie: a bug, please report it")
    print(f"wrote {common.write_json(f'{args.out}/05_integer_engine.json', results)}")


if __name__ == "__main__":
    main()
