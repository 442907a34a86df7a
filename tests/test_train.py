import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minisnn import checkpoint as ckpt
from minisnn import data as D
from minisnn import atomic, models, optim, runtime, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_npz(tmp_path_factory, cifar):
    """240 real CIFAR-10 training and 240 test images (24 per class), as an .npz source."""
    x_train, y_train = D.take_subset(cifar["x_train"], cifar["y_train"], 240)
    x_test, y_test = D.take_subset(cifar["x_test"], cifar["y_test"], 240)
    path = tmp_path_factory.mktemp("data") / "cifar-small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


MODES = [("fp", "real", "basic"), ("bnn", "real", "basic"), ("bnn", "binary", "basic"),
         ("snn", "real", "basic"), ("snn", "binary", "basic"), ("fp", "binary", "reactnet"),
         ("bnn", "binary", "reactnet"), ("snn", "binary", "reactnet")]


@pytest.mark.parametrize("quant,act,block", MODES)
def test_loss_falls_on_real_images_in_every_mode(real_npz, quant, act, block):
    d = D.load_cifar10(real_npz, progress=False)
    # sub-bit: tau=5, refining every 5 steps so 25 steps refine 5 times
    model = models.resnet20(quant, act, seed=0, block=block,
                            **({"tau": 5, "period": 5} if quant == "snn" else {}))
    codebooks = {n: m.codebook.codes.copy() for n, m in model.named_modules() if hasattr(m, "codebook")}
    # Adam: binary-activation nets barely move in 20 SGD steps (BNN practice trains them with Adam)
    opt = optim.make_optimizer("adam", model.named_parameters(), 0.01)
    batches = D.BatchIterator(d["x_train"], d["y_train"], 48, shuffle=True, seed=0, drop_last=True)
    hooks = train.update_hooks(model)
    epoch_losses = []
    # binary activations learn slowly from scratch: 40 steps put their loss
    # 11-13% down, 25 steps only 7% (too close to the bound to be stable)
    for epoch in range(8 if act == "binary" else 5):
        losses = [train.train_step(model, opt, x, y, hooks)[0] for x, y in batches.epoch(epoch)]
        epoch_losses.append(np.mean(losses))
    assert np.all(np.isfinite(epoch_losses))
    assert epoch_losses[-1] < 0.93 * epoch_losses[0], epoch_losses
    if quant == "snn":
        changed = {n: int((m.codebook.codes != codebooks[n]).sum())
                   for n, m in model.named_modules() if hasattr(m, "codebook")}
        print(f"{quant}/{act}: codebook entries changed by refinement per layer: {changed}")
        assert len(changed) == 18 and sum(changed.values()) > 0, changed
        for n, m in model.named_modules():
            if hasattr(m, "codebook"):
                assert len(np.unique(m.codebook.codes)) == 32, n


def _args(out, data, *extra):
    return ["--data", str(data), "--epochs", "3", "--batch-size", "40", "--lr", "0.05",
            "--out", str(out), "--quiet", *extra]


def test_cli_writes_checkpoint_metrics_and_curves(real_npz, tmp_path, capsys):
    assert train.main(_args(tmp_path / "run", real_npz, "--epochs", "2", "--test-subset", "100")) == 0
    out = tmp_path / "run"
    arrays, config = ckpt.load_checkpoint(out / "checkpoint.npz")
    assert config["epoch"] == 2 and config["model"]["quant"] == "fp"
    model = models.build_model(config["model"])
    ckpt.restore_module(model, arrays, out / "checkpoint.npz")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == [1, 2] and len(metrics["test_acc"]) == 2
    # the BLAS thread count decides the float rounding: each epoch records it
    assert metrics["threads"] == [runtime.thread_counts()] * 2
    assert all(v >= 1 for v in metrics["threads"][0].values())
    assert 0 <= metrics["final_test_acc"] <= 1
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an existing run is not overwritten by accident
    assert train.main(_args(out, real_npz)) == 2
    assert "pass --resume" in capsys.readouterr().err


def _final_weights(path):
    arrays, _ = ckpt.load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(("model.", "optim."))}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_weights_from_starts_a_binary_model_at_the_full_precision_weights(real_npz, tmp_path, capsys):
    assert train.main(_args(tmp_path / "fp", real_npz, "--epochs", "1", "--test-subset", "40")) == 0
    fp, _ = ckpt.load_checkpoint(tmp_path / "fp" / "checkpoint.npz")
    # lr 0: the weights stay where --weights-from put them, so the checkpoint shows the start
    assert train.main(_args(tmp_path / "snn", real_npz, "--quant", "snn", "--epochs", "1",
                            "--test-subset", "40", "--lr", "0",
                            "--weights-from", str(tmp_path / "fp" / "checkpoint.npz"))) == 0
    assert "arrays keep their fresh initialisation (layer1.0.conv1.codebook" in capsys.readouterr().out
    snn, config = ckpt.load_checkpoint(tmp_path / "snn" / "checkpoint.npz")
    assert config["train"]["weights_from"] == str(tmp_path / "fp" / "checkpoint.npz")
    weights = [k for k in fp if k.startswith("model.") and k.endswith(".weight")]
    assert "model.layer3.2.conv2.weight" in weights and "model.fc.weight" in weights
    for k in weights:
        assert np.array_equal(snn[k], fp[k]), k


def test_resume_after_stop_matches_uninterrupted_run(real_npz, tmp_path):
    extra = ("--quant", "bnn", "--act", "binary", "--bn-recalibrate", "64")
    assert train.main(_args(tmp_path / "full", real_npz, *extra)) == 0
    assert train.main(_args(tmp_path / "split", real_npz, *extra, "--stop-after", "1")) == 0
    _, config = ckpt.load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert config["epoch"] == 1 and not (tmp_path / "split" / "metrics.json").exists()
    assert train.main(_args(tmp_path / "split", real_npz, *extra, "--resume")) == 0
    _assert_same(_final_weights(tmp_path / "full" / "checkpoint.npz"),
                 _final_weights(tmp_path / "split" / "checkpoint.npz"))
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    split = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert full["test_acc"] == split["test_acc"]


def test_codebook_adam_group_steps_the_codebooks_and_resumes_exactly(real_npz, tmp_path, capsys):
    # 6 steps per epoch: --period 2 makes every other step a refinement step
    extra = ("--quant", "snn", "--period", "2", "--codebook-optimizer", "adam", "--codebook-lr", "0.01")
    assert train.main(_args(tmp_path / "full", real_npz, *extra)) == 0
    assert train.main(_args(tmp_path / "split", real_npz, *extra, "--stop-after", "1")) == 0
    assert train.main(_args(tmp_path / "split", real_npz, *extra, "--resume")) == 0
    full = _final_weights(tmp_path / "full" / "checkpoint.npz")
    _assert_same(full, _final_weights(tmp_path / "split" / "checkpoint.npz"))
    state = [k[len("optim."):] for k in full if k.startswith("optim.")]
    adam = sorted(k for k in state if k.startswith("g1/"))  # m and v per layer, its step count
    assert len(adam) == 2 * 18 + 1 and adam[0] == "g1/__step__.t"
    assert all(".codebook.weight." in k for k in adam[1:])
    # every other parameter keeps its SGD momentum in group 0
    others = {n for n, _ in models.resnet20("snn", tau=5).named_parameters() if "codebook" not in n}
    assert {k for k in state if k not in adam} == {f"g0/{n}.momentum" for n in others}
    with pytest.raises(SystemExit):
        train.main(_args(tmp_path / "bnn", real_npz, "--quant", "bnn", "--codebook-optimizer", "adam"))
    assert "--codebook-optimizer adam needs --quant snn" in capsys.readouterr().err


def test_codebook_adam_group_leaves_the_other_parameters_as_plain_sgd_does(real_npz, tmp_path):
    # without refinement P gets no gradient, so only the grouping could change the weights
    extra = ("--quant", "snn", "--no-refine", "--epochs", "1")
    assert train.main(_args(tmp_path / "plain", real_npz, *extra)) == 0
    assert train.main(_args(tmp_path / "adam", real_npz, *extra, "--codebook-optimizer", "adam")) == 0
    plain, _ = ckpt.load_checkpoint(tmp_path / "plain" / "checkpoint.npz")
    grouped, _ = ckpt.load_checkpoint(tmp_path / "adam" / "checkpoint.npz")
    _assert_same({k: v for k, v in plain.items() if k.startswith("model.")},
                 {k: v for k, v in grouped.items() if k.startswith("model.")})


def test_two_step_recipe_with_a_teacher_trains_and_resumes_exactly(real_npz, tmp_path, capsys):
    """Teacher -> step 1 (real weights, binary activations) -> step 2 (sub-bit),
    both distilled, Adam with the authors' decay rule and linear decay; a
    distilled run stopped and resumed ends with the same weights."""
    assert train.main(_args(tmp_path / "teacher", real_npz, "--epochs", "1", "--test-subset", "40")) == 0
    teacher = str(tmp_path / "teacher" / "checkpoint.npz")
    recipe = ("--block", "reactnet", "--act", "binary", "--teacher", teacher, "--optimizer", "adam",
              "--lr", "2e-3", "--schedule", "linear", "--warmup-epochs", "0", "--decay-rule", "authors",
              "--test-subset", "40", "--epochs", "2")
    assert train.main(_args(tmp_path / "step1", real_npz, *recipe, "--quant", "fp",
                            "--weight-decay", "1e-5")) == 0
    step1 = tmp_path / "step1" / "checkpoint.npz"
    arrays, config = ckpt.load_checkpoint(step1)
    assert config["model"]["block"] == "reactnet" and config["train"]["teacher"] == teacher
    m = json.loads((tmp_path / "step1" / "metrics.json").read_text())
    assert m["lr"] == pytest.approx([2e-3 * 7 / 12, 2e-3 / 12])  # 6 steps an epoch, per-step decay
    step2 = (*recipe, "--quant", "snn", "--tau", "4", "--weight-decay", "0", "--period", "2",
             "--weights-from", str(step1))
    assert train.main(_args(tmp_path / "full", real_npz, *step2)) == 0
    assert train.main(_args(tmp_path / "split", real_npz, *step2, "--stop-after", "1")) == 0
    assert train.main(_args(tmp_path / "split", real_npz, *step2, "--resume")) == 0
    _assert_same(_final_weights(tmp_path / "full" / "checkpoint.npz"),
                 _final_weights(tmp_path / "split" / "checkpoint.npz"))
    full, _ = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.npz")
    assert not np.array_equal(full["model.layer1.0.move0.bias"], arrays["model.layer1.0.move0.bias"])


def test_teacher_logit_cache_gives_the_same_run(real_npz, tmp_path):
    """A distilled run that reads its teacher's logits from the cache another run
    wrote ends with the very weights of one that computes them."""
    assert train.main(_args(tmp_path / "teacher", real_npz, "--epochs", "1", "--test-subset", "40")) == 0
    kd = ("--block", "reactnet", "--act", "binary", "--quant", "bnn", "--optimizer", "adam",
          "--lr", "1e-3", "--epochs", "2", "--test-subset", "40",
          "--teacher", str(tmp_path / "teacher" / "checkpoint.npz"))
    cache = tmp_path / "logits"
    assert train.main(_args(tmp_path / "plain", real_npz, *kd)) == 0
    assert train.main(_args(tmp_path / "writes", real_npz, *kd, "--teacher-cache", str(cache))) == 0
    files = sorted(cache.glob("*/epoch-*.npy"))
    assert [f.name for f in files] == ["epoch-0001.npy", "epoch-0002.npy"]
    assert np.load(files[0]).shape == (6, 40, 10)
    assert train.main(_args(tmp_path / "reads", real_npz, *kd, "--teacher-cache", str(cache))) == 0
    for run in ("writes", "reads"):
        _assert_same(_final_weights(tmp_path / "plain" / "checkpoint.npz"),
                     _final_weights(tmp_path / run / "checkpoint.npz"))
    # another seed sees other batches: another key, not the cached logits
    assert train.main(_args(tmp_path / "seed1", real_npz, *kd, "--seed", "1", "--epochs", "1",
                            "--teacher-cache", str(cache))) == 0
    assert len(list(cache.glob("*/key.json"))) == 2


def test_distillation_uses_the_teachers_logits_not_the_labels(real_npz):
    d = D.load_cifar10(real_npz, progress=False)
    x, y = D.normalize(d["x_train"][:8]), d["y_train"][:8]
    teacher = models.resnet20(seed=5).eval()
    runs = []
    for labels in (y, (y + 1) % 10):
        model = models.resnet20("bnn", "binary", block="reactnet", seed=1)
        opt = optim.make_optimizer("adam", model.named_parameters(), 1e-3)
        runs.append((train.train_step(model, opt, x, labels, teacher_logits=teacher.forward(x))[0],
                     model.state_dict()))
    assert runs[0][0] == runs[1][0]
    _assert_same(runs[0][1], runs[1][1])
    model = models.resnet20("bnn", "binary", block="reactnet", seed=1)
    from minisnn.nn import distillation_loss
    expect = distillation_loss(model.forward(x), teacher.forward(x))[0]
    assert runs[0][0] == pytest.approx(expect, rel=1e-6)


def test_a_teacher_for_other_classes_is_refused_before_data_loads(real_npz, tmp_path, capsys):
    bad = models.resnet20(num_classes=7)
    ckpt.save_checkpoint(tmp_path / "t.npz", {f"model.{k}": v for k, v in bad.state_dict().items()},
                         {"model": bad.config})
    assert train.main(_args(tmp_path / "run", tmp_path / "missing.npz", "--teacher",
                            str(tmp_path / "t.npz"))) == 2
    assert "t.npz: teacher has 7 classes, the student 10" in capsys.readouterr().err


def test_resume_refuses_a_changed_recipe(real_npz, tmp_path, capsys):
    assert train.main(_args(tmp_path / "r", real_npz, "--stop-after", "1")) == 0
    assert train.main(_args(tmp_path / "r", real_npz, "--resume", "--lr", "0.2")) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "0.05" in err and "0.2" in err


def test_resume_accepts_a_checkpoint_older_than_an_option(real_npz, tmp_path, capsys):
    # a checkpoint written before --weights-from existed resumes at the option's default
    assert train.main(_args(tmp_path / "old", real_npz, "--stop-after", "1")) == 0
    path = tmp_path / "old" / "checkpoint.npz"
    arrays, config = ckpt.load_checkpoint(path)
    del config["train"]["weights_from"]
    del config["metrics"]["threads"]
    ckpt.save_checkpoint(path, arrays, config)
    assert train.main(_args(tmp_path / "old", real_npz, "--resume", "--weights-from", "x")) == 2
    assert "no key 'weights_from'" in capsys.readouterr().err
    assert train.main(_args(tmp_path / "old", real_npz, "--resume")) == 0
    assert f"resuming {path} after epoch 1" in capsys.readouterr().out
    _, config = ckpt.load_checkpoint(path)  # thread counts unknown for the epoch written without
    assert config["metrics"]["threads"] == [None] + [runtime.thread_counts()] * 2


def test_resume_does_not_need_the_checkpoints_a_run_started_from(real_npz, tmp_path):
    assert train.main(_args(tmp_path / "bnn", real_npz, "--quant", "bnn", "--epochs", "1")) == 0
    src = tmp_path / "bnn" / "checkpoint.npz"
    snn = ("--quant", "snn", "--init", "frequent", "--init-from", str(src), "--weights-from", str(src))
    assert train.main(_args(tmp_path / "snn", real_npz, *snn, "--stop-after", "1")) == 0
    src.unlink()  # its arrays are in the snn checkpoint now
    assert train.main(_args(tmp_path / "snn", real_npz, *snn, "--resume")) == 0


def test_killed_run_resumes_exactly(real_npz, tmp_path):
    """SIGKILL during epoch 2: the epoch-1 checkpoint is intact and --resume
    reaches the same final weights as an uninterrupted run."""
    args = _args(tmp_path / "killed", real_npz, "--batch-size", "8", "--epochs", "2")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "minisnn.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.time() + 600
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint after 600 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # epoch 2 has 30 steps to go: it cannot have finished
    proc.wait()
    _, config = ckpt.load_checkpoint(path)
    assert config["epoch"] == 1
    assert train.main(args + ["--resume"]) == 0
    assert train.main(_args(tmp_path / "whole", real_npz, "--batch-size", "8", "--epochs", "2")) == 0
    _assert_same(_final_weights(path), _final_weights(tmp_path / "whole" / "checkpoint.npz"))


def test_recalibrated_batchnorm_holds_the_average_batch_statistics():
    rng = np.random.default_rng(3)
    model = models.resnet20("fp")
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    before = [m.momentum for _, m in model.named_modules() if isinstance(m, train.BatchNorm2d)]
    train.recalibrate_batchnorm(model, x, batch_size=20)
    # the stem's batch norm sees the stem conv's output: check it by hand
    feats = [model.conv1.forward(D.normalize(x[i:i + 20])) for i in (0, 20)]
    m = feats[0].shape[0] * feats[0].shape[2] * feats[0].shape[3]
    mean = np.mean([f.mean(axis=(0, 2, 3)) for f in feats], axis=0)
    var = np.mean([f.var(axis=(0, 2, 3)) * m / (m - 1) for f in feats], axis=0)
    np.testing.assert_allclose(model.bn1.running_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.bn1.running_var, var, rtol=1e-4, atol=1e-5)
    after = [m.momentum for _, m in model.named_modules() if isinstance(m, train.BatchNorm2d)]
    assert after == before and model.training


def test_recalibration_uses_the_statistics_of_augmented_training_images(real_npz, tmp_path):
    # lr 0: the weights stay at their initialisation, so the statistics can be recomputed
    assert train.main(_args(tmp_path / "r", real_npz, "--lr", "0", "--bn-recalibrate", "200")) == 0
    saved = ckpt.load_model(tmp_path / "r" / "checkpoint.npz")
    x = D.load_cifar10(real_npz, progress=False)["x_train"]
    stats = {}
    for kind, images in (("augmented", D.augment(x, np.random.default_rng(7))), ("plain", x)):
        model = ckpt.load_model(tmp_path / "r" / "checkpoint.npz")
        train.recalibrate_batchnorm(model, images)
        stats[kind] = np.concatenate([m.running_mean for _, m in model.named_modules()
                                      if isinstance(m, train.BatchNorm2d)])
    found = np.concatenate([m.running_mean for _, m in saved.named_modules()
                            if isinstance(m, train.BatchNorm2d)])
    # a different augmentation draw of 200 of the images: close, not equal
    assert np.abs(found - stats["augmented"]).mean() < 0.5 * np.abs(found - stats["plain"]).mean()


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(real_npz, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / train.LOCK).write_text(str(os.getpid()))  # a live process holds it
    assert train.main(_args(out, real_npz)) == 2
    assert f"being trained by process {os.getpid()}" in capsys.readouterr().err
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / train.LOCK).write_text(str(dead.pid))
    assert train.main(_args(out, real_npz)) == 0
    assert not (out / train.LOCK).exists()


# -- the run-directory lock ------------------------------------------------------------------
LOCK_TRIALS = 400


def _dead_pid():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def _race_for_the_lock(out, start, done, results):
    """One racer: each trial, take the lock when ``start`` opens, report, hold it
    until everyone has reported, release it."""
    for _ in range(LOCK_TRIALS):
        start.wait()
        try:
            lock = train._lock(out)
        except train.RunLocked:
            lock = None
        results.put(lock is not None)
        done.wait()
        if lock is not None:
            lock.unlink(missing_ok=True)
        done.wait()


def test_two_processes_racing_for_a_stale_lock_never_both_win(tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    out = tmp_path / "run"
    out.mkdir()
    start, done, results = ctx.Barrier(3), ctx.Barrier(3), ctx.Queue()
    racers = [ctx.Process(target=_race_for_the_lock, args=(out, start, done, results))
              for _ in range(2)]
    for p in racers:
        p.start()
    winners = []
    try:
        stale = str(_dead_pid())
        for _ in range(LOCK_TRIALS):
            (out / train.LOCK).write_text(stale)  # a crashed run's lock
            start.wait(timeout=60)
            winners.append(results.get(timeout=60) + results.get(timeout=60))
            done.wait(timeout=60)
            done.wait(timeout=60)
    finally:
        for p in racers:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert winners == [1] * LOCK_TRIALS, f"{winners.count(2)} of {LOCK_TRIALS} trials had two winners"


# -- bad options and faults on the command line ------------------------------------------------
@pytest.mark.parametrize("option", [
    ("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--momentum", "5"), ("--momentum", "1"),
    ("--epochs", "0"), ("--epochs", "-1"), ("--batch-size", "0"), ("--log-every", "0"),
    ("--period", "0"), ("--tau", "0"), ("--tau", "10"), ("--weight-decay", "-1e-4"),
    ("--bn-recalibrate", "-1"), ("--warmup-epochs", "-1"), ("--stop-after", "0"),
    ("--seed", "-3"), ("--codebook-lr", "-1")])
def test_numeric_options_are_range_checked_before_data_loads(tmp_path, capsys, option):
    missing = tmp_path / "no-such-data.npz"  # reading it would fail: the check comes first
    with pytest.raises(SystemExit) as exit_info:
        train.main(_args(tmp_path / "r", missing, "=".join(option)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{option[0]} must be" in err and "no-such-data" not in err, err


def test_resume_refuses_a_different_data_source(real_npz, tmp_path, capsys):
    args = _args(tmp_path / "r", real_npz, "--epochs", "2", "--test-subset", "20")
    assert train.main([*args, "--stop-after", "1"]) == 0
    other = tmp_path / "other.npz"
    d = D.load_cifar10(real_npz, progress=False)
    d["y_train"] = np.roll(d["y_train"], 1)  # the same images, other labels
    np.savez(other, **d)
    assert train.main(_args(tmp_path / "r", other, "--epochs", "2", "--test-subset", "20",
                            "--resume")) == 2
    err = capsys.readouterr().err
    assert "checkpoint.npz was trained on data with sha256" in err and "other.npz" in err, err
    copy = tmp_path / "copy.npz"  # the same bytes elsewhere: the same data
    copy.write_bytes(real_npz.read_bytes())
    assert train.main(_args(tmp_path / "r", copy, "--epochs", "2", "--test-subset", "20",
                            "--resume")) == 0


def _interruptible():
    """A background job of a non-interactive shell (``cmd &``, nohup) inherits SIGINT
    ignored, and Python then leaves it ignored: restore the default so the child
    takes Ctrl-C as a terminal user's run would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_says_where_the_checkpoint_is(real_npz, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "minisnn.train",
                             *_args(out, real_npz, "--epochs", "100", "--test-subset", "20")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_interruptible)
    deadline = time.time() + 600
    while not (out / "checkpoint.npz").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint after 600 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"interrupted: the last checkpoint is {out / 'checkpoint.npz'} "
                               "(after epoch "), err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz"]  # no lock, no temporaries
    epoch = ckpt.load_checkpoint(out / "checkpoint.npz")[1]["epoch"]
    assert f"(after epoch {epoch});" in lines[0]


def test_a_full_disk_is_one_line_and_leaves_no_temporaries(real_npz, tmp_path, capsys, monkeypatch):
    import errno
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.npz.x1y2z3w4.tmp"  # left by a write killed in an earlier run
    stale.write_bytes(b"half a checkpoint")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert train.main(_args(out, real_npz, "--epochs", "1", "--test-subset", "20")) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {out}: No space left on device"], err
    assert list(out.iterdir()) == []  # neither the stale temporary nor a new one, nor the lock


def test_ctrl_c_inside_a_compiled_function_is_still_ctrl_c(tmp_path, capsys, monkeypatch):
    import threading
    from minisnn import functional as F

    def busy(args):  # numba's dispatcher turns the KeyboardInterrupt into a SystemError
        x = np.ones((64, 64, 32, 32), np.float32)
        F.batch_stats(x[:1])
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        for _ in range(10000):
            F.batch_stats(x)

    monkeypatch.setattr(train, "run", busy)
    out = tmp_path / "r"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # see _interruptible
    try:
        assert train.main(["--out", str(out), "--data", str(tmp_path / "none.npz")]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == f"interrupted before any checkpoint was written in {out}\n"
