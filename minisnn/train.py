"""Training loop and its CLI: ``python -m minisnn.train --help``.

Writes into ``--out``: ``checkpoint.npz`` (model, optimizer and loop state,
replaced atomically after every epoch), ``metrics.json`` and
``curves.png``. ``--resume`` continues a killed run exactly: the batches of
epoch e are a pure function of (seed, e), so a resumed run ends with the
same weights as an uninterrupted one.
"""

from . import runtime

if __name__ == "__main__":  # before numpy and numba load (minisnn.runtime)
    runtime.tune_process()

import argparse
import fcntl
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .atomic import remove_stale_temporaries
from . import data as D
from .distill import TeacherLogits, load_teacher
from .figures import training_curves
from . import models
from .models import ACTS, BLOCKS, QUANTS, build_model, mode_name
from .nn import WEIGHT_INITS, BatchNorm2d, distillation_loss, softmax_cross_entropy
from .optim import DECAY_RULES, OPTIMIZERS, SCHEDULES, Adam, ParamGroups, lr_at, make_optimizer

CHECKPOINT = "checkpoint.npz"
LOCK = "train.lock"
_LOCK_ATTEMPTS = 4  # 5 ms apart: outlasts a lock_holder probe, not a run
# Arguments that may differ on --resume without changing the run's result.
RESUME_FREE = ("data", "cache_dir", "out", "resume", "stop_after", "log_every", "quiet",
               "teacher_cache")


def update_hooks(model):
    """Modules with state to refresh after each optimizer step (sub-bit codebooks)."""
    return [m for _, m in model.named_modules() if hasattr(m, "after_update")]


def train_step(model, optimizer, x, y, hooks=(), teacher_logits=None):
    """One forward, backward and update. Returns (loss, number correct).

    With ``teacher_logits`` (a teacher's logits on the same images) the loss
    is the distillation loss against them, without the label loss.
    """
    model.zero_grad()
    logits = model.forward(x)
    if teacher_logits is not None:
        loss, dlogits = distillation_loss(logits, teacher_logits)
    else:
        loss, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    optimizer.step()
    for module in hooks:
        module.after_update()
    return loss, int((logits.argmax(axis=1) == y).sum())


def evaluate(model, x_uint8, y, batch_size=500):
    """Mean loss and accuracy in eval mode; leaves the model in train mode."""
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb = D.normalize(x_uint8[i:i + batch_size])
        logits = model.forward(xb)
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch_size])
        total_loss += loss * len(xb)
        correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    model.train()
    return total_loss / len(y), correct / len(y)


def recalibrate_batchnorm(model, x_uint8, batch_size=500):
    """Re-estimate every BatchNorm2d's running statistics for the current
    weights: zeroed, then the cumulative average over the batches of
    ``x_uint8`` in training mode (PyTorch's ``momentum=None``), no update.

    The running averages kept during training mix statistics of weights
    that have since changed; in binary nets latent-weight sign flips make
    those stale estimates noticeably wrong at eval time. Pass images drawn
    as in training (augmented): statistics of un-augmented images, even of
    the test set itself, cost a full-precision ResNet-20 3-5 points of test
    accuracy, because its batch-norm affine was learnt on augmented ones.
    """
    bns = [m for _, m in model.named_modules() if isinstance(m, BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.running_mean = np.zeros_like(bn.running_mean)
        bn.running_var = np.zeros_like(bn.running_var)
    model.train()
    try:
        for k, i in enumerate(range(0, len(x_uint8), batch_size), start=1):
            for bn in bns:
                bn.momentum = 1.0 / k
            model.forward(D.normalize(x_uint8[i:i + batch_size]))
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


def build_optimizer(args, model):
    """``--optimizer`` for every parameter, or with ``--codebook-optimizer adam``
    that for all but the sub-bit codebooks' P, which Adam steps at
    ``--codebook-lr`` on the same schedule (the authors' choice: a step of
    about lr whatever the size of P's sparse, small gradient)."""
    params = list(model.named_parameters())
    decay = DECAY_RULES[args.decay_rule]
    if args.codebook_optimizer == "same":
        return make_optimizer(args.optimizer, params, args.lr, args.momentum, args.nesterov,
                              args.weight_decay, decay)
    codebook = [(n, p) for n, p in params if n.endswith(".codebook.weight")]
    rest = [(n, p) for n, p in params if not n.endswith(".codebook.weight")]
    return ParamGroups([(make_optimizer(args.optimizer, rest, args.lr, args.momentum,
                                        args.nesterov, args.weight_decay, decay), 1.0),
                        (Adam(codebook, args.codebook_lr), args.codebook_lr / args.lr)])


def model_config(args):
    return models.model_config(args.arch, args.quant, args.act, args.tau, args.seed, 10,
                               args.act_grad, args.block, args.weight_init, refine=args.refine,
                               period=args.period, init=args.init)


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _check_finite(loss, epoch, step, out):
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"loss became {loss} at epoch {epoch + 1}, step {step}: lower --lr or use --warmup-epochs; "
            f"the last good checkpoint in {out} is intact")


class RunLocked(RuntimeError):
    pass


def _pid_in(fd):
    """The pid written in an open lock file, or None."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def _live_python(pid):
    """``pid`` if it names a live Python process, else None (no /proc or no
    permission to look: trust the pid)."""
    if pid is None or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ProcessLookupError, FileNotFoundError):
        return None
    except OSError:
        return pid
    return pid if b"python" in cmdline.lower() else None


def _is_file_at(fd, path):
    """Whether the open file ``fd`` is still the one named ``path`` (not unlinked)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def lock_holder(out):
    """Pid of the live process training in ``out``, or None when the run
    directory is free. The holder keeps an flock on the lock file (see
    _lock); a lock file without one counts while the pid written in it is a
    live Python process (a run of an older minisnn, which locked that way).
    Returns 0 for a holder that has not written its pid yet."""
    path = Path(out) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if not _is_file_at(fd, path):
                continue  # released meanwhile: look again
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                for _ in range(20):  # the holder writes its pid right after locking
                    pid = _pid_in(fd)
                    if pid is not None:
                        return pid
                    time.sleep(0.005)
                return 0
            return _live_python(_pid_in(fd))
        finally:
            os.close(fd)  # drops the shared lock too


class _HeldLock:
    """The claim on a run directory: an flock on the open lock file."""

    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    def unlink(self, missing_ok=False):
        """Remove the lock file, then release the flock. In that order: a
        process that opened the file meanwhile finds, once it holds the
        flock, that the file is gone, and locks a fresh one."""
        try:
            self.path.unlink(missing_ok=missing_ok)
        finally:
            os.close(self.fd)


def _lock(out):
    """Claim ``out`` for this process: two runs writing one checkpoint would
    corrupt each other's resume.

    The claim is an flock on the open lock file: taking it is atomic and the
    kernel drops it when the process ends however it ends, so a crash leaves
    no lock to take over, only a file that the next run locks in place
    (there is no delete-then-create window in which two runs both win).
    Other processes' lock_holder probes hold the flock for microseconds,
    hence a short retry. Once the directory is ours, temporary files of
    writes a killed run left are removed. Release with ``.unlink()``.
    """
    path = out / LOCK
    for attempt in range(_LOCK_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            time.sleep(0.005)
            continue
        if not _is_file_at(fd, path):
            os.close(fd)  # its holder released it between our open and flock
            continue
        pid = _live_python(_pid_in(fd))
        if pid is not None:
            os.close(fd)
            raise RunLocked(f"{out} is being trained by process {pid} (lock {path}); "
                            "wait for it or stop it first")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        remove_stale_temporaries(out)
        return _HeldLock(path, fd)
    raise RunLocked(f"{out} is being trained by process {lock_holder(out)} (lock {path}); "
                    "wait for it or stop it first")


def run(args):
    """Train as described by parsed CLI arguments; returns the metrics dict."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        trainer = _Trainer(args, out)  # builds the model, loads the data
        trainer.start_or_resume()
        return trainer.train()
    finally:
        lock.unlink(missing_ok=True)


class _Trainer:
    """One run in ``out``: the model, its optimizer, data and teacher, and the
    metrics recorded so far (as CS231n's Solver keeps them)."""

    def __init__(self, args, out):
        self.args, self.out, self.path = args, out, out / CHECKPOINT
        self.train_cfg = {k: v for k, v in vars(args).items() if k not in RESUME_FREE}
        self.config = model_config(args)
        self.model = build_model(self.config)  # a bad config fails here, before any data loads
        self.teacher = load_teacher(args.teacher, self.model) if args.teacher else None
        self.dataset = D.load_from_args(args, progress=not args.quiet)
        self.batches = D.BatchIterator(self.dataset["x_train"], self.dataset["y_train"],
                                       args.batch_size, shuffle=True, augment=not args.no_augment,
                                       seed=args.seed, drop_last=True)
        self.steps_per_epoch = len(self.batches)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {args.batch_size} exceeds the "
                             f"{len(self.dataset['y_train'])} training images: lower --batch-size")
        self.total_steps = self.steps_per_epoch * args.epochs
        self.teacher_cache = None
        if self.teacher is not None and args.teacher_cache:
            self.teacher_cache = TeacherLogits(
                args.teacher_cache, args.teacher, self.dataset["x_train"],
                self.dataset["y_train"], args.seed, args.batch_size, not args.no_augment,
                self.steps_per_epoch, self.model.fc.weight.data.shape[0])

    def start_or_resume(self):
        """Fresh weights (``--weights-from``, ``--init-from``) or the checkpoint's
        state; then the update hooks, the recalibration images and a header line."""
        args, model = self.args, self.model
        resuming = args.resume and self.path.exists()  # the checkpoint restores every array
        if not resuming:
            _start_weights(args, model)
        self.optimizer = build_optimizer(args, model)
        self.metrics = {"epoch": [], "train_loss": [], "train_acc": [], "test_loss": [],
                        "test_acc": [], "lr": [], "epoch_seconds": [], "images_per_second": [],
                        "threads": []}
        self.start_epoch = 0
        if resuming:
            self._restore()
        elif self.path.exists() and not args.resume:
            raise FileExistsError(f"{self.path} exists: pass --resume to continue it, or "
                                  "choose another --out")
        self.hooks = update_hooks(model)
        n_train = len(self.dataset["y_train"])
        if args.bn_recalibrate:
            pick = np.random.default_rng(args.seed).choice(
                n_train, min(args.bn_recalibrate, n_train), replace=False)
            self.recal_x = self.dataset["x_train"][np.sort(pick)]
        self.name = mode_name(args.quant, args.act, self.config["tau"])
        self.threads = runtime.thread_counts()
        print(f"{args.arch} {self.name}: {n_train} train / {len(self.dataset['y_test'])} test "
              f"images, {args.epochs} epochs x {self.steps_per_epoch} steps, batch "
              f"{args.batch_size}; threads: numba {self.threads['numba']}, "
              f"BLAS {self.threads['blas']}", flush=True)

    def _restore(self):
        arrays, saved = ckpt.load_checkpoint(self.path)
        ckpt.check_config(saved["train"], self.train_cfg, self.path,
                          defaults=vars(build_parser().parse_args([])))
        ckpt.restore_module(self.model, arrays, self.path)
        self.optimizer.load_state_dict({k[len("optim."):]: v for k, v in arrays.items()
                                        if k.startswith("optim.")}, source=str(self.path))
        self.metrics, self.start_epoch = saved["metrics"], saved["epoch"]
        # a checkpoint without thread counts: unknown for its epochs
        self.metrics.setdefault("threads", [None] * len(self.metrics["epoch"]))
        print(f"resuming {self.path} after epoch {self.start_epoch}", flush=True)

    def train(self):
        """Epochs up to --epochs (or --stop-after more), a checkpoint after each;
        returns the summary, or the metrics when stopped early."""
        args = self.args
        stop_at = args.epochs if args.stop_after is None else \
            min(args.epochs, self.start_epoch + args.stop_after)
        self.run_start = time.perf_counter()
        for epoch in range(self.start_epoch, stop_at):
            self.end_epoch(epoch, self.train_epoch(epoch, stop_at))
        if stop_at < args.epochs:
            print(f"stopped after epoch {stop_at} as asked; continue with --resume", flush=True)
            return self.metrics
        return self.finish()

    def train_epoch(self, epoch, stop_at):
        """One pass over the epoch's batches. Returns (loss sum, correct, seen, seconds)."""
        args, t0 = self.args, time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        cached = self.teacher_cache.load(epoch) if self.teacher_cache else None
        fresh = []
        for i, (xb, yb) in enumerate(self.batches.epoch(epoch)):
            step = epoch * self.steps_per_epoch + i
            self.optimizer.lr = lr_at(step, self.total_steps, args.lr, args.schedule,
                                      args.warmup_epochs * self.steps_per_epoch)
            t_logits = None
            if self.teacher is not None:
                t_logits = cached[i] if cached is not None else self.teacher.forward(xb)
                if self.teacher_cache and cached is None:
                    fresh.append(t_logits)
            loss, right = train_step(self.model, self.optimizer, xb, yb, self.hooks, t_logits)
            _check_finite(loss, epoch, i + 1, self.out)
            loss_sum += loss * len(yb)
            correct += right
            seen += len(yb)
            if not args.quiet and ((i + 1) % args.log_every == 0 or i + 1 == self.steps_per_epoch):
                self._log_step(epoch, i, stop_at, loss_sum, correct, seen, t0)
        seconds = time.perf_counter() - t0
        if self.teacher_cache and cached is None:
            self.teacher_cache.save(epoch, fresh)
        return loss_sum, correct, seen, seconds

    def _log_step(self, epoch, i, stop_at, loss_sum, correct, seen, t0):
        rate = seen / (time.perf_counter() - t0)
        done = (epoch - self.start_epoch) * self.steps_per_epoch + i + 1
        left = (stop_at - self.start_epoch) * self.steps_per_epoch - done
        eta = (time.perf_counter() - self.run_start) / done * left
        print(f"epoch {epoch + 1}/{self.args.epochs} step {i + 1}/{self.steps_per_epoch} "
              f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}% "
              f"lr {self.optimizer.lr:.4g} {rate:.0f} img/s ETA {_fmt_time(eta)}", flush=True)

    def end_epoch(self, epoch, stats):
        """Recalibrate batch norm if asked, evaluate, record, report and checkpoint."""
        args, model = self.args, self.model
        loss_sum, correct, seen, seconds = stats
        if args.bn_recalibrate:
            # augmented as in training: the batch-norm affine was learnt on those statistics
            x = self.recal_x
            recalibrate_batchnorm(model, x if args.no_augment else
                                  D.augment(x, np.random.default_rng([args.seed, epoch])))
        test_loss, test_acc = evaluate(model, self.dataset["x_test"], self.dataset["y_test"])
        for key, value in (("epoch", epoch + 1), ("train_loss", loss_sum / seen),
                           ("train_acc", correct / seen), ("test_loss", test_loss),
                           ("test_acc", test_acc), ("lr", self.optimizer.lr),
                           ("epoch_seconds", seconds), ("images_per_second", seen / seconds),
                           ("threads", self.threads)):
            self.metrics[key].append(value)
        print(f"epoch {epoch + 1}/{args.epochs} done in {_fmt_time(seconds)}: train loss "
              f"{loss_sum / seen:.4f} acc {100 * correct / seen:.2f}%, test loss {test_loss:.4f} "
              f"acc {100 * test_acc:.2f}%", flush=True)
        arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        ckpt.save_checkpoint(self.path, arrays, {"model": self.config, "train": self.train_cfg,
                                                 "epoch": epoch + 1, "metrics": self.metrics})

    def finish(self):
        """Write metrics.json and curves.png; returns the summary."""
        metrics, out = self.metrics, self.out
        summary = dict(metrics, mode=self.name, model=self.config, train=self.train_cfg,
                       final_test_acc=metrics["test_acc"][-1] if metrics["test_acc"] else None,
                       total_seconds=float(sum(metrics["epoch_seconds"])))
        ckpt.write_json(out / "metrics.json", summary)  # atomic: drivers poll for it
        if metrics["epoch"]:
            training_curves({k: metrics[k] for k in ("epoch", "train_loss", "train_acc",
                                                     "test_acc", "lr")}, out / "curves.png")
        print(f"wrote {self.path}, {out / 'metrics.json'} and {out / 'curves.png'}", flush=True)
        return summary


def _start_weights(args, model):
    """A fresh run's starting point: ``--weights-from`` copies a trained
    checkpoint's matching arrays, ``--init-from`` fills the codebooks."""
    if args.weights_from:
        arrays, _ = ckpt.load_checkpoint(args.weights_from)
        kept = ckpt.init_module_from(model, arrays, args.weights_from)
        print(f"weights from {args.weights_from}; {len(kept)} arrays keep their fresh "
              f"initialisation" + (f" ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''})"
                                   if kept else ""), flush=True)
    if args.init_from:
        from .subbit import init_codebooks_from
        arrays, _ = ckpt.load_checkpoint(args.init_from)
        init_codebooks_from(model, {k[len("model."):]: v for k, v in arrays.items()
                                    if k.startswith("model.")}, source=args.init_from)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minisnn.train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--arch", default="resnet20", choices=("resnet20",),
                   help="CIFAR architecture (resnet18 exists for ImageNet-shape accounting only)")
    m.add_argument("--quant", default="fp", choices=QUANTS,
                   help="weights: full precision, binary (BNN) or sub-bit (SNN)")
    m.add_argument("--act", default="real", choices=ACTS, help="activations: real or binary (sign)")
    m.add_argument("--block", default="basic", choices=BLOCKS,
                   help="'basic': He et al.'s block (Bi-Real double shortcut with binary "
                   "activations); 'reactnet': ReActNet's block as in the sub-bit authors' code "
                   "(binary activations; with --quant fp it is step 1 of the two-step recipe)")
    m.add_argument("--tau", type=int, default=5, help="bits per 3x3 kernel for --quant snn (1..9)")
    m.add_argument("--act-grad", default="approxsign", choices=("approxsign", "ste"),
                   help="surrogate gradient of binary activations")
    m.add_argument("--weight-init", default=models.DEFAULT_WEIGHT_INIT, choices=WEIGHT_INITS,
                   help="conv weights: He's normal, or PyTorch's nn.Conv2d default "
                   "(uniform, 2.45x smaller; the sub-bit authors' step 1 starts from it)")
    m.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                   help="sub-bit codebook refinement")
    m.add_argument("--period", type=int, default=25, help="refinement period in steps")
    m.add_argument("--init", default="random", choices=("random", "frequent"),
                   help="sub-bit codebook initialisation ('frequent' needs --init-from)")
    m.add_argument("--init-from", metavar="CKPT", default=None,
                   help="BNN checkpoint whose most frequent kernels initialise the codebooks")
    m.add_argument("--weights-from", metavar="CKPT", default=None,
                   help="start from a trained checkpoint: every array with the same name and "
                   "shape is copied (a full-precision run's conv weights become the latent "
                   "weights of a binary or sub-bit model), the rest keep their initialisation")
    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=int, default=10)
    o.add_argument("--batch-size", type=int, default=128)
    o.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="'adam' adds weight decay to the gradient (PyTorch's Adam, the "
                   "authors' choice), 'adamw' decouples it")
    o.add_argument("--lr", type=float, default=0.1)
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    o.add_argument("--weight-decay", type=float, default=5e-4,
                   help="applied to the parameters --decay-rule picks")
    o.add_argument("--decay-rule", default="minisnn", choices=sorted(DECAY_RULES),
                   help="'minisnn': conv and linear weights (latent binary weights too), not "
                   "biases, batch norm, shifts, PReLU or codebooks; 'authors': 4-D parameters "
                   "and names containing 'conv' (shifts and codebooks too, not the classifier)")
    o.add_argument("--teacher", metavar="CKPT", default=None,
                   help="distil from this trained model (eval mode, no gradient): the loss is "
                   "the cross-entropy between its softmax and the student's log-softmax, "
                   "without the label loss")
    o.add_argument("--teacher-cache", metavar="DIR", default=None,
                   help="keep the teacher's logits of every epoch here, keyed by teacher, "
                   "data, seed, batch size and augmentation; runs that share them read "
                   "instead of recomputing (the same arrays)")
    o.add_argument("--codebook-optimizer", default="same", choices=("same", "adam"),
                   help="sub-bit codebook parameters P: stepped by --optimizer like every "
                   "other parameter, or by their own Adam at --codebook-lr")
    o.add_argument("--codebook-lr", type=float, default=1e-3,
                   help="peak learning rate of P with --codebook-optimizer adam "
                   "(scheduled like --lr)")
    o.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                   help="after the warm-up, per step: cosine to 0, linear to 0 (the authors' decay, "
                   "which they step per epoch), x0.1 at 50%% and 75%%, or constant")
    o.add_argument("--warmup-epochs", type=int, default=1)
    o.add_argument("--bn-recalibrate", type=int, default=0, metavar="N",
                   help="after every epoch, re-estimate batch-norm running statistics on N "
                   "training images, augmented as in training (0: keep the running averages)")
    o.add_argument("--no-augment", action="store_true", help="no random crop/flip")
    o.add_argument("--seed", type=int, default=0)
    D.add_data_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/train", help="output directory")
    r.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    r.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs of this invocation (split a long run "
                   "across sittings; continue with --resume)")
    r.add_argument("--log-every", type=int, default=1, help="progress line every N steps")
    r.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    return p


def check_options(args):
    """The first numeric option out of its range, as a message; None if all are fine.
    Checked before anything loads: a typo costs no decoding and no download."""
    def at_least(value, low):  # NaN fails the comparison; infinity is no setting either
        return value >= low and value != math.inf

    rules = (
        ("--epochs", args.epochs, at_least(args.epochs, 1), "at least 1"),
        ("--batch-size", args.batch_size, at_least(args.batch_size, 1), "at least 1"),
        ("--log-every", args.log_every, at_least(args.log_every, 1), "at least 1"),
        ("--period", args.period, at_least(args.period, 1), "at least 1"),
        ("--tau", args.tau, 1 <= args.tau <= 9, "in 1..9"),
        ("--warmup-epochs", args.warmup_epochs, at_least(args.warmup_epochs, 0), "at least 0"),
        ("--bn-recalibrate", args.bn_recalibrate, at_least(args.bn_recalibrate, 0), "at least 0"),
        ("--stop-after", args.stop_after,
         args.stop_after is None or at_least(args.stop_after, 1), "at least 1"),
        ("--seed", args.seed, at_least(args.seed, 0), "at least 0"),
        ("--lr", args.lr, at_least(args.lr, 0), "at least 0"),  # 0 trains batch-norm statistics only
        ("--momentum", args.momentum, 0 <= args.momentum < 1, "in [0, 1)"),
        ("--weight-decay", args.weight_decay, at_least(args.weight_decay, 0), "at least 0"),
        ("--codebook-lr", args.codebook_lr, at_least(args.codebook_lr, 0), "at least 0"),
    )
    for flag, value, ok, expected in rules:
        if not ok:
            return f"{flag} must be {expected}, found {value}"
    if args.codebook_optimizer != "same" and args.lr == 0:
        return "--codebook-optimizer adam needs --lr above 0 (P's rate is scheduled like --lr)"
    return None


def _record_data_source(args):
    """Add the data source's sha256 to the run's options (``vars(args)`` is the
    checkpoint's "train" config) and refuse to resume a checkpoint trained on
    other data. A checkpoint written before the sha256 was recorded resumes
    unchecked; a source that cannot be found is left for the run to report."""
    path = Path(args.out) / CHECKPOINT
    recorded = None
    if args.resume and path.exists():
        train_cfg = ckpt.load_config(path).get("train")
        recorded = train_cfg.get("data_sha256") if isinstance(train_cfg, dict) else None
        if recorded is None:
            return
    try:
        source = D.resolve_source(args.data, cache_dir=args.cache_dir)
    except D.DataError:
        if recorded is None:
            return
        raise
    digest = D.source_fingerprint(source)
    if recorded is not None and recorded != digest:
        raise ValueError(f"{path} was trained on data with sha256 {recorded}, but {source} has "
                         f"sha256 {digest}: resume it with its own data, or start a new run in "
                         "another --out")
    args.data_sha256 = digest


def _by_ctrl_c(exc):
    """Whether ``exc`` comes from Ctrl-C: a KeyboardInterrupt, or the SystemError numba's
    dispatcher makes of one raised while a compiled function runs (its cause chain)."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _interrupted(out):
    """One line for Ctrl-C: where the last checkpoint is."""
    path = out / CHECKPOINT
    try:
        epoch = ckpt.load_config(path).get("epoch")
    except ValueError:
        return f"interrupted before any checkpoint was written in {out}"
    return f"interrupted: the last checkpoint is {path} (after epoch {epoch}); continue with --resume"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.init == "frequent" and not args.init_from:
        parser.error("--init frequent needs --init-from BNN_CHECKPOINT")
    if args.codebook_optimizer != "same" and args.quant != "snn":
        parser.error(f"--codebook-optimizer {args.codebook_optimizer} needs --quant snn "
                     f"(a {args.quant} model has no codebooks)")
    problem = check_options(args)
    if problem:
        parser.error(problem)
    try:
        _record_data_source(args)
        run(args)
    except (KeyboardInterrupt, SystemError) as e:  # every write is atomic: nothing partial
        if not _by_ctrl_c(e):
            raise
        print(_interrupted(Path(args.out)), file=sys.stderr, flush=True)
        return 130
    except (ValueError, FileExistsError, FloatingPointError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only --out, ...
        print(f"error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
