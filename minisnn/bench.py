"""Benchmarks: ``python -m minisnn.bench {train,kernels,infer,rtl} [--json]``.

Figures are medians over repeated runs inside one process; quote ratios
measured in one run, absolute times drift between machines and loads.
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import json
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minisnn.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for register in REGISTRY:
        name, run = register(sub)
        commands[name] = run
    args = parser.parse_args(argv)
    result = commands[args.command](args)
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2)
        print()


# ------------------------------------------------------------------- train

TRAIN_MODES = (  # (name, quant, act, block, distilled: Adam and an fp teacher, as the recipe)
    ("fp", "fp", "real", "basic", False), ("1W/32A", "bnn", "real", "basic", False),
    ("1W/1A", "bnn", "binary", "basic", False), ("tau=5 W/32A", "snn", "real", "basic", False),
    ("tau=5 W/1A", "snn", "binary", "basic", False),
    ("step1 KD", "fp", "binary", "reactnet", True), ("1W/1A KD", "bnn", "binary", "reactnet", True),
    ("tau=5 W/1A KD", "snn", "binary", "reactnet", True),
    ("1W/1A KD cached", "bnn", "binary", "reactnet", "cached"),
)


def _torch_train_step(batch, seed):
    """PyTorch's float ResNet-20 training step (SGD, :func:`_torch_resnet20`) on
    one random batch, or None without torch."""
    model = _torch_resnet20(seed)
    if model is None:
        return None
    import torch
    from torch import nn
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def _peak_step_memory(step):
    """Peak bytes numpy allocates during one step (tracemalloc sees numpy's
    data buffers), measured outside the timed runs."""
    import tracemalloc
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _run_train(args):
    """Median wall time of one ResNet-20 training step (forward, backward,
    SGD update, codebook hooks) per mode, timed interleaved so load drift
    hits every mode alike; each timed step follows an untimed one of the
    same mode, as in training. The 'KD' modes are the two-step recipe's:
    ReActNet blocks, Adam, and an eval-mode full-precision ResNet-20
    teacher's forward on the same batch ('cached': its logits read from the
    cache, as runs after the first of a seed do); 'vs 1W/1A' compares with
    the plain 1W/1A step; 'PyTorch fp' (when torch is importable) is
    PyTorch's float ResNet-20 step on the same batch."""
    import resource
    import time

    import numpy as np

    from . import models
    from .optim import make_optimizer
    from .train import train_step, update_hooks

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    steps = {}
    teacher = models.resnet20("fp", "real", seed=args.seed + 1).eval()
    for name, quant, act, block, distilled in TRAIN_MODES:
        if args.modes and name not in args.modes:
            continue
        model = models.resnet20(quant, act, tau=5 if quant == "snn" else None, seed=args.seed,
                                block=block)
        opt = (make_optimizer("adam", model.named_parameters(), 1e-3) if distilled else
               make_optimizer("sgd", model.named_parameters(), 0.01, weight_decay=5e-4))
        hooks = update_hooks(model)
        if distilled == "cached":  # the teacher's logits read from --teacher-cache
            logits = teacher.forward(x)
            steps[name] = (lambda model=model, opt=opt, hooks=hooks, t=logits:
                           train_step(model, opt, x, y, hooks, t))
        else:
            steps[name] = (lambda model=model, opt=opt, hooks=hooks, t=teacher if distilled else None:
                           train_step(model, opt, x, y, hooks, None if t is None else t.forward(x)))
        steps[name]()  # warm-up: numba compilation, first allocations
    if not args.modes or "PyTorch fp" in args.modes:
        torch_step = _torch_train_step(args.batch, args.seed)
        if torch_step is None:
            print("PyTorch not importable: no PyTorch row (pip install torch to compare)")
        else:
            steps["PyTorch fp"] = torch_step
            torch_step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            # an untimed step first: in training the step before is the same
            # model's, whose freed buffers and cache lines the next one reuses
            # (timed right after another mode's step, fp measured ~12% slower)
            step()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    rows = []
    for name in steps:
        med = float(np.median(times[name]))
        rows.append({"mode": name, "step_ms": 1e3 * med, "step_min_ms": 1e3 * min(times[name]),
                     "images_per_s": args.batch / med,
                     "peak_step_mib": (None if name == "PyTorch fp"  # torch's own allocator
                                       else _peak_step_memory(steps[name]) / 2**20)})
    by_mode = {r["mode"]: r for r in rows}
    for r in rows:
        fp = by_mode.get("fp")
        r["vs_fp"] = r["step_ms"] / fp["step_ms"] if fp else None
        if r["mode"].startswith("tau="):
            bnn = by_mode.get("1W/" + r["mode"].split("W/")[1])
            r["vs_bnn"] = r["step_ms"] / bnn["step_ms"] if bnn else None
        plain = by_mode.get("1W/1A")
        r["vs_1w1a"] = r["step_ms"] / plain["step_ms"] if plain else None
        torch_fp = by_mode.get("PyTorch fp")
        r["vs_pytorch_fp"] = r["step_ms"] / torch_fp["step_ms"] if torch_fp else None
    result = {"batch": args.batch, "repeats": args.repeats, "rows": rows,
              "process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if not args.json:
        print(f"ResNet-20 training step, batch {args.batch}, median of {args.repeats} (interleaved)")
        print(f"{'mode':<15}{'step ms':>9}{'min ms':>9}{'img/s':>8}{'vs fp':>7}{'vs BNN':>8}"
              f"{'vs 1W/1A':>10}{'vs PyTorch':>12}{'peak MiB':>10}")
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        for r in rows:
            peak = "-" if r["peak_step_mib"] is None else f"{r['peak_step_mib']:.0f}"
            print(f"{r['mode']:<15}{r['step_ms']:9.1f}{r['step_min_ms']:9.1f}{r['images_per_s']:8.0f}"
                  f"{fmt(r['vs_fp']):>7}{fmt(r.get('vs_bnn')):>8}{fmt(r['vs_1w1a']):>10}"
                  f"{fmt(r['vs_pytorch_fp']):>12}{peak:>10}")
        print(f"process peak RSS {result['process_max_rss_mib']:.0f} MiB")
    return result


def _register_train(sub):
    p = sub.add_parser("train", help="ResNet-20 training step per quantization mode",
                       description=_run_train.__doc__)
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per mode (median)")
    p.add_argument("--modes", nargs="+", default=None, metavar="MODE",
                   help="subset of: " + ", ".join(m[0] for m in TRAIN_MODES)
                   + ", PyTorch fp (when torch is importable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and random batch")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return "train", _run_train

# ----------------------------------------------------------------- kernels

KERNEL_LAYERS = (  # (name, channels, spatial size, uses --large-batch)
    ("resnet20 16->16 32x32", 16, 32, False),
    ("resnet20 32->32 16x16", 32, 16, False),
    ("resnet20 64->64 8x8", 64, 8, False),
    ("imagenet 256->256 14x14", 256, 14, True),
)
# Every binary conv shape of ResNet-20 (and how many of its 18 convs have it),
# then KERNEL_LAYERS' ImageNet-like layer: (name, c_in, c_out, size, stride, count).
CONV_SHAPES = (
    ("layer1 16->16 32x32", 16, 16, 32, 1, 6),
    ("layer2.0.conv1 16->32 /2", 16, 32, 32, 2, 1),
    ("layer2 32->32 16x16", 32, 32, 16, 1, 5),
    ("layer3.0.conv1 32->64 /2", 32, 64, 16, 2, 1),
    ("layer3 64->64 8x8", 64, 64, 8, 1, 5),
    ("imagenet 256->256 14x14", 256, 256, 14, 1, None),
)


def _time_into(row, key, fn, repeats):
    """row[key_ms] = median, row[key_min_ms] = fastest wall time of fn() in ms over
    ``repeats`` runs after one warm-up (numba compile); the gap shows the load."""
    import time

    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    row[f"{key}_ms"] = 1e3 * float(np.median(times))
    row[f"{key}_min_ms"] = 1e3 * min(times)
    return row[f"{key}_ms"]


def _bench_kernel_layer(name, c_in, c_out, size, stride, batch, taus, repeats, rng):
    import numpy as np

    from . import bitpack, popcount
    from .compile import sign_patch_codes
    from .subbit import codes_to_kernels

    a = rng.choice(np.array([-1, 1], dtype=np.int8), size=(batch, c_in, size, size))
    x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
    codes = rng.integers(0, 512, (c_out, c_in)).astype(np.uint16)
    weights = codes_to_kernels(codes)
    a_packed = bitpack.pack_activations(a)
    conv = popcount.pack_conv(codes, size, size, stride)
    row = {"layer": name, "c_in": c_in, "c_out": c_out, "size": size, "stride": stride,
           "batch": batch}
    _time_into(row, "float", lambda: popcount.float_conv3x3(x, weights, stride), repeats)
    # the engine's conv as a block runs it: float32 in, sign + pack + popcount
    _time_into(row, "engine", lambda: popcount.conv3x3_sums(x, conv), repeats)
    _time_into(row, "bnn", lambda: popcount.bnn_conv3x3_packed(a_packed, conv), repeats)
    _time_into(row, "patch_codes", lambda: sign_patch_codes(x, stride), repeats)
    row["engine_speedup"] = row["float_ms"] / row["engine_ms"]
    row["bnn_speedup"] = row["float_ms"] / row["bnn_ms"]
    patches = bitpack.patch_codes(a, stride)
    masks = bitpack.tap_masks(size, size, stride)
    alpha = np.ones(c_out, np.float32)
    row["tau"] = {}
    for tau in taus:
        codebook = rng.choice(512, 2**tau, replace=False).astype(np.uint16)
        idx = rng.integers(0, 2**tau, (c_out, c_in))
        t = row["tau"][tau] = {}
        snn_ms = _time_into(t, "snn_a1", lambda: popcount.snn_conv3x3_codes(patches, masks,
                                                                            codebook, idx), repeats)
        real_ms = _time_into(t, "snn_32a", lambda: popcount.snn_conv3x3_real(x, codebook, idx,
                                                                             alpha, stride), repeats)
        t.update({
            "snn_a1_speedup": row["float_ms"] / snn_ms, "snn_a1_vs_bnn": row["bnn_ms"] / snn_ms,
            "dot_op_ratio": c_out / 2**tau,  # BNN Dot9s per SNN Dot9
            "snn_32a_speedup": row["float_ms"] / real_ms,
            "mac_ratio_32a": 9 * c_out / (9 * 2**tau + c_out),
        })
    return row


def _print_kernel_table(rows):
    def times(d, key):
        return f"{d[key + '_ms']:9.2f}{d[key + '_min_ms']:9.2f}"

    print(f"{'layer (convs in ResNet-20)':<31}{'kernel':<14}{'med ms':>9}{'min ms':>9}"
          f"{'x float':>9}{'x BNN':>8}{'op ratio':>10}")
    for r in rows:
        count = f" ({r['count']})" if r.get("count") else ""
        print(f"{r['layer'] + count:<31}{'float32':<14}{times(r, 'float')}")
        print(f"{'  batch %d' % r['batch']:<31}{'engine conv':<14}{times(r, 'engine')}"
              f"{r['engine_speedup']:9.2f}")
        print(f"{'':<31}{'BNN W1/A1':<14}{times(r, 'bnn')}{r['bnn_speedup']:9.2f}")
        print(f"{'':<31}{'patch codes':<14}{times(r, 'patch_codes')}")
        for tau, t in r["tau"].items():
            print(f"{'':<31}{'SNN A1 t=%d' % tau:<14}{times(t, 'snn_a1')}{t['snn_a1_speedup']:9.2f}"
                  f"{t['snn_a1_vs_bnn']:8.2f}{t['dot_op_ratio']:10.2f}")
            print(f"{'':<31}{'SNN 32A t=%d' % tau:<14}{times(t, 'snn_32a')}"
                  f"{t['snn_32a_speedup']:9.2f}{'':>8}{t['mac_ratio_32a']:10.2f}")
    print("engine conv: what the integer engine runs per conv (sign, packing and XNOR-popcount "
          "from float32 to int32 sums; sub-bit layers run it on their decoded kernels). BNN W1/A1: "
          "the same on pre-packed bits. SNN A1: the paper's Dot9-table kernel on pre-made patch "
          "codes (patch codes: that pass). x float / x BNN: ratio of medians; op ratio: BNN/SNN "
          "Dot9 count (A1) or float/SNN MAC count (32A).")


def _set_threads(threads):
    """BLAS, OpenMP and the numba kernels on ``threads`` cores (0: all); must run
    before numpy and numba load."""
    import os

    if not threads:
        return
    if "numpy" in sys.modules or "numba" in sys.modules:
        raise ValueError("--threads must take effect before numpy/numba load; "
                         "they were already imported")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)


def _run_kernels(args):
    _set_threads(args.threads)
    import numba
    import numpy as np

    rng = np.random.default_rng(args.seed)
    rows = []
    for name, c_in, c_out, size, stride, count in CONV_SHAPES:
        batch = args.batch if count else args.large_batch
        rows.append(_bench_kernel_layer(name, c_in, c_out, size, stride, batch, args.taus,
                                        args.repeats, rng))
        rows[-1]["count"] = count
    if not args.json:
        _print_kernel_table(rows)
    return {"layers": rows, "repeats": args.repeats, "numba_threads": numba.get_num_threads()}


def _register_kernels(sub):
    p = sub.add_parser("kernels", help="popcount kernels vs the float32 conv, per layer",
                       description="Median times of the float32 im2col conv, the integer "
                                   "engine's conv, the BNN XNOR-popcount kernel and the sub-bit "
                                   "W/A1 (Dot9 table) and W/32A kernels on every ResNet-20 conv "
                                   "shape and an ImageNet-like layer.")
    p.add_argument("--batch", type=int, default=128, help="batch for the ResNet-20 layers")
    p.add_argument("--large-batch", type=int, default=16, help="batch for the 256-channel layer")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per kernel (median)")
    p.add_argument("--taus", type=int, nargs="+", default=[4, 5, 6], help="codebook sizes 2**tau")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and codebooks")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for BLAS and the numba kernels alike (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return "kernels", _run_kernels

# ------------------------------------------------------------------- infer

MODEL_MODES = (("1W/1A", "bnn", None), ("tau=5 W/1A", "snn", 5))  # (name, quant, tau)


def _torch_resnet20(seed):
    """PyTorch's float ResNet-20 (option-A shortcuts, as minisnn's fp model), or
    None without torch. For comparison only: torch is not a dependency of minisnn."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.stride, self.pad = stride, (c_out - c_in) // 2

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.pad:
                short = nn.functional.pad(short, (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(out + short)

    torch.manual_seed(seed)
    layers, c_in = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for s, width in enumerate((16, 32, 64)):
        for b in range(3):
            layers.append(Block(c_in, width, 2 if s > 0 and b == 0 else 1))
            c_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _run_infer(args):
    """Whole-model ResNet-20 inference on one batch of --batch random images:
    PyTorch's float model in eval mode (when torch is importable), minisnn's
    float fp model, and per binary mode the float model's eval forward and the
    compiled integer engine (minisnn.compile), whose logits must equal the
    float model's. Medians of --repeats runs, all timed interleaved so load
    drift hits every row alike; 'x PyTorch' = PyTorch's median time / this
    row's."""
    _set_threads(args.threads)
    import time

    import numba
    import numpy as np

    from . import models
    from .compile import compile_model

    x = np.random.default_rng(args.seed).standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    runs, equal = {}, {}
    torch_model = _torch_resnet20(args.seed)
    if torch_model is None:
        print("PyTorch not importable: no PyTorch row (pip install torch to compare)",
              file=sys.stderr)
    else:
        import torch
        torch.set_num_threads(numba.get_num_threads())
        torch_model.eval()

        def torch_forward(x):
            with torch.inference_mode():
                return torch_model(torch.from_numpy(x))
        runs["PyTorch fp"] = torch_forward
    runs["minisnn fp"] = models.resnet20("fp", "real", seed=args.seed).eval().forward
    for name, quant, tau in MODEL_MODES:
        model = models.resnet20(quant, "binary", tau=tau, seed=args.seed).eval()
        runs[f"{name} float"] = model.forward
        runs[f"{name} integer"] = compile_model(model).predict
        equal[f"{name} integer"] = bool(np.array_equal(model.forward(x), runs[f"{name} integer"](x)))
    times = {key: [] for key in runs}
    for forward in runs.values():
        forward(x)  # warm-up: numba compilation, first allocations
    for _ in range(args.repeats):
        for key, forward in runs.items():
            start = time.perf_counter()
            forward(x)
            times[key].append(time.perf_counter() - start)
    rows = []
    for key, t in times.items():
        med = float(np.median(t))
        rows.append({"model": key, "ms": 1e3 * med, "min_ms": 1e3 * min(t),
                     "images_per_s": args.batch / med, "logits_equal_float": equal.get(key)})
    torch_row = next((r for r in rows if r["model"] == "PyTorch fp"), None)
    for r in rows:
        r["vs_pytorch"] = torch_row["ms"] / r["ms"] if torch_row else None
    result = {"batch": args.batch, "repeats": args.repeats, "threads": numba.get_num_threads(),
              "rows": rows}
    if not args.json:
        print(f"ResNet-20 inference, batch {args.batch}, {result['threads']} threads, median of "
              f"{args.repeats} (interleaved)")
        print(f"{'model':<22}{'ms':>8}{'min ms':>8}{'img/s':>8}{'x PyTorch':>11}  logits = float")
        for r in rows:
            vs = "-" if r["vs_pytorch"] is None else f"{r['vs_pytorch']:.2f}"
            eq = "" if r["logits_equal_float"] is None else str(r["logits_equal_float"])
            print(f"{r['model']:<22}{r['ms']:8.2f}{r['min_ms']:8.2f}{r['images_per_s']:8.0f}"
                  f"{vs:>11}  {eq}")
    return result


def _register_infer(sub):
    p = sub.add_parser("infer", help="ResNet-20 inference: PyTorch, float and integer engine",
                       description=_run_infer.__doc__)
    p.add_argument("--batch", type=int, default=128, help="images per forward")
    p.add_argument("--repeats", type=int, default=15, help="timed forwards per model (median)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and random batch")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for PyTorch, BLAS and the numba kernels alike (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return "infer", _run_infer

# --------------------------------------------------------------------- rtl

def _print_rtl_table(result):
    from .rtlsweep import print_table
    print_table(result)
    print("cycles: one image at full size (exact cycle model, equal to the simulation at "
          f"{result['sim_size']}x{result['sim_size']}); LUT/FF/BRAM: ice40 synth_ice40 (the engine in "
          "rtl/tb/pnr_wrap.v), xilinx synth_xilinx LUT6 (LUTRAM in LUTs, BRAM in RAMB36); MHz: "
          "nextpnr-ice40 post-route (- where not placed); us = cycles / MHz.")
    for key, value in result["headline"].items():
        print(f"{key}: {json.dumps(value)}")


def _run_rtl(args):
    """Simulate (bit-exact, cycle model), synthesize and place the engines; see
    minisnn/rtlsweep.py. --sweep runs the full grid into rtl/results.json."""
    import os
    import tempfile

    from . import rtlsweep

    if not args.sweep:  # a first look, kept apart from the committed results
        root = os.path.join(tempfile.gettempdir(), "minisnn-rtl-quick")
        args.out, args.cache, args.plots = (os.path.join(root, "results.json"), os.path.join(root, "cache.jsonl"),
                                            root)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    result = rtlsweep.main_sweep(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    if not args.json:
        _print_rtl_table(result)
    return result


def _register_rtl(sub):
    import os
    import tempfile

    p = sub.add_parser("rtl", help="simulated, synthesized and placed Verilog engines",
                       description="The BNN, sub-bit (register or RAM table) and decompress engines of "
                                   "rtl/: co-simulated at reduced size (bit-exact, cycle model), cycles at "
                                   "full size, yosys iCE40 and LUT6 counts, nextpnr-ice40 fmax. Without "
                                   "--sweep: one configuration per engine (tau 5, A 1), written under the temporary directory.")
    p.add_argument("--sweep", action="store_true",
                   help="the grid (engines, tau 4/5/6, A 1/2/4/8 with A 2 and 8 at the headline configurations, "
                        "lanes, Dot9 units); resumable, one to two hours")
    p.add_argument("--out", default="rtl/results.json", help="results JSON (--sweep)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "minisnn-rtl-sweep", "cache.jsonl"),
                   help="one JSON line per measurement; a rerun skips what it holds (--sweep)")
    p.add_argument("--plots", default="rtl", help="directory of the PNG plots (--sweep)")
    p.add_argument("--workers", type=int, default=2, help="parallel simulations / syntheses")
    p.add_argument("--seed", type=int, default=0, help="seed of the random layers and images")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return "rtl", _run_rtl

# Each entry adds its subparser and returns (name, run(args) -> JSON-able result).
REGISTRY = [_register_train, _register_kernels, _register_infer, _register_rtl]

if __name__ == "__main__":
    main()
