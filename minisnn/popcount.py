"""Integer popcount kernels (numba) for binary and sub-bit 3x3 convs.

All convs are 3x3, padding 1, stride 1 or 2. Activations are {-1, +1};
zero padding contributes 0 (taps outside the input are skipped/masked).
The public wrappers below are the golden model the RTL is checked
against; the ``*_packed`` / ``*_codes`` functions take already-packed
inputs (bit orders in :mod:`minisnn.bitpack`) so an engine can keep
activations packed between layers.

- BNN (W1/A1): channel-packed XNOR-popcount, dot per tap
  C_in - 2 * popcount(a ^ w).
- SNN (sub-bit W / A1): per input channel and position the 2^tau Dot9
  results are computed once into a table that every output channel reads
  through idx (the paper's Dot9 + table + lanes scheme).
- SNN (sub-bit W / real A): per input channel the 2^tau kernel responses
  are computed once and shared the same way; alpha[o] is applied last.

Speed is measured by ``python -m minisnn.bench kernels``. Importing
minisnn sets OMP_WAIT_POLICY=passive unless the user set it: spinning idle
OpenMP workers otherwise starve BLAS and other processes.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .bitpack import (check_codes, check_nchw, check_stride, num_words, output_size,
                      pack_activations, pack_weights, patch_codes, tap_masks)
from .functional import conv2d_forward_reference, pad_nchw
from .subbit import NUM_KERNELS

# Sub-bit W/A1: a compile-time tile width lets LLVM unroll the lane adds
# into straight vector code (256 uint8 = 8 AVX2 registers); A1_BLOCK input
# channels of at most 9 mismatches each still fit a uint8 (28 * 9 = 252).
A1_TILE = 256
A1_BLOCK = 28
A1_GROUP = 4  # the kernel body reads exactly 4 tables per pass; divides A1_BLOCK
# Sub-bit W/32A: same scheme in float32, 64 positions (8 AVX2 registers).
REAL_TILE = 64
REAL_GROUP = 4


@intrinsic
def _popcount(typingctx, x):
    """llvm.ctpop: popcnt on scalars, vpopcnt{q,w} when LLVM vectorizes a loop."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


# ---------------------------------------------------------------- BNN W1/A1

@njit(parallel=True, cache=True)
def _bnn_kernel(a, wt, c_in, stride, ho, wo):
    n, h, w, nw = a.shape
    c_out = wt.shape[3]
    out = np.empty((n, c_out, ho, wo), dtype=np.int32)
    for task in prange(n * ho):
        b = task // ho
        y = task % ho
        cnt = np.zeros((wo, c_out), dtype=np.int32)
        for x in range(wo):
            valid = 0
            for dy in range(3):
                iy = y * stride + dy - 1
                if iy < 0 or iy >= h:
                    continue
                for dx in range(3):
                    ix = x * stride + dx - 1
                    if ix < 0 or ix >= w:
                        continue
                    valid += 1
                    for k in range(nw):
                        aw = a[b, iy, ix, k]
                        # contiguous over o: LLVM vectorizes the XOR-popcount (int32
                        # cast: int32 + uint64 would promote to float64 in numba)
                        for o in range(c_out):
                            cnt[x, o] += np.int32(_popcount(aw ^ wt[dy, dx, k, o]))
            for o in range(c_out):
                out[b, o, y, x] = valid * c_in - 2 * cnt[x, o]
    return out


def bnn_conv3x3_packed(a_packed, w_packed, c_in, stride=1):
    """Integer sums int32 (N, C_out, Ho, Wo) from channel-packed activations
    (N, H, W, words) and weights (C_out, 3, 3, words), both uint64."""
    stride = check_stride(stride)
    for name, arr in (("a_packed", a_packed), ("w_packed", w_packed)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint64 or arr.ndim != 4:
            raise ValueError(f"{name} must be a 4-D uint64 array, found "
                             f"{getattr(arr, 'dtype', type(arr))} {np.shape(arr)}")
        if arr.shape[-1] != num_words(c_in):
            raise ValueError(f"{name} must hold {num_words(c_in)} words for c_in={c_in}, "
                             f"found {arr.shape[-1]}")
    if w_packed.shape[1:3] != (3, 3):
        raise ValueError(f"w_packed must be (C_out, 3, 3, words), found {w_packed.shape}")
    n, h, w, _ = a_packed.shape
    # Output channels innermost so the popcount loop runs over contiguous words.
    wt = np.ascontiguousarray(w_packed.transpose(1, 2, 3, 0))
    return _bnn_kernel(np.ascontiguousarray(a_packed), wt, int(c_in), stride,
                       output_size(h, stride), output_size(w, stride))


def bnn_conv3x3(a, kernel_codes, stride=1):
    """BNN conv: a int8 {-1,+1} (N, C_in, H, W), kernel_codes uint16 (C_out, C_in)
    -> int32 (N, C_out, Ho, Wo), exact zero-padding semantics."""
    a = _check_signs(a)
    codes = check_codes(kernel_codes, "kernel_codes", 2)
    _check_channels(a, codes.shape[1], "kernel_codes")
    return bnn_conv3x3_packed(pack_activations(a), pack_weights(codes), a.shape[1], stride)


# ------------------------------------------------------------ SNN W/A1

@njit(parallel=True, cache=True)
def _snn_codes_kernel(codes, masks, codebook, idx, wide_like):
    n, c_in, hw = codes.shape  # idx: (C_out, C_in rounded up to A1_GROUP)
    c_out = idx.shape[0]
    n_sub = codebook.shape[0]
    total = n * hw
    out = np.empty((n, c_out, hw), dtype=np.int32)
    # Tiles of A1_TILE positions, flattened over images so every tile is full.
    for tile in prange((total + A1_TILE - 1) // A1_TILE):
        q0 = tile * A1_TILE
        m = min(A1_TILE, total - q0)
        patch = np.zeros((c_in, A1_TILE), dtype=np.uint16)
        mask = np.zeros(A1_TILE, dtype=np.uint16)  # 0 beyond the last position: counts 0
        image = np.empty(A1_TILE, dtype=np.intp)
        place = np.empty(A1_TILE, dtype=np.intp)
        for p in range(m):
            image[p], place[p] = divmod(q0 + p, hw)
            mask[p] = masks[place[p]]
        for i in range(c_in):  # channel-outer: consecutive reads along each image row
            for p in range(m):
                patch[i, p] = codes[image[p], i, place[p]]
        # Mismatch counts popcount((k ^ patch) & mask): the Dot9 table per input
        # channel, read by every output channel through idx. The lanes add in
        # uint8 (twice the SIMD width of int16) over blocks of A1_BLOCK channels,
        # then spill into the wide counts; A1_GROUP channels per pass over the
        # lanes cut the loads/stores of the narrow counts fourfold.
        table = np.zeros((A1_GROUP, n_sub, A1_TILE), dtype=np.uint8)
        narrow = np.zeros((c_out, A1_TILE), dtype=np.uint8)
        wide = np.zeros((c_out, A1_TILE), dtype=wide_like.dtype)
        for i0 in range(0, c_in, A1_BLOCK):
            for g0 in range(i0, min(i0 + A1_BLOCK, c_in), A1_GROUP):
                for g in range(A1_GROUP):
                    if g0 + g >= c_in:  # idx is padded with 0: keep row 0 all zero
                        table[g, 0] = 0
                        continue
                    for s in range(n_sub):
                        k = codebook[s]
                        for p in range(A1_TILE):
                            table[g, s, p] = _popcount(np.uint16((k ^ patch[g0 + g, p]) & mask[p]))
                for o in range(c_out):
                    s0 = idx[o, g0]
                    s1 = idx[o, g0 + 1]
                    s2 = idx[o, g0 + 2]
                    s3 = idx[o, g0 + 3]
                    for p in range(A1_TILE):
                        narrow[o, p] += (table[0, s0, p] + table[1, s1, p]
                                         + table[2, s2, p] + table[3, s3, p])
            for o in range(c_out):
                for p in range(A1_TILE):
                    wide[o, p] += narrow[o, p]
                    narrow[o, p] = 0
        valid = np.empty(A1_TILE, dtype=np.int32)
        for p in range(m):
            valid[p] = c_in * np.int32(_popcount(mask[p]))
        for o in range(c_out):  # o-outer: writes run along each image's positions
            for p in range(m):
                out[image[p], o, place[p]] = valid[p] - 2 * np.int32(wide[o, p])
    return out


def snn_conv3x3_codes(codes, masks, codebook, idx):
    """Sub-bit W/A1 sums int32 (N, C_out, Ho, Wo) from patch codes uint16
    (N, C_in, Ho, Wo) and tap masks uint16 (Ho, Wo) (see bitpack.patch_codes)."""
    codes = check_codes(codes, "patch codes", 4)
    masks = check_codes(masks, "tap masks", 2)
    if masks.shape != codes.shape[2:]:
        raise ValueError(f"tap masks must be {codes.shape[2:]}, found {masks.shape}")
    codebook, idx = _check_codebook(codebook, idx, codes.shape[1])
    n, c_in, ho, wo = codes.shape
    # uint16 counts while the worst case 9*C_in fits, twice the SIMD width of int32
    wide_like = np.empty(0, np.uint16 if 9 * c_in <= np.iinfo(np.uint16).max else np.int32)
    out = _snn_codes_kernel(np.ascontiguousarray(codes).reshape(n, c_in, ho * wo),
                            np.ascontiguousarray(masks).reshape(ho * wo), codebook,
                            _pad_columns(idx, A1_GROUP), wide_like)
    return out.reshape(n, idx.shape[0], ho, wo)


def snn_conv3x3(a, codebook, idx, stride=1):
    """Sub-bit W/A1 conv: a int8 {-1,+1} (N, C_in, H, W), codebook uint16 (2^tau,)
    distinct codes, idx (C_out, C_in) -> int32 (N, C_out, Ho, Wo)."""
    a = _check_signs(a)
    stride = check_stride(stride)
    return snn_conv3x3_codes(patch_codes(a, stride), tap_masks(a.shape[2], a.shape[3], stride),
                             codebook, idx)


# ----------------------------------------------------------- SNN W/32A

@njit(parallel=True, cache=True)
def _snn_real_kernel(xp, codebook, idx, alpha, stride, ho, wo):
    n, c_in, hp, wp = xp.shape  # idx: (C_out, C_in rounded up to REAL_GROUP)
    c_out = idx.shape[0]
    n_sub = codebook.shape[0]
    hw = ho * wo
    total = n * hw
    flat = xp.reshape(n, c_in, hp * wp)
    # tap j = (j // 3, j % 3) sits at this offset from the window's top-left
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = 0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2
    lowest = np.zeros(32, dtype=np.intp)  # index of the lowest set bit
    for pat in range(1, 32):
        while not (pat >> lowest[pat]) & 1:
            lowest[pat] += 1
    two = np.float32(2)  # a float32 constant keeps the adds in float32
    out = np.empty((n, c_out, hw), dtype=np.float32)
    for tile in prange((total + REAL_TILE - 1) // REAL_TILE):
        q0 = tile * REAL_TILE
        m = min(REAL_TILE, total - q0)
        image = np.zeros(REAL_TILE, dtype=np.intp)
        corner = np.zeros(REAL_TILE, dtype=np.intp)  # top-left of the window in xp
        for p in range(m):
            b, r = divmod(q0 + p, hw)
            image[p] = b
            corner[p] = (r // wo) * stride * wp + (r % wo) * stride
        taps = np.zeros((9, REAL_TILE), dtype=np.float32)  # positions past m stay 0
        # Signed partial sums over taps 0-3 (16 patterns) and 4-8 (32 patterns):
        # response(k) = low[k & 15] + high[k >> 4], 48 + 2^tau adds, not 9 * 2^tau.
        low = np.empty((16, REAL_TILE), dtype=np.float32)
        high = np.empty((32, REAL_TILE), dtype=np.float32)
        resp = np.zeros((REAL_GROUP, n_sub, REAL_TILE), dtype=np.float32)
        acc = np.zeros((c_out, REAL_TILE), dtype=np.float32)
        for g0 in range(0, c_in, REAL_GROUP):
            for g in range(REAL_GROUP):
                i = g0 + g
                if i >= c_in:  # idx is padded with 0: keep row 0 all zero
                    resp[g, 0] = 0
                    continue
                # position-outer with the 9 taps unrolled: the runs along an image
                # row are too short for per-tap vector loops to pay
                for p in range(m):
                    src = corner[p]
                    b = image[p]
                    taps[0, p] = flat[b, i, src + t0]
                    taps[1, p] = flat[b, i, src + t1]
                    taps[2, p] = flat[b, i, src + t2]
                    taps[3, p] = flat[b, i, src + t3]
                    taps[4, p] = flat[b, i, src + t4]
                    taps[5, p] = flat[b, i, src + t5]
                    taps[6, p] = flat[b, i, src + t6]
                    taps[7, p] = flat[b, i, src + t7]
                    taps[8, p] = flat[b, i, src + t8]
                for p in range(REAL_TILE):
                    low[0, p] = -(taps[0, p] + taps[1, p] + taps[2, p] + taps[3, p])
                    high[0, p] = -(taps[4, p] + taps[5, p] + taps[6, p] + taps[7, p] + taps[8, p])
                for pat in range(1, 32):
                    bit = lowest[pat]
                    rest = pat & (pat - 1)
                    if pat < 16:
                        for p in range(REAL_TILE):
                            low[pat, p] = low[rest, p] + two * taps[bit, p]
                    for p in range(REAL_TILE):
                        high[pat, p] = high[rest, p] + two * taps[4 + bit, p]
                for s in range(n_sub):
                    lo = codebook[s] & 15
                    hi = codebook[s] >> 4
                    for p in range(REAL_TILE):
                        resp[g, s, p] = low[lo, p] + high[hi, p]
            # one load/store of the accumulators per REAL_GROUP channels
            for o in range(c_out):
                s0 = idx[o, g0]
                s1 = idx[o, g0 + 1]
                s2 = idx[o, g0 + 2]
                s3 = idx[o, g0 + 3]
                for p in range(REAL_TILE):
                    acc[o, p] += (resp[0, s0, p] + resp[1, s1, p]) + (resp[2, s2, p] + resp[3, s3, p])
        for o in range(c_out):  # o-outer: writes run along each image's positions
            for p in range(m):
                out[image[p], o, q0 + p - image[p] * hw] = alpha[o] * acc[o, p]
    return out


def snn_conv3x3_real(x, codebook, idx, alpha, stride=1):
    """Sub-bit W / real A conv: x float32 (N, C_in, H, W), weights
    alpha[o] * K[idx[o, i]] -> float32 (N, C_out, Ho, Wo)."""
    x = _check_float32(x, "x")
    codebook, idx = _check_codebook(codebook, idx, x.shape[1])
    alpha = np.asarray(alpha)
    if alpha.dtype.kind != "f" or alpha.shape != (idx.shape[0],):
        raise ValueError(f"alpha must be floating ({idx.shape[0]},), found {alpha.dtype} {alpha.shape}")
    stride = check_stride(stride)
    n, c_in, h, w = x.shape
    ho, wo = output_size(h, stride), output_size(w, stride)
    out = _snn_real_kernel(pad_nchw(x, 1), codebook, _pad_columns(idx, REAL_GROUP),
                           alpha.astype(np.float32), stride, ho, wo)
    return out.reshape(n, idx.shape[0], ho, wo)


# ------------------------------------------------------------ float, thresholds

def float_conv3x3(x, w, stride=1):
    """float32 reference (functional.conv2d_forward_reference): x (N, C_in, H, W), w (C_out, C_in, 3, 3)."""
    x = _check_float32(x, "x")
    w = np.asarray(w)
    if w.dtype != np.float32 or w.ndim != 4 or w.shape[1:] != (x.shape[1], 3, 3):
        raise ValueError(f"w must be float32 (C_out, {x.shape[1]}, 3, 3), found {w.dtype} {w.shape}")
    return conv2d_forward_reference(x, w, check_stride(stride), padding=1)[0]


def apply_thresholds(sums, thresh, flip):
    """Bits uint8 (1 = +1): sums >= thresh[o], or sums <= thresh[o] where flip[o].

    sums: integer (N, C, H, W); thresh: integer (C,); flip: bool (C,).
    """
    sums = np.asarray(sums)
    thresh = np.asarray(thresh)
    flip = np.asarray(flip)
    if sums.ndim != 4 or sums.dtype.kind not in "iu":
        raise ValueError(f"sums must be an integer (N, C, H, W) array, found {sums.dtype} {sums.shape}")
    c = sums.shape[1]
    if thresh.shape != (c,) or thresh.dtype.kind not in "iu":
        raise ValueError(f"thresh must be integer ({c},), found {thresh.dtype} {thresh.shape}")
    if flip.shape != (c,) or flip.dtype != bool:
        raise ValueError(f"flip must be bool ({c},), found {flip.dtype} {flip.shape}")
    t = thresh.astype(np.int64)[:, None, None]
    bits = np.where(flip[:, None, None], sums <= t, sums >= t)
    return bits.astype(np.uint8)


# ------------------------------------------------------------ validation

def _check_signs(a):
    """dtype and shape only: packing (bitpack.signs_to_bits) checks the values."""
    a = check_nchw(a, "a")
    if a.dtype != np.int8:
        raise ValueError(f"a must be int8 in {{-1, +1}}, found dtype {a.dtype}")
    return a


def _check_float32(x, name):
    x = check_nchw(x, name)
    if x.dtype != np.float32:
        raise ValueError(f"{name} must be float32, found dtype {x.dtype}")
    return x


def _check_channels(a, c_in, name):
    if a.shape[1] != c_in:
        raise ValueError(f"{name} expects {c_in} input channels, activations have {a.shape[1]}")


def _pad_columns(idx, group):
    """idx with zero columns up to a multiple of ``group`` (kernels read whole groups)."""
    padded = np.zeros((idx.shape[0], -(-idx.shape[1] // group) * group), dtype=np.intp)
    padded[:, :idx.shape[1]] = idx
    return padded


def _check_codebook(codebook, idx, c_in):
    """Validate (codebook, idx) against c_in; return them contiguous for numba."""
    codebook = check_codes(codebook, "codebook", 1)
    n_sub = codebook.shape[0]
    if n_sub < 2 or n_sub & (n_sub - 1) or n_sub > NUM_KERNELS:
        raise ValueError(f"codebook must hold 2**tau codes (tau 1..9), found {n_sub}")
    if np.unique(codebook).size != n_sub:
        raise ValueError(f"codebook codes must be distinct, found duplicates in {codebook.tolist()}")
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu" or idx.ndim != 2 or idx.shape[1] != c_in or idx.shape[0] == 0:
        raise ValueError(f"idx must be an integer (C_out, {c_in}) array, found {idx.dtype} {idx.shape}")
    if idx.min() < 0 or idx.max() >= n_sub:
        raise ValueError(f"idx must lie in [0, {n_sub}), found {idx.min()}..{idx.max()}")
    return np.ascontiguousarray(codebook), np.ascontiguousarray(idx, dtype=np.intp)
