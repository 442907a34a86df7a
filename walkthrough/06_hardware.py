"""Step 6: the tau=5 W/1A model on the Verilog engines.

Exports the weight ROMs of every binary layer of the tau=5 W/1A model
(python -m minisnn.export --rom), reads one layer back from its ROM files,
and runs it under Icarus Verilog on the activations a real CIFAR-10 test
image produces at that layer, through both engines: the SNN processing
element (per input channel, 2^tau Dot9s into a table that output lanes read
by index) and the BNN baseline (a Dot9 per output channel). Both must equal
the Python golden model bit for bit, and their sums times alpha the float
model's conv output. Then cycles and yosys cells of both. Look at where the
SNN wins: the default layer is 64->64, wider than the 32-kernel codebook,
so the SNN needs half the Dot9s and about 1.8x less weight memory.
"""

import numpy as np

import common
from minisnn import data as D
from minisnn import export, rtlsim
from minisnn.checkpoint import load_model
from minisnn.compile import capture
from minisnn.quant import sign, weight_scale

NAME = "snn5_1a"


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--layer", default="layer3.1.conv1", help="which binary layer to simulate")
    p.add_argument("--image", type=int, default=0, help="index of the CIFAR-10 test image")
    p.add_argument("--lanes", type=int, default=8, help="output lanes of both engines")
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
    acts = sign(x[0]).astype(np.int8)
    alpha = weight_scale(dict(model.named_modules())[args.layer].weight.data)[:, None, None]
    print(f"\n{args.layer}: {layer.c_in}->{layer.c_out}, {layer.height}x{layer.width}, stride "
          f"{layer.stride}, tau={layer.tau}; activations of test image {args.image}")
    rows = {}
    for engine in rtlsim.ENGINES:
        p_dot = rtlsim.balanced_p_dot(layer.c_out, layer.tau, args.lanes) if engine == "snn" else 1
        sim = rtlsim.check_layer(layer, acts, engine, args.lanes, p_dot)  # raises on a mismatch
        float_equal = bool(np.array_equal(sim.sums.astype(np.float32) * alpha, out[0]))
        if not float_equal:
            raise SystemExit(f"{args.layer} ({engine}): RTL sums times alpha differ from the "
                             "float model's conv output")
        synth = rtlsim.synth_stats(layer, engine, args.lanes, p_dot, "generic")
        rows[engine] = {
            "engine": engine, "lanes": args.lanes, "dot9_units": p_dot if engine == "snn" else args.lanes,
            "equals_golden_model": True, "equals_float_model": float_equal,
            "output_values": int(sim.sums.size), "cycles": int(sim.cycles),
            "cycles_model": rtlsim.cycle_model(engine, layer.c_in, layer.c_out, layer.height,
                                               layer.width, layer.stride, layer.tau, args.lanes, p_dot),
            "cells": synth["cells"], "cells_x_cycles": synth["cells"] * int(sim.cycles),
            "weight_bits": rtlsim.weight_bits(engine, layer.c_in, layer.c_out, layer.tau),
        }
        r = rows[engine]
        print(f"  {engine.upper()} engine: {r['output_values']} sums equal the golden and the "
              f"float model; {r['cycles']} cycles (model {r['cycles_model']}), "
              f"{r['dot9_units']} Dot9 units, {r['cells']} yosys cells (memories black-boxed), "
              f"{r['weight_bits']} weight bits")
    s, b = rows["snn"], rows["bnn"]
    print(f"  SNN vs BNN (SNN / BNN): weight bits {s['weight_bits'] / b['weight_bits']:.2f}x, "
          f"cycles {s['cycles'] / b['cycles']:.2f}x, cells {s['cells'] / b['cells']:.2f}x, "
          f"cells x cycles {s['cells_x_cycles'] / b['cells_x_cycles']:.2f}x")
    result = {"model": common.MODELS[NAME][0], "layer": args.layer, "image": args.image,
              "c_in": layer.c_in, "c_out": layer.c_out, "height": layer.height,
              "width": layer.width, "stride": layer.stride, "tau": layer.tau, "engines": rows}
    print(f"wrote {common.write_json(f'{args.out}/06_hardware.json', result)}")


if __name__ == "__main__":
    main()
