"""Step 6: the tau=5 W/1A model on the Verilog engines.

Exports the weight ROMs of every binary layer of the tau=5 W/1A model of
the two-step recipe (step 7; a run trains it first if it is missing)
(python -m minisnn.export --rom), reads one layer back from its ROM files,
and streams the activations a real CIFAR-10 test image produces at that
layer through the three engines of rtl/conv_layer.v under Icarus Verilog:
the BNN baseline (a Dot9 per output channel), the sub-bit processing
element (per input channel, 2^tau Dot9s into a table that output lanes read
by index) and the 'decompress' engine (lanes read codebook[idx] and run
their own Dot9). Every engine gets the same number of Dot9 units; the
sub-bit one has four lanes per Dot9 unit, as the paper's PE. All must equal
the golden model bit for bit (and the cycle model), and their sums times
alpha the float model's conv output. Then cycles, iCE40 LUTs and weight
bits of each (rtl/README.md has the full sweep): look at where the sub-bit
engine wins, with C_out = 64 wider than the 32-kernel codebook.
"""

import numpy as np

import common
from minisnn import data as D
from minisnn import export, rtlmodel, rtlsim, rtlsynth
from minisnn.checkpoint import load_model
from minisnn.compile import capture
from minisnn.quant import sign, weight_scale

NAME = "snn5_1a_kd"


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--layer", default="layer3.1.binary_conv", help="which binary layer to simulate")
    p.add_argument("--image", type=int, default=0, help="index of the CIFAR-10 test image")
    p.add_argument("--dot9", type=int, default=4,
                   help="Dot9 units of every engine (the sub-bit engine gets 4 lanes per unit)")
    args = p.parse_args(argv)
    common.train_models(args, [NAME])
    ckpt = common.checkpoint(args, NAME)
    rom_dir = f"{args.out}/06_rom"
    if export.main(["--rom", str(ckpt), "--out", rom_dir]) != 0:
        raise SystemExit(f"exporting the ROMs of {ckpt} failed")
    layer = export.read_layer(rom_dir, args.layer)  # the RTL's view: what the ROM files hold

    model = load_model(ckpt)
    images = D.load_cifar10(args.data, progress=False)["x_test"]
    x, out = capture(model, args.layer, D.normalize(images[args.image:args.image + 1]))
    codes = rtlmodel.codes_from_signs(sign(x[0]))
    alpha = weight_scale(dict(model.named_modules())[args.layer].weight.data)[:, None, None]
    print(f"\n{args.layer}: {layer.c_in}->{layer.c_out}, {layer.height}x{layer.width}, stride "
          f"{layer.stride}, tau={layer.tau}; activations of test image {args.image}")
    configs = {"bnn": rtlmodel.EngineConfig("bnn", lanes=args.dot9, dot9=args.dot9),
               "snn": rtlmodel.EngineConfig("snn", lanes=4 * args.dot9, dot9=args.dot9),
               "dec": rtlmodel.EngineConfig("dec", lanes=args.dot9, dot9=args.dot9)}
    rows = {}
    for engine, cfg in configs.items():
        # the engine runs the layer read from the ROM files; raises on a mismatch with the
        # golden or the cycle model
        sim = rtlsim.check_rom(rom_dir, args.layer, codes, cfg)
        float_equal = bool(np.array_equal(sim.sums[0].astype(np.float32) * alpha, out[0]))
        if not float_equal:
            raise SystemExit(f"{args.layer} ({engine}): RTL sums times alpha differ from the "
                             "float model's conv output")
        synth = rtlsynth.synth(layer, cfg, "ice40")
        rows[engine] = {
            "engine": engine, "config": rtlmodel.describe(cfg, layer.tau), "lanes": cfg.lanes,
            "dot9_units": cfg.dot9, "equals_golden_model": True, "equals_float_model": float_equal,
            "output_values": int(sim.sums.size), "cycles": int(sim.cycles),
            "lut": synth.get("lut"), "ff": synth.get("ff"),
            "weight_bits": rtlmodel.weight_bits(engine, layer.c_in, layer.c_out, layer.tau),
        }
        r = rows[engine]
        print(f"  {r['config']}: {r['output_values']} sums equal the golden and the float "
              f"model; {r['cycles']} cycles, {r['lut']} iCE40 LUTs, {r['ff']} FFs, "
              f"{r['weight_bits']} weight bits")
    b = rows["bnn"]
    for engine in ("snn", "dec"):
        r = rows[engine]
        print(f"  {engine} / bnn: weight bits {r['weight_bits'] / b['weight_bits']:.2f}x, cycles "
              f"{r['cycles'] / b['cycles']:.2f}x, LUTs {r['lut'] / b['lut']:.2f}x")
    result = {"model": common.MODELS[NAME][0], "layer": args.layer, "image": args.image,
              "c_in": layer.c_in, "c_out": layer.c_out, "height": layer.height,
              "width": layer.width, "stride": layer.stride, "tau": layer.tau, "engines": rows}
    print(f"wrote {common.write_json(f'{args.out}/06_hardware.json', result)}")


if __name__ == "__main__":
    main()
