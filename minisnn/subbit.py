"""Sub-bit convolution: the 512-kernel code space, per-layer codebooks and SubBitConv2d.

Kernel code convention (../shared/SNN-METHOD.md, used everywhere, RTL too):
code(k) = sum_j b_j 2^j with j = 3*row + col and b_j = 1 for +1, 0 for -1.

Gradient convention (the same as quant.py): with B the binarized kernel
before scaling and Wq = alpha[o] * B the conv weight, dL/dB = alpha[o] *
dL/dWq (alpha a constant). The latent weights receive dL/dB masked by the
clip straight-through estimator; a codebook entry receives the plain sum of
dL/dB over the kernels assigned to it (no mask: P is clamped to [-3, 3]).

Update protocol (the training loop's side): after every optimizer step the
loop calls ``m.after_update()`` on every module that defines it. Here
:class:`SubBitConv2d` does: its codebook counts steps in a buffer (so a
checkpoint resumes the schedule exactly), re-derives the binary kernels from
P with the sign memory, replaces duplicates and clamps P
(:meth:`Codebook.update`, deliberately not named ``after_update`` so the loop
cannot run it twice), then the layer re-assigns ``idx`` so the stored indices
always match the stored weights and codebook. Step ``t`` (counted from 0) is
a refinement step, whose backward feeds P, when ``t % period == period - 1``.
"""

import numpy as np
from numba import njit

from . import functional as F
from .nn import Module, Parameter
from .quant import BinaryConv2d, QuantConv2d, weight_scale

NUM_KERNELS = 512
_BIT_WEIGHTS = (1 << np.arange(9)).astype(np.int64)
INITS = ("random", "frequent")
P_CLAMP = 3.0  # |P| <= 3 after every update
SIGN_MEMORY = 1e-3  # entries with |P| below this keep their previous sign
_ASSIGN_CHUNK = 1 << 14  # kernels per batch of the nearest-kernel rules (1.2 MB in float64)
# Score gap w.K_a - w.K_b above which the two rules pick the same kernel, for latent
# weights in [-1, 1]: a float32 squared distance D (at most 36 there) is off by at
# most 11 roundings (2^-24 D each), its square root by one more, so the rules can
# disagree only if 2 * gap < 26 * 2^-24 * 36, i.e. gap < 2^-15.1 (seen: below 2^-19).
NEAR_TIE = 2.0 ** -15


def codes_to_kernels(codes, dtype=np.float32):
    """9-bit codes of any shape (...) -> kernels (..., 3, 3) of {-1, +1}."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= NUM_KERNELS):
        raise ValueError(f"kernel codes must lie in [0, 511], found {codes.min()}..{codes.max()}")
    bits = (codes[..., None].astype(np.int64) >> np.arange(9)) & 1
    return (2 * bits - 1).astype(dtype).reshape(codes.shape + (3, 3))


def kernels_to_codes(kernels):
    """Kernels (..., 3, 3) -> 9-bit codes (...) as uint16; sign(0) counts as +1."""
    kernels = np.asarray(kernels)
    if kernels.shape[-2:] != (3, 3):
        raise ValueError(f"kernels must end in (3, 3), found shape {kernels.shape}")
    bits = (kernels.reshape(kernels.shape[:-2] + (9,)) >= 0).astype(np.int64)
    return (bits @ _BIT_WEIGHTS).astype(np.uint16)


ALL_KERNELS = codes_to_kernels(np.arange(NUM_KERNELS))  # (512, 3, 3), row s has code s


# -- nearest-kernel assignment ------------------------------------------------
def _exact_rows(w):
    """Rows (n, 9) of float64 whose signed sums are all exact in float64.

    Every value is a multiple of 2^q (q its lowest set bit) and below 2^e in
    magnitude; a signed sum of 9 such values is below 2^(emax + 4), so if
    emax + 4 - qmin <= 53 every partial sum, in any order, is exact.
    """
    frac, exp = np.frexp(w)
    mant = (frac * 2.0 ** 53).astype(np.int64)  # exact: |frac| < 1 has 53 bits
    low = mant & -mant
    nonzero = mant != 0
    low_exp = exp - 53 + np.log2(np.where(nonzero, low, 1)).astype(np.int64)
    emax = np.where(nonzero, exp, -10 ** 6).max(axis=1)
    qmin = np.where(nonzero, low_exp, 10 ** 6).min(axis=1)
    return ~nonzero.any(axis=1) | (emax + 4 - qmin <= 53)


def _exact_argmax(w_row, kernels):
    """Lowest s maximising w . K_s in exact integer arithmetic (rare fallback)."""
    frac, exp = np.frexp(w_row)
    mant = [int(m) for m in (frac * 2.0 ** 53).astype(np.int64)]
    base = int(exp.min()) - 53
    ints = [m << (int(e) - 53 - base) for m, e in zip(mant, exp)]
    best, best_score = 0, None
    for s, k in enumerate(kernels.astype(np.int64).tolist()):
        score = sum(i if b > 0 else -i for i, b in zip(ints, k))
        if best_score is None or score > best_score:
            best, best_score = s, score
    return best


@njit(cache=True)
def _best_and_near(w, k, best, near):
    """Per row: the first index of the maximal float64 score w . K_s, and
    whether another score lies within the rounding tolerance of it."""
    buf = np.empty(k.shape[0])
    for r in range(w.shape[0]):
        top, b, abssum = -np.inf, 0, 0.0
        for j in range(9):
            abssum += abs(w[r, j])
        for s in range(k.shape[0]):
            score = 0.0
            for j in range(9):
                score += k[s, j] * w[r, j]
            buf[s] = score
            if score > top:
                top, b = score, s
        threshold = top - abssum * 2.0 ** -48
        count = 0
        for s in range(k.shape[0]):
            count += buf[s] >= threshold
        best[r] = b
        near[r] = count > 1


def nearest_kernels(w, kernels):
    """idx[r] = argmin_s ||w[r] - K_s||_2 with ties to the lowest s, exactly.

    ``w`` (n, 9) real kernels, ``kernels`` (S, 9) of +-1. Since ||K_s||^2 = 9,
    the nearest kernel maximises w . K_s, scored in float64 (a numba loop:
    a BLAS GEMM with an inner dimension of 9 is dominated by threading
    overhead on a loaded machine). The result is exact, not just up to
    rounding: a row whose best score is more than the worst-case float64
    summation error (2^-49 * sum|w|, twice) ahead of all others is decided;
    a row with near-ties is decided by the same scores when its sums are
    provably exact (see :func:`_exact_rows`), else in integer arithmetic
    (near-tied float32 rows spanning over ~2^25 in magnitude, or float64 rows
    with long mantissas: rare, so a Python loop is fine). The 2^-49 bound has
    slack over the ~2^-50 of 9-term summation, which also covers the
    rounding of the threshold itself.
    """
    w = np.asarray(w)
    k = np.ascontiguousarray(kernels, dtype=np.float64)
    best = np.empty(len(w), dtype=np.int64)
    near = np.empty(min(len(w), _ASSIGN_CHUNK), dtype=np.bool_)
    for start in range(0, len(w), _ASSIGN_CHUNK):  # bounded memory: float64 copies of a chunk
        chunk = np.ascontiguousarray(w[start:start + _ASSIGN_CHUNK], dtype=np.float64)
        _best_and_near(chunk, k, best[start:start + len(chunk)], near[:len(chunk)])
        rows = np.flatnonzero(near[:len(chunk)])
        if rows.size:
            for r in rows[~_exact_rows(chunk[rows])]:
                best[start + r] = _exact_argmax(chunk[r], k)
    return best


@njit(cache=True)
def _fma_float32(a, b, c):
    """a * b + c of float32 values rounded once to float32, as a fused multiply-add.

    a * b is exact in float64 (24 + 24 bits); the float64 sum s = a*b + c and its
    error e (TwoSum) hold the exact value s + e. Rounding s to float32 is right
    unless s lies exactly halfway between two float32 values and e != 0: then e
    says on which side the exact value lies."""
    p = np.float64(a) * np.float64(b)
    c64 = np.float64(c)
    s = p + c64
    p_part = s - c64
    e = (p - p_part) + (c64 - (s - p_part))
    r = np.float32(s)
    if e != 0.0 and np.float64(r) != s:
        toward = np.float32(np.inf) if s > np.float64(r) else np.float32(-np.inf)
        other = np.nextafter(r, toward)  # the float32 on the other side of s
        if s - np.float64(r) == np.float64(other) - s and (e > 0.0) == (other > r):
            r = other
    return r


@njit(cache=True)
def _nearest_float32(w, k, best):
    """Per row of float32 ``w``: the first index of the smallest float32 distance
    to the float32 kernels ``k``, summed in the order of PyTorch's CPU kernel."""
    for r in range(w.shape[0]):
        top, b = np.float32(np.inf), 0
        for s in range(k.shape[0]):
            # PyTorch's order: entries 0..7 fill one 8-lane vector of squares,
            # summed lane by lane from the left; entry 8 is added by its scalar
            # tail loop, which its build fuses into one multiply-add
            acc = np.float32(0.0)
            for j in range(8):
                d = w[r, j] - k[s, j]
                acc += d * d
            d = w[r, 8] - k[s, 8]
            dist = np.sqrt(_fma_float32(d, d, acc))
            if dist < top:  # equal norms keep the first index, as argmin does
                top, b = dist, s
        best[r] = b


def nearest_kernels_float32(w, kernels):
    """idx[r] = argmin_s ||w[r] - K_s||_2 as PyTorch computes it on a CPU, bit for bit.

    The sub-bit authors assign ``torch.norm(w.unsqueeze(1) - K.unsqueeze(0),
    dim=2).argmin(dim=1)`` on float32 latent weights ``w`` (n, 9) and the +-1
    kernels ``K`` (S, 9). PyTorch 2.13's CPU kernel at AVX2 and AVX-512
    capability computes each difference in float32, sums the squares of
    entries 0..7 left to right in float32, adds the last square with a fused
    multiply-add, takes the float32 square root, and argmin keeps the first
    of equal norms. Checked against torch on 8 million random and 5 million
    near-tied kernels, tau 4, 5, 6 and 9 (tests/fixtures/assign_float32.npz
    holds a sample). Its generic kernel (``ATEN_CPU_CAPABILITY=default``),
    other CPUs and GPUs sum in other orders and can pick the other of two
    near-tied kernels (score gap below :data:`NEAR_TIE`). ``w`` is rounded
    to float32 first.
    """
    w = np.asarray(w)
    k = np.ascontiguousarray(kernels, dtype=np.float32)
    best = np.empty(len(w), dtype=np.int64)
    for start in range(0, len(w), _ASSIGN_CHUNK):  # bounded memory: float32 copies of a chunk
        chunk = np.ascontiguousarray(w[start:start + _ASSIGN_CHUNK], dtype=np.float32)
        _nearest_float32(chunk, k, best[start:start + len(chunk)])
    return best


# Nearest-kernel rules by name: minisnn's own models use "exact"; models converted
# from PyTorch "float32", what PyTorch computed for them.
NEAREST = {"exact": nearest_kernels, "float32": nearest_kernels_float32}


# -- codebook -----------------------------------------------------------------
class Codebook(Module):
    """2^tau distinct binary 3x3 kernels of one layer, with refinement.

    State (all in ``state_dict``): ``weight`` the real parameters P
    (2^tau, 9); ``codes`` (uint16) the current binary kernels, which is also
    the sign memory; ``seed`` for the duplicate replacements, drawn per step
    as ``default_rng([seed, step])`` so no generator state needs saving;
    ``step`` the update counter.

    P starts at ``scale`` times the +-1 kernels; the layer passes the mean
    |W| of its initial latent weights. dL/dP_s is a sum of latent-weight-sized
    gradients (~1e-3 in ResNet-20), so at +-1 an entry would hardly ever flip
    within a CIFAR run, while at the latent weights' scale it moves like one
    of them. Kernels that enter later (frequent init, duplicate replacement)
    start at the codebook's current mean |P|.

    ``rule`` names the nearest-kernel rule of :meth:`assign` (a key of
    :data:`NEAREST`); it is part of the model config, not of the state.
    """

    def __init__(self, tau, rng, refine=True, period=25, scale=1.0, rule="exact"):
        if not (isinstance(tau, (int, np.integer)) and 1 <= tau <= 9):
            raise ValueError(f"codebook tau must be an integer in 1..9, found {tau!r}")
        if not (isinstance(period, (int, np.integer)) and period >= 1):
            raise ValueError("codebook refinement period must be an integer >= 1, "
                             f"found {period!r}")
        if rule not in NEAREST:
            raise ValueError(f"unknown nearest-kernel rule {rule!r}, expected one of "
                             f"{tuple(NEAREST)}")
        self.tau, self.refine, self.period, self.rule = int(tau), bool(refine), int(period), rule
        self.size = 1 << self.tau
        codes = np.sort(rng.choice(NUM_KERNELS, self.size, replace=False))
        self.weight = Parameter(np.float32(scale) * codes_to_kernels(codes).reshape(self.size, 9),
                                decay=False)
        self.register_buffer("codes", codes.astype(np.uint16))
        self.register_buffer("seed", np.array(rng.integers(0, 2 ** 62), dtype=np.int64))
        self.register_buffer("step", np.array(0, dtype=np.int64))
        self.after_load()

    def after_load(self):
        self.kernels = codes_to_kernels(self.codes).reshape(self.size, 9)  # float32 +-1 cache

    def set_codes(self, codes):
        """Replace the codebook by ``codes`` (2^tau distinct codes); P = mean|P| * kernels."""
        codes = np.asarray(codes)
        if codes.shape != (self.size,) or len(np.unique(codes)) != self.size:
            raise ValueError(f"codebook needs {self.size} distinct codes, found shape "
                             f"{codes.shape} with {len(np.unique(codes))} distinct")
        p = self.weight.data
        self.codes = codes.astype(np.uint16)
        self.after_load()
        self.weight.data = (np.abs(p).mean() * self.kernels).astype(p.dtype)

    def init_frequent(self, kernel_codes):
        """The 2^tau most frequent of ``kernel_codes`` (ties: lowest code), sorted by code."""
        counts = np.bincount(np.asarray(kernel_codes, dtype=np.int64).ravel(),
                             minlength=NUM_KERNELS)
        order = np.lexsort((np.arange(NUM_KERNELS), -counts))  # by count desc, then code
        self.set_codes(np.sort(order[:self.size]))

    def assign(self, w):
        """Nearest codebook entry of each real kernel by the codebook's rule:
        (..., 3, 3) -> uint16 (...)."""
        w = np.asarray(w)
        return NEAREST[self.rule](w.reshape(-1, 9), self.kernels).astype(np.uint16) \
            .reshape(w.shape[:-2])

    def refining(self):
        """Whether the current step's backward feeds P."""
        return self.refine and int(self.step) % self.period == self.period - 1

    def accumulate_grad(self, idx, dB):
        """P.grad[s] += sum of dB[r] over rows r with idx[r] == s (dB is (n, 9))."""
        flat = (idx.astype(np.int64).reshape(-1, 1) * 9 + np.arange(9)).ravel()
        g = np.bincount(flat, weights=dB.reshape(-1), minlength=self.size * 9)
        self.weight.grad += g.reshape(self.size, 9).astype(self.weight.grad.dtype)

    def update(self):
        """After an optimizer step: clamp P, signs with memory, replace duplicates."""
        step = int(self.step)
        self.step = np.array(step + 1, dtype=np.int64)
        p = self.weight.data
        np.clip(p, -P_CLAMP, P_CLAMP, out=p)
        bits = np.where(np.abs(p) < SIGN_MEMORY, self.kernels > 0, p >= 0)
        codes = bits.astype(np.int64) @ _BIT_WEIGHTS
        # Of entries sharing a pattern keep one that already had it (else the
        # lowest index); the others get fresh kernels not in the codebook.
        changed = codes != self.codes
        order = np.lexsort((np.arange(self.size), changed, codes))
        dup = np.sort(order[1:][codes[order][1:] == codes[order][:-1]])
        if dup.size:
            rng = np.random.default_rng([int(self.seed), step])
            free = np.setdiff1d(np.arange(NUM_KERNELS), codes)
            codes[dup] = rng.choice(free, dup.size, replace=False)
            p[dup] = np.abs(p).mean() * codes_to_kernels(codes[dup], p.dtype).reshape(-1, 9)
        self.codes = codes.astype(np.uint16)
        self.after_load()


# -- the layer ------------------------------------------------------------------
class SubBitConv2d(QuantConv2d):
    """3x3 conv (padding 1) whose kernels come from a per-layer codebook.

    Forward weight: alpha[o] * K[idx[o, i]] with alpha = mean|W[o]| and idx
    the nearest codebook kernel of each latent kernel W[o, i]. Backward:
    dL/dB = alpha * dL/dWq reaches W through the clip STE (as BinaryConv2d),
    and on refinement steps the codebook's P as a per-entry sum.

    Exact zeros: ties go to the lowest codebook index (the spec), so a latent
    weight of exactly 0 may map to -1 where BinaryConv2d's sign() gives +1.
    With tau = 9 the random codebook is all 512 kernels sorted by code, so
    index = code and a zero maps to -1; away from exact zeros the layer equals
    BinaryConv2d bit for bit.

    ``snn_options`` of the model config: ``refine`` (bool), ``period`` (int),
    ``init`` ('random' or 'frequent'; 'frequent' starts random and must be
    filled by :func:`init_codebooks_from` before training), ``assign`` (the
    nearest-kernel rule: 'exact', or 'float32' for a model converted from
    PyTorch, see :data:`NEAREST`).
    """

    def __init__(self, in_channels, out_channels, stride=1, tau=5, binary_act=False,
                 act_grad="approxsign", rng=None, refine=True, period=25, init="random",
                 assign="exact", weight_init="kaiming_normal"):
        rng = rng if rng is not None else np.random.default_rng(0)
        super().__init__(in_channels, out_channels, 3, stride, 1, binary_act=binary_act,
                         act_grad=act_grad, rng=rng, weight_init=weight_init)
        if init not in INITS:
            raise ValueError(f"unknown codebook init {init!r}, expected one of {INITS}")
        self.tau, self.init = tau, init
        self.codebook = Codebook(tau, rng, refine=refine, period=period,
                                 scale=np.abs(self.weight.data).mean(), rule=assign)
        self.register_buffer("idx", np.zeros((out_channels, in_channels), np.uint16))
        self.needs_init = init == "frequent"
        self.idx = self.codebook.assign(self.weight.data)

    def after_load(self):
        # Loaded arrays are an initialised state; idx must match them. The
        # codebook's own hook runs after this one (parents come first).
        self.needs_init = False
        self.codebook.after_load()
        self.idx = self.codebook.assign(self.weight.data)

    def init_frequent(self, kernel_codes):
        """Codebook := the 2^tau most frequent of a trained BNN layer's kernel codes."""
        kernel_codes = np.asarray(kernel_codes)
        if kernel_codes.shape != self.idx.shape:
            raise ValueError(f"init_frequent: kernel codes of shape {kernel_codes.shape}, "
                             f"expected {self.idx.shape} (c_out, c_in)")
        self.codebook.init_frequent(kernel_codes)
        self.needs_init = False
        self.idx = self.codebook.assign(self.weight.data)

    def after_update(self):
        self.codebook.update()
        self.idx = self.codebook.assign(self.weight.data)

    def kernel_codes(self):
        """Code of the binary kernel each (o, i) uses now: (c_out, c_in) uint16."""
        return self.codebook.codes[self.codebook.assign(self.weight.data)]

    def binary_weight(self):
        if self.training and self.needs_init:
            raise ValueError(f"SubBitConv2d({self.in_channels}->{self.out_channels}) has "
                             "init='frequent' but no codebook yet: call "
                             "subbit.init_codebooks_from(model, bnn) before training")
        w = self.weight.data
        self.idx = self.codebook.assign(w)
        k = self.codebook.kernels.astype(w.dtype)[self.idx]
        return k.reshape(w.shape), weight_scale(w)

    def binary_weight_backward(self, dB):
        self.weight.grad += F.clip_backward(dB, self.weight.data)
        if self.codebook.refining():
            self.codebook.accumulate_grad(self.idx, dB.reshape(-1, 9))


def binary_kernel_codes(module):
    """Kernel codes (c_out, c_in) of a BinaryConv2d or SubBitConv2d as trained."""
    if isinstance(module, SubBitConv2d):
        return module.kernel_codes()
    if isinstance(module, BinaryConv2d):
        return kernels_to_codes(module.weight.data)
    raise ValueError(f"{type(module).__name__} is not a binary conv layer")


def init_codebooks_from(model, bnn, source="BNN"):
    """Fill every SubBitConv2d of ``model`` with the most frequent kernels of the
    matching layer of ``bnn`` (a BNN model, or its state dict of latent weights
    keyed like ``layer1.0.conv1.weight``; binarized with sign(0) = +1).
    ``source`` names the BNN in error messages (e.g. its checkpoint path).
    Returns the initialised layer names."""
    state = bnn.state_dict() if isinstance(bnn, Module) else bnn
    done = []
    for name, mod in model.named_modules():
        if not isinstance(mod, SubBitConv2d):
            continue
        key = f"{name}.weight"
        if key not in state:
            raise ValueError(f"{source}: no array {key!r} to initialise the codebook of "
                             f"layer {name!r}")
        w = np.asarray(state[key])
        if w.shape != mod.weight.data.shape:
            raise ValueError(f"{source}: array {key!r} has shape {w.shape}, expected "
                             f"{mod.weight.data.shape} for layer {name!r}")
        mod.init_frequent(kernels_to_codes(w))
        done.append(name)
    if not done:
        raise ValueError(f"init_codebooks_from({source}): the model has no SubBitConv2d layer")
    return done
