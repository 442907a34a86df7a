"""Write the PyTorch checkpoint fixtures of tests/test_torchfile.py and tests/test_convert.py.

Needs torch (``pip install torch==2.13.0``, CPU build); nothing else in the
repository does. The model below is written here in the layout of the
sub-bit authors' code (github.com/yikaiw/SNN, step2/birealnet.py): the
ReActNet Bi-Real ResNet-18 with one binary 3x3 conv per block, whose state
dict keys are ``layerS.B.move0.bias``, ``binary_conv.weight``,
``binary_conv.binarize.patterns``, ``bn1.*``, ``move1.bias``,
``prelu.weight``, ``move2.bias``, ``downsample.{1,2}.*``. Three kinds of
block conv: sub-bit (latent weights + real patterns, the kernel of each
pattern its sign with a memory for |p| < 1e-3), ReActNet's plain-sign BNN
conv (flat ``weights`` of shape (N, 1)) and step 1's real conv.

    python scripts/make_torch_fixtures.py                 # tests/fixtures/
    python scripts/make_torch_fixtures.py --full DIR      # full-size ResNet-18s

Fixtures (reduced widths 4/8/16/32, 10 classes, 64x64 inputs): see FIXTURES.
``logits.npz`` holds the input ``x`` and each checkpoint's PyTorch logits
(eval mode). ``tensors.{zip,legacy}.pth`` hold tensors of every supported
dtype, strided views and shared storages, with the expected values in
``tensors.npz``. ``--full`` writes the authors' full ResNet-18 (64..512
channels, 1000 classes) at tau 4, 5, 6 and as a BNN, each with its Adam
state as the authors' training script saves it, plus a bare tau-5 state
dict, and ``logits.npz`` for a 224x224 input: ``NAME`` with PyTorch's
float32 nearest patterns (the authors' arithmetic), ``NAME:exact`` with the
exact nearest ones (minisnn's); they differ where a kernel is near-tied
between two patterns (a few in a million at this size).
"""

import argparse
import collections
import os
import pathlib
import random
import tempfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

SMALL_WIDTHS = (4, 8, 16, 32)
FULL_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 4

# name -> block conv, tau, file format, layout, options
FIXTURES = {
    # authors' layout (DataParallel prefix), an untouched Adam's state, exact-zero
    # and tiny pattern entries (the loader must warn)
    "reactnet_tau4.zip.pth": dict(conv="subbit", tau=4, fmt="zip", layout="authors",
                                  optimizer="fresh", small_patterns=True),
    # authors' layout as torch 1.4 wrote it: legacy format, Adam state after a step,
    # best_top1_acc a 0-d tensor
    "reactnet_tau5.legacy.pth": dict(conv="subbit", tau=5, fmt="legacy", layout="authors",
                                     optimizer="stepped"),
    "reactnet_tau6.zip.pth": dict(conv="subbit", tau=6, fmt="zip", layout="bare"),
    "reactnet_step1.legacy.pth": dict(conv="real", fmt="legacy", layout="bare"),
    # ReActNet's plain-sign conv, stored in float16
    "reactnet_bnn.zip.pth": dict(conv="sign", fmt="zip", layout="bare", half=True),
}


class LearnableBias(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x + self.bias


class Binarize(nn.Module):
    """Sub-bit kernels: ``patterns`` (2^tau, 9) real; kernel = sign with memory."""

    def __init__(self, tau):
        super().__init__()
        codes = random.sample(range(512), 2 ** tau)
        signs = torch.tensor([[1.0 if (c >> j) & 1 else -1.0 for j in range(9)] for c in codes])
        self.patterns = nn.Parameter(signs.clone())
        self.memory = signs  # not in the state dict, as in the authors' code

    def kernels(self):
        keep = self.patterns.abs() < 1e-3
        self.memory = torch.where(keep, self.memory, torch.sign(self.patterns))
        return self.memory

    exact = False  # True: the exact nearest kernel (minisnn's), not float32's

    def forward(self, w):
        k = self.kernels()
        if self.exact:  # float64 scores of float32 values: exact, ties to the lowest row
            idx = (w.reshape(-1, 9).double() @ k.double().T).argmax(dim=1)
        else:  # float32 distances computed directly, as in training (no matmul shortcut)
            idx = torch.cdist(w.reshape(-1, 9), k, compute_mode="donot_use_mm_for_euclid_dist")
            idx = idx.argmin(dim=1)
        return k[idx].reshape(w.shape)


class SubBitConv(nn.Module):
    def __init__(self, c_in, c_out, stride, tau):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3))
        self.binarize = Binarize(tau)

    def forward(self, x):
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, alpha * self.binarize(self.weight), stride=self.stride, padding=1)


class SignConv(nn.Module):
    """ReActNet's BNN conv: flat latent ``weights`` (N, 1), sign kernels."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.stride, self.shape = stride, (c_out, c_in, 3, 3)
        self.weights = nn.Parameter(torch.empty(c_out * c_in * 9, 1))

    def forward(self, x):
        w = self.weights.reshape(self.shape)
        alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, alpha * torch.sign(w), stride=self.stride, padding=1)


def block_conv(kind, c_in, c_out, stride, tau):
    if kind == "subbit":
        return SubBitConv(c_in, c_out, stride, tau)
    if kind == "sign":
        return SignConv(c_in, c_out, stride)
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)  # step 1: real weights


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride, kind, tau):
        super().__init__()
        self.move0 = LearnableBias(c_in)
        self.binary_conv = block_conv(kind, c_in, c_out, stride, tau)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.move1 = LearnableBias(c_out)
        self.prelu = nn.PReLU(c_out)
        self.move2 = LearnableBias(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride),
                                            nn.Conv2d(c_in, c_out, 1, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn1(self.binary_conv(torch.sign(self.move0(x))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.move2(self.prelu(self.move1(out)))


class Net(nn.Module):
    def __init__(self, kind, tau=None, widths=SMALL_WIDTHS, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = widths[0]
        for s, c_out in enumerate(widths):
            blocks = []
            for b in range(BLOCKS_PER_STAGE):
                blocks.append(Block(c_in, c_out, 2 if s > 0 and b == 0 else 1, kind, tau))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def randomize(model, gen, small_patterns=False):
    """Trained-looking values everywhere (defaults would hide mapping errors)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("patterns"):
                continue
            scale = 0.05 if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
            if name.endswith(("bn1.weight", "downsample.2.weight", "prelu.weight")):
                p.add_(1.0 if "prelu" not in name else -0.8)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)
        for mod in model.modules():
            if isinstance(mod, Binarize):
                set_patterns(mod, gen, small_patterns)


def set_patterns(binarize, gen, small):
    """Real patterns as refinement leaves them: magnitudes in (0.01, 3), some
    entries flipped since the memory was set, and with ``small`` entries below
    1e-3 keeping their memory (one of them exactly 0 where the memory is +1,
    the sign the converter assumes)."""
    memory = binarize.memory
    p = memory * (torch.rand(memory.shape, generator=gen) * 2.99 + 0.01)
    rows = len(p)
    while True:
        flip = torch.rand(memory.shape, generator=gen) < 0.05
        q = torch.where(flip, -p, p)
        codes = ((q > 0).long() << torch.arange(9)).sum(dim=1)
        if len(set(codes.tolist())) == rows:
            break
    if small:
        r = torch.randint(rows, (3,), generator=gen)
        c = torch.randint(9, (3,), generator=gen)
        q[r, c] = torch.sign(q[r, c]) * 4e-4  # tiny: the memory (= this sign) holds
        plus = (q > 0).nonzero()[0]
        q[plus[0], plus[1]] = 0.0
    binarize.patterns.data.copy_(q)
    binarize.memory = torch.sign(q)  # the memory the training run would hold now
    binarize.memory[q == 0] = 1.0


def check_assignments(model, strict=True):
    """Kernels whose float32 nearest pattern (PyTorch's) differs from the exact one
    (minisnn's): the small fixtures must have none; returns their number."""
    differ = 0
    for name, mod in model.named_modules():
        if isinstance(mod, SubBitConv):
            w = mod.weight.detach().reshape(-1, 9)
            k = mod.binarize.kernels()
            a32 = torch.cdist(w, k, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
            a64 = (w.double() @ k.double().T).argmax(dim=1)
            differ += int((a32 != a64).sum())
            assert not strict or torch.equal(a32, a64), f"{name}: float32 and exact differ"
        if isinstance(mod, SignConv):  # torch.sign(0) = 0 where minisnn's sign gives +1
            assert (mod.weights != 0).all(), f"{name}: a latent weight is exactly 0"
    return differ


def atomic(path, write):
    """``write(f)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save(obj, path, fmt):
    atomic(path, lambda f: torch.save(obj, f, _use_new_zipfile_serialization=(fmt == "zip")))


def make_checkpoint(spec, gen, widths, num_classes, strict=True):
    model = Net(spec["conv"], spec.get("tau"), widths, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if spec.get("optimizer") == "stepped":
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
        optimizer.step()
    randomize(model, gen, spec.get("small_patterns", False))
    model.eval()
    state = model.state_dict()
    if spec.get("half"):
        state = collections.OrderedDict((k, v.half() if v.is_floating_point() else v)
                                        for k, v in state.items())
        model.load_state_dict(state)  # the logits below are those of the stored values
    differ = check_assignments(model, strict)
    if differ:
        print(f"  {differ} kernels: PyTorch's float32 nearest pattern is not the exact one")
    if spec["layout"] == "bare":
        return model, state
    prefixed = collections.OrderedDict((f"module.{k}", v) for k, v in state.items())
    acc = torch.tensor(61.25) if spec["fmt"] == "legacy" else 61.25
    return model, {"epoch": 256, "state_dict": prefixed, "best_top1_acc": acc,
                   "optimizer": optimizer.state_dict()}


def write_fixtures(out, seed):
    gen = torch.Generator().manual_seed(seed)
    random.seed(seed)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    logits = {"x": x.numpy()}
    for name, spec in FIXTURES.items():
        model, obj = make_checkpoint(spec, gen, SMALL_WIDTHS, 10)
        save(obj, out / name, spec["fmt"])
        with torch.no_grad():
            logits[name] = model(x).numpy()
    atomic(out / "logits.npz", lambda f: np.savez(f, **logits))
    write_tensor_fixtures(out, gen)


def write_tensor_fixtures(out, gen):
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.5 - 3.0
    tensors = collections.OrderedDict([
        ("f32", base),
        ("permuted", base.permute(2, 0, 1)),          # strided view of f32's storage
        ("sliced", base[1, 1:, ::2]),                 # offset and steps
        ("row1", base[1]),                            # shares f32's storage, offset 12
        ("expanded", torch.arange(3.0).expand(4, 3)),  # stride 0
        ("f16", torch.randn(3, 5, generator=gen).half()),
        ("f64", torch.randn(4, generator=gen).double()),
        ("i64", torch.arange(-3, 4)),
        ("i32", torch.tensor([-7, 0, 2 ** 31 - 1], dtype=torch.int32)),
        ("i16", torch.tensor([-300, 7], dtype=torch.int16)),
        ("i8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("u8", torch.tensor([0, 255, 3], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.zeros(0, 3)),
    ])
    obj = {"tensors": tensors, "meta": {"epoch": 3, "list": [1, 2.5, "x", None, True],
                                        "tuple": (1, (2, 3))}}
    for fmt in ("zip", "legacy"):
        save(obj, out / f"tensors.{fmt}.pth", fmt)
    expected = {k: v.numpy() for k, v in tensors.items()}
    atomic(out / "tensors.npz", lambda f: np.savez(f, **expected))


def write_full(out, seed):
    """Full-size ResNet-18s in the authors' layout (about 47 MB of weights each)."""
    gen = torch.Generator().manual_seed(seed)
    random.seed(seed)
    x = torch.randn(1, 3, 224, 224, generator=gen)
    logits = {"x": x.numpy()}
    specs = {f"resnet18_tau{t}.pth": dict(conv="subbit", tau=t, fmt="zip", layout="authors",
                                          optimizer="stepped") for t in (4, 5, 6)}
    specs["resnet18_bnn.pth"] = dict(conv="sign", fmt="zip", layout="authors", optimizer="stepped")
    specs["resnet18_tau5_bare.legacy.pth"] = dict(conv="subbit", tau=5, fmt="legacy", layout="bare")
    for name, spec in specs.items():
        model, obj = make_checkpoint(spec, gen, FULL_WIDTHS, 1000, strict=False)
        save(obj, out / name, spec["fmt"])
        with torch.no_grad():
            logits[name] = model(x).numpy()
            Binarize.exact = True
            logits[f"{name}:exact"] = model(x).numpy()
            Binarize.exact = False
        print(f"wrote {out / name} ({(out / name).stat().st_size / 2 ** 20:.1f} MiB)")
    atomic(out / "logits.npz", lambda f: np.savez(f, **logits))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures",
                        help="fixture folder (default: tests/fixtures)")
    parser.add_argument("--full", type=pathlib.Path, default=None, metavar="DIR",
                        help="write full-size ResNet-18 checkpoints into DIR instead")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random value (default 0)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.full is not None:
        args.full.mkdir(parents=True, exist_ok=True)
        write_full(args.full, args.seed)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        write_fixtures(args.out, args.seed)
        print(f"wrote fixtures to {args.out}")


if __name__ == "__main__":
    main()
