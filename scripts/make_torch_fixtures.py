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
``tensors.npz``. ``assign_float32.npz`` holds random and near-tied latent
kernels with PyTorch's nearest codebook kernel of each (the authors'
``torch.norm(...).argmin``), which minisnn's "float32" rule must reproduce
bit for bit. ``--full`` writes the authors' full ResNet-18 (64..512
channels, 1000 classes) at tau 4, 5, 6 and as a BNN, each with its Adam
state as the authors' training script saves it, plus a bare tau-5 state
dict, and ``logits.npz`` for a 224x224 input: ``NAME`` with PyTorch's
float32 nearest patterns (the authors' arithmetic), ``NAME:exact`` with the
exact nearest ones (minisnn's); they differ where a kernel is near-tied
between two patterns (a few in a million at this size).
"""

import argparse
import collections
import pathlib
import random

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from minisnn.atomic import write_atomically

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

    exact = False  # True: the exact nearest kernel (minisnn's "exact"), not float32's

    def forward(self, w):
        k = self.kernels()
        if self.exact:
            idx = exact_nearest(w.reshape(-1, 9), k)
        else:
            idx = torch_nearest(w.reshape(-1, 9), k)
        return k[idx].reshape(w.shape)


def exact_nearest(w, k):
    """The exactly nearest kernel (minisnn's "exact" rule): float64 scores of
    float32 values are exact; ties go to the lowest row."""
    return (w.double() @ k.double().T).argmax(dim=1)


def torch_nearest(w, k, chunk=1 << 14):
    """The authors' assignment (weights2patterns): ``torch.norm(w.unsqueeze(1) -
    k.unsqueeze(0), dim=2).argmin(dim=1)``, by chunks of rows (each row's
    result is the same; the (n, S, 9) difference of a full layer is not held)."""
    return torch.cat([torch.norm(part.unsqueeze(1) - k.unsqueeze(0), dim=2).argmin(dim=1)
                      for part in w.split(chunk)])


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
    """Kernels whose float32 nearest pattern (PyTorch's) differs from the exact one:
    the small fixtures must have none (both rules give their logits); returns
    their number."""
    differ = 0
    for name, mod in model.named_modules():
        if isinstance(mod, SubBitConv):
            w = mod.weight.detach().reshape(-1, 9)
            k = mod.binarize.kernels()
            a32 = torch_nearest(w, k)
            a64 = exact_nearest(w, k)
            differ += int((a32 != a64).sum())
            assert not strict or torch.equal(a32, a64), f"{name}: float32 and exact differ"
        if isinstance(mod, SignConv):  # torch.sign(0) = 0 where minisnn's sign gives +1
            assert (mod.weights != 0).all(), f"{name}: a latent weight is exactly 0"
    return differ


def save(obj, path, fmt):
    write_atomically(path, lambda f: torch.save(obj, f,
                                                _use_new_zipfile_serialization=(fmt == "zip")))


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
    write_atomically(out / "logits.npz", lambda f: np.savez(f, **logits))
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
    write_atomically(out / "tensors.npz", lambda f: np.savez(f, **expected))


ASSIGN_TAUS = (4, 5, 6, 9)
ASSIGN_KERNELS = (250, 750)  # random and near-tied latent kernels per codebook


def near_tied(rng, kernels, n):
    """n float32 kernels each within a few ulps of equally near two random rows
    a != b of ``kernels`` (S, 9): w is mostly (K_a + K_b) / 2 plus noise, at
    scales from 1e-3 to 1, with one coordinate where K_a and K_b differ set so
    that w . (K_a - K_b) is 0, then moved by -4..4 ulps in one coordinate."""
    rows = len(kernels)
    a = rng.integers(0, rows, n)
    b = (a + rng.integers(1, rows, n)) % rows
    scale = rng.choice([1e-3, 1e-2, 0.05, 0.3, 1.0], (n, 1))
    noise = rng.choice([0.01, 0.1, 0.5], (n, 1))
    w = scale * ((kernels[a] + kernels[b]) / 2 + noise * rng.standard_normal((n, 9)))
    diff = kernels[a] - kernels[b]
    j = np.array([rng.choice(np.flatnonzero(d)) for d in diff])
    r = np.arange(n)
    w[r, j] = 0.0
    w[r, j] = -(w * diff).sum(axis=1) / diff[r, j]
    w = w.astype(np.float32)
    c, steps = rng.integers(0, 9, n), rng.integers(-4, 5, n)
    for _ in range(4):
        move = steps != 0
        w[r[move], c[move]] = np.nextafter(w[r[move], c[move]],
                                           np.where(steps[move] > 0, np.inf, -np.inf)
                                           .astype(np.float32))
        steps = steps - np.sign(steps)
    return w


def write_assign_fixture(out, seed):
    """``assign_float32.npz``: per tau, a codebook (``tauT.codes``), latent
    kernels (``tauT.w``, random then near-tied) and the authors' assignment of
    them by PyTorch on this CPU (``tauT.idx``, see :func:`torch_nearest`)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tau in ASSIGN_TAUS:
        codes = np.sort(rng.choice(512, 1 << tau, replace=False))
        kernels = (2.0 * ((codes[:, None] >> np.arange(9)) & 1) - 1).astype(np.float32)
        n_random, n_tied = ASSIGN_KERNELS
        w = np.concatenate([
            (rng.standard_normal((n_random, 9))
             * rng.choice([1e-3, 1e-2, 0.05, 0.3, 1.0], (n_random, 1))).astype(np.float32),
            near_tied(rng, kernels, n_tied)])
        idx = torch_nearest(torch.from_numpy(w), torch.from_numpy(kernels)).numpy()
        exact = exact_nearest(torch.from_numpy(w), torch.from_numpy(kernels)).numpy()
        norms = torch.norm(torch.from_numpy(w).unsqueeze(1) - torch.from_numpy(kernels), dim=2)
        first, second = norms.topk(2, dim=1, largest=False).values.unbind(dim=1)
        print(f"  tau {tau}: PyTorch's float32 assignment differs from the exact one on "
              f"{int((idx != exact).sum())} of {len(w)} kernels; "
              f"{int((first == second).sum())} have two equal smallest norms")
        arrays.update({f"tau{tau}.codes": codes.astype(np.uint16), f"tau{tau}.w": w,
                       f"tau{tau}.idx": idx.astype(np.uint16)})
    write_atomically(out / "assign_float32.npz", lambda f: np.savez(f, **arrays))


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
    write_atomically(out / "logits.npz", lambda f: np.savez(f, **logits))


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
        write_assign_fixture(args.out, args.seed)
        print(f"wrote fixtures to {args.out}")


if __name__ == "__main__":
    main()
