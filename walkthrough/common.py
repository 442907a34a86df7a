"""What the walkthrough scripts share: the recipe, the models, the results folder.

Every model is trained by ``python -m minisnn.train`` in a child process
(its log in ``<out>/models/<name>/train.log``), with the same recipe; only
the mode and the epoch count differ, and every binary or sub-bit model
starts from the trained full-precision model's weights. A model whose
``metrics.json`` exists is reused, one with only a checkpoint is resumed,
so any script can be stopped and started again, and later scripts train
what they need when an earlier one was not run; in full mode a model that
is only needed comes from the shipped models when it is shipped and not in
the results folder (:func:`on_shelf`).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from minisnn.checkpoint import load_checkpoint, write_json
from minisnn.train import lock_holder

# The recipe of steps 1 and 3 (walkthrough/README.md says how it was chosen).
# A value of None is a flag without a value.
RECIPE = {"optimizer": "sgd", "lr": "0.1", "momentum": "0.9", "nesterov": None,
          "weight-decay": "5e-4", "schedule": "cosine", "warmup-epochs": "1",
          "batch-size": "128", "act-grad": "approxsign", "bn-recalibrate": "5000"}
# The sub-bit authors' recipe for binary activations (step 7): ReActNet blocks,
# Adam for every parameter (codebooks included) with the learning rate decayed
# linearly to zero, distillation from the full-precision model; weight decay
# (their rule) 1e-5 in step 1, 0 in step 2 (the rows' own arguments). lr 1e-3 at
# batch 128; batch-norm recalibration as in RECIPE.
RECIPE_KD = {"block": "reactnet", "optimizer": "adam", "lr": "1e-3", "schedule": "linear",
             "warmup-epochs": "0", "decay-rule": "authors", "batch-size": "128",
             "act-grad": "approxsign", "bn-recalibrate": "5000"}
RECIPES = {"sgd-cosine": RECIPE, "reactnet-kd": RECIPE_KD}
# Every row trains as long as the main rows: each ablation and tau=6 is compared
# with a main row, and a shorter run would confound that comparison.
EPOCHS = 30
# period: quick mode has 20 steps, and at the default period of 25 refinement would
# never run, making the no-refinement ablation a copy of its partner
QUICK = {"epochs": 2, "subset": 1280, "test_subset": 500, "bn_recalibrate": 256, "period": 5}


def recipe_args(quick=False, recipe="sgd-cosine"):
    recipe = dict(RECIPES[recipe])
    if quick:  # --period matters to sub-bit rows only; the others ignore it
        recipe.update({"bn-recalibrate": str(QUICK["bn_recalibrate"]), "period": str(QUICK["period"])})
    return [a for k, v in recipe.items() for a in (f"--{k}",) + (() if v is None else (v,))]

# name -> (label, train.py mode arguments)
MODELS = {
    "fp": ("full precision", ["--quant", "fp", "--act", "real"]),
    "bnn_32a": ("1W/32A", ["--quant", "bnn", "--act", "real"]),
    "bnn_1a": ("1W/1A", ["--quant", "bnn", "--act", "binary"]),
    "snn6_32a": ("tau=6 W/32A", ["--quant", "snn", "--act", "real", "--tau", "6"]),
    "snn5_32a": ("tau=5 W/32A", ["--quant", "snn", "--act", "real", "--tau", "5"]),
    "snn4_32a": ("tau=4 W/32A", ["--quant", "snn", "--act", "real", "--tau", "4"]),
    "snn5_1a": ("tau=5 W/1A", ["--quant", "snn", "--act", "binary", "--tau", "5"]),
    "snn5_32a_norefine": ("tau=5 W/32A, no refinement",
                          ["--quant", "snn", "--act", "real", "--tau", "5", "--no-refine"]),
    "snn5_32a_frequent": ("tau=5 W/32A, 'frequent' init",
                          ["--quant", "snn", "--act", "real", "--tau", "5", "--init", "frequent"]),
    # the authors' recipe (RECIPE_KD): step 1, then step 2 rows from it
    # step 1 trains its weights from initialisation: drawn as the authors' nn.Conv2d
    # draws them (PyTorch's default), whose scale sets how fast Adam moves them
    "step1_a1": ("step 1: real W/1A (KD)", ["--quant", "fp", "--act", "binary",
                                            "--weight-decay", "1e-5",
                                            "--weight-init", "torch_uniform"]),
    "bnn_1a_kd": ("1W/1A (KD)", ["--quant", "bnn", "--act", "binary", "--weight-decay", "0"]),
}
for _tau in (6, 5, 4):
    MODELS[f"snn{_tau}_1a_kd"] = (f"tau={_tau} W/1A (KD)", [
        "--quant", "snn", "--act", "binary", "--tau", str(_tau), "--weight-decay", "0"])
MODELS["snn5_1a_kd_norefine"] = ("tau=5 W/1A (KD), no refinement",
                                 MODELS["snn5_1a_kd"][1] + ["--no-refine"])
for _name in ("snn5_1a_kd", "snn5_1a_kd_norefine"):  # second seeds: the refinement comparison
    MODELS[f"{_name}_s1"] = (MODELS[_name][0] + ", seed 1", MODELS[_name][1])
KD_MODELS = tuple(n for n in MODELS if n == "step1_a1" or "_kd" in n)
# name -> seed offset added to --seed
SEED_OFFSET = {n: 1 for n in MODELS if n.endswith("_s1")}


def recipe_of(name):
    return "reactnet-kd" if name in KD_MODELS else "sgd-cosine"


# name -> [(train.py option, model whose checkpoint it takes)]: every binary and
# sub-bit row of the first recipe starts from the trained full-precision weights
# (two-stage training); 'frequent' initialisation also takes its codebooks from
# the trained 1W/32A model. The KD rows distil from the full-precision model, and
# step 2 starts from step 1.
DEPENDS = {name: [("--weights-from", "fp")] for name in MODELS
           if name != "fp" and name not in KD_MODELS}
DEPENDS["snn5_32a_frequent"].append(("--init-from", "bnn_32a"))
DEPENDS["step1_a1"] = [("--teacher", "fp")]
for _name in KD_MODELS[1:]:
    DEPENDS[_name] = [("--weights-from", "step1_a1"), ("--teacher", "fp")]


def with_dependencies(name):
    """``name`` after everything it needs trained first, dependencies first."""
    order = []
    for _, dep in DEPENDS.get(name, []):
        order += [n for n in with_dependencies(dep) if n not in order]
    return order + [name]


def parser(description, models=None):
    """The options every step takes; ``models`` adds --only for training steps."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/walkthrough", help="results folder shared by all steps")
    p.add_argument("--quick", action="store_true",
                   help=f"a few minutes on 2 cores: {QUICK['subset']} training and "
                   f"{QUICK['test_subset']} test images, {QUICK['epochs']} epochs per model")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 source, as for python -m minisnn.train")
    p.add_argument("--seed", type=int, default=0, help="seed of every training run")
    p.add_argument("--jobs", type=int, default=2,
                   help="models trained at once (one core each), where a step has to train")
    p.add_argument("--pretrained", nargs="?", const=str(MODELS_DIR), default=None, metavar="DIR",
                   help=f"use published models (default: those shipped in {MODELS_DIR}) instead "
                   "of training: minutes instead of hours, with the full-mode run's figures")
    if models:
        p.add_argument("--only", nargs="+", choices=models, default=list(models),
                       help="train only these models")
    return p


# The shipped pretrained models (walkthrough/publish.py writes them).
MODELS_DIR = Path(__file__).resolve().parent / "models"


def shipped(folder=MODELS_DIR):
    """name -> manifest entry of the models published in ``folder``."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def model_dir(args, name):
    return Path(args.out) / "models" / name


def on_shelf(args, name):
    """Whether ``name``, needed by a run, comes from the shipped models instead of
    being trained: in full mode, when ``<out>`` holds no finished run of it and
    the shipped one was trained with the seed this run would use. So a lost
    results folder costs only the runs in progress, and a fresh clone's step 7
    distils from the shipped full-precision model."""
    if args.pretrained or args.quick or (model_dir(args, name) / "metrics.json").exists():
        return False
    entry = shipped(MODELS_DIR).get(name)
    return entry is not None and entry["seed"] == args.seed + SEED_OFFSET.get(name, 0)


def to_train(args, names):
    """``names`` and what they need, dependencies first, minus finished runs and
    the dependencies that come from the shipped models (:func:`on_shelf`)."""
    todo = []
    for name in names:
        todo += [n for n in with_dependencies(name) if n not in todo and not finished(args, n)
                 and (n in names or not on_shelf(args, n))]
    return todo


def train_command(args, name):
    _, mode = MODELS[name]
    seed = args.seed + SEED_OFFSET.get(name, 0)
    cmd = [sys.executable, "-m", "minisnn.train", *recipe_args(args.quick, recipe_of(name)), *mode,
           "--epochs", str(QUICK["epochs"] if args.quick else EPOCHS), "--seed", str(seed),
           "--out", str(model_dir(args, name)), "--log-every", "10"]
    if args.quick:
        cmd += ["--subset", str(QUICK["subset"]), "--test-subset", str(QUICK["test_subset"])]
    if args.data:
        cmd += ["--data", args.data]
    for option, dep in DEPENDS.get(name, []):
        cmd += [option, str(checkpoint(args, dep))]
    if name in KD_MODELS:  # the rows of one seed share their teacher's logits
        cmd += ["--teacher-cache", str(Path(args.out) / "teacher-logits")]
    if (model_dir(args, name) / "checkpoint.npz").exists():
        cmd.append("--resume")
    return cmd


def finished(args, name):
    if args.pretrained:
        return name in shipped(args.pretrained)
    return (model_dir(args, name) / "metrics.json").exists()


def _last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 400, 0))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except FileNotFoundError:
        return ""


def train_models(args, names, status_every=60.0):
    """Train (or resume) ``names`` and their dependencies, ``args.jobs`` at a time.

    Each child runs on one thread (two single-threaded runs use two cores
    better than one run on both). A model another process is training (its
    run directory locked) is waited for, not trained twice. Prints each
    model's latest progress line every ``status_every`` seconds and fails
    naming the model and its log.
    """
    if args.pretrained:
        missing = [n for d in names for n in with_dependencies(d)
                   if n not in shipped(args.pretrained)]
        if missing:
            have = " ".join(n for n in names
                            if all(d in shipped(args.pretrained) for d in with_dependencies(n)))
            raise SystemExit(f"--pretrained: {', '.join(dict.fromkeys(missing))} not published "
                             f"in {args.pretrained}; train them (run without --pretrained)"
                             + (f", or run on the published ones: --only {have}" if have else ""))
        for name in names:
            print(f"{name}: pretrained {checkpoint(args, name)}", flush=True)
        return
    todo = to_train(args, names)
    for name in names:
        if finished(args, name):
            print(f"{name}: reusing {model_dir(args, name)}", flush=True)
    for name in dict.fromkeys(n for d in names for n in with_dependencies(d)):
        if name not in names and on_shelf(args, name):
            print(f"{name}: the shipped {checkpoint(args, name)}", flush=True)
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    running, waiting, last_status = {}, set(), time.monotonic()
    while todo or running:
        for name, (proc, log, fh) in list(running.items()):
            if proc.poll() is None:
                continue
            fh.close()
            del running[name]
            if proc.returncode != 0:
                for other, (p, _, f) in running.items():
                    p.terminate()
                    f.close()
                raise SystemExit(f"training {name} failed (exit {proc.returncode}); its log: {log}\n"
                                 f"{_last_line(log)}")
            print(f"{name}: done, {_summary(args, name)}", flush=True)
        for name in [n for n in todo if finished(args, n)]:  # trained by another process
            todo.remove(name)
            print(f"{name}: done elsewhere, {_summary(args, name)}", flush=True)
        ready = []
        for name in todo:
            holder = lock_holder(model_dir(args, name))
            if holder is not None:  # another driver trains it: wait for its metrics
                if name not in waiting:
                    print(f"{name}: being trained by process {holder}; waiting for it", flush=True)
                waiting.add(name)
            elif not any(dep in todo or dep in running for _, dep in DEPENDS.get(name, [])):
                ready.append(name)
        while ready and len(running) < max(args.jobs, 1):
            name = ready.pop(0)
            todo.remove(name)
            model_dir(args, name).mkdir(parents=True, exist_ok=True)
            log = model_dir(args, name) / "train.log"
            cmd = train_command(args, name)
            print(f"{name}: {' '.join(cmd[1:])}\n{name}: log in {log}", flush=True)
            fh = open(log, "a")
            running[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env),
                             log, fh)
        if running and time.monotonic() - last_status >= status_every:
            last_status = time.monotonic()
            for name, (_, log, _) in running.items():
                print(f"{name}: {_last_line(log)}", flush=True)
        time.sleep(0.5)


def metrics(args, name):
    if args.pretrained or on_shelf(args, name):
        if args.pretrained and name not in shipped(args.pretrained):
            raise SystemExit(f"{name} is not published in {args.pretrained}")
        return load_checkpoint(checkpoint(args, name))[1]["metrics"]
    path = model_dir(args, name) / "metrics.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: train {name} first (its training step does)")
    return json.loads(path.read_text())


def _summary(args, name):
    m = metrics(args, name)
    return (f"test accuracy {100 * m['final_test_acc']:.2f}% after {m['epoch'][-1]} epochs, "
            f"{m['total_seconds'] / 60:.1f} min of training")


def checkpoint(args, name):
    folder = args.pretrained or (MODELS_DIR if on_shelf(args, name) else None)
    if folder:
        return Path(folder) / shipped(folder)[name]["file"]
    return model_dir(args, name) / "checkpoint.npz"


