"""Integer popcount kernels (numba) for binary and sub-bit 3x3 convs.

All convs are 3x3, padding 1, stride 1 or 2. Activations are {-1, +1};
zero padding contributes 0 (taps outside the input count nothing).
The public wrappers below are the golden model the RTL is checked
against; the ``*_packed`` / ``*_codes`` functions take already-packed
inputs (bit orders in :mod:`minisnn.bitpack`).

- BNN (W1/A1), the integer engine: XNOR-popcount over whole 3x3 x C
  windows in uint32 patch words (bitpack.patch_layout), sum = taps inside
  x C - 2 * mismatches. :func:`pack_conv` lays a layer out,
  :func:`conv3x3_sums` runs it from float activations (sign, packing and
  popcount fused), and :func:`hardtanh_block` / :func:`rprelu_block` run a
  whole residual block per image with the float steps around the convs
  fused in, bit-identical to the float model. Sub-bit layers run here on
  their decoded kernels codebook[idx]: on a CPU with a vector popcount
  that beats the Dot9 table below (``python -m minisnn.bench kernels``).
- SNN (sub-bit W / A1), the paper's processing element: per input channel
  and position the 2^tau Dot9 results are computed once into a table that
  every output channel reads through idx (Dot9 + table + lanes).
- SNN (sub-bit W / real A): per input channel the 2^tau kernel responses
  are computed once and shared the same way; alpha[o] is applied last.

Speed: ``python -m minisnn.bench kernels`` (per layer) and ``infer``
(whole ResNet-20). The command-line tools set OMP_WAIT_POLICY=passive
(minisnn.runtime): spinning idle OpenMP workers starve BLAS and other
processes.
"""

from dataclasses import dataclass

import numpy as np
from numba import literally, njit, prange, types
from numba.extending import intrinsic

from .bitpack import (check_codes, check_nchw, check_stride, num_words, output_size,
                      pack_activations, pack_patch_weights, patch_codes, patch_layout, tap_masks)
from .functional import conv2d_forward_reference, pad_nchw
from .romlayer import check_codebook

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

# The engine works image by image (prange over the batch), so a block's
# activations stay in the core's L2 from one conv to the next. Per image:
# activation bits, flat (channel_words, H * W), channel c in uint32 word
# c // 32 at bit c % 32; patch words (Ho * Wo positions each) in the layout
# of bitpack.patch_layout, rounded up to 5, 9 or a multiple of 9 words; then
# per output channel one flat pass over all positions that XORs, popcounts
# (vpopcntd on AVX-512), adds the counts of all words in registers and runs
# the epilogue. uint32 words keep the whole pass at 16 lanes (uint64: 8,
# measured 2x slower); one loop per word count (5, 9, 18: up to 64
# channels): a loop over the words inside, or a second pass over the
# positions, costs 2-5x at 8x8 (measured). Above 64 channels, one pass
# counts all words but the last 18 first.
# A tap in the zero padding holds 0 in the patch words, so every +1 weight
# bit there counts as a mismatch: the per-position ``bias`` (PackedConv)
# takes those back, s = bias - 2 * mismatches.
WORD_COUNTS = (5, 9)  # else a multiple of 9


@dataclass(frozen=True)
class PackedConv:
    """A binary 3x3 conv (padding 1) on ``height`` x ``width`` inputs, laid out
    for the patch-word kernels (:func:`pack_conv`)."""

    c_in: int
    height: int
    width: int
    stride: int
    words: np.ndarray  # uint32 (C_out, patch words rounded up to 5, 9 or 9k)
    bias: np.ndarray  # int32 (C_out, Ho * Wo): taps inside * c_in + 2 * (+1 weight bits outside)

    @property
    def c_out(self):
        return self.words.shape[0]

    @property
    def out_size(self):
        return output_size(self.height, self.stride), output_size(self.width, self.stride)

    @property
    def layout(self):
        """(field_bits, taps_per_word) of bitpack.patch_layout."""
        return patch_layout(self.c_in)[:2]


def pack_conv(kernel_codes, height, width, stride=1):
    """PackedConv of kernel codes uint16 (C_out, C_in) for inputs height x width."""
    codes = check_codes(kernel_codes, "kernel_codes", 2)
    stride = check_stride(stride)
    if min(codes.shape) == 0 or height < 1 or width < 1:
        raise ValueError(f"pack_conv needs kernels and an input size, found codes {codes.shape}, "
                         f"input {height} x {width}")
    c_out, c_in = codes.shape
    packed = pack_patch_weights(codes)
    n_words = next((k for k in WORD_COUNTS if packed.shape[1] <= k), -(-packed.shape[1] // 9) * 9)
    words = np.zeros((c_out, n_words), np.uint32)
    words[:, :packed.shape[1]] = packed
    taps = np.arange(9, dtype=np.uint16)
    ones = ((codes[:, :, None] >> taps) & 1).sum(axis=1).astype(np.int64)  # (C_out, 9)
    inside = ((tap_masks(height, width, stride).reshape(-1, 1) >> taps) & 1).astype(np.int64)
    bias = inside.sum(axis=1) * c_in + 2 * ones @ (1 - inside).T
    return PackedConv(int(c_in), int(height), int(width), stride, words, bias.astype(np.int32))


@njit(cache=True)
def _pack_image(x, shift, bits):
    """Activation bits (channel_words, H * W) of sign(x + shift), x float32 (C, H * W):
    x * 1 + shift >= 0, as functional.shifted_sign (shift 0: x >= 0, -0.0 included)."""
    bits[:] = 0
    zero = np.float32(0)
    for i in range(x.shape[0]):
        v, bit, d = i // 32, np.uint32(i % 32), shift[i]
        for p in range(x.shape[1]):
            bits[v, p] |= np.uint32(x[i, p] * np.float32(1) + d >= zero) << bit


@njit(cache=True)
def _patch_image(bits, h, w, stride, field, taps_per_word, patches):
    """Patch words (words, Ho * Wo) of one image's activation bits (channel_words, H * W)."""
    channel_words = bits.shape[0]
    ho = (h - 1) // stride + 1
    wo = (w - 1) // stride + 1
    patches[:] = 0
    for t in range(9):
        dy = t // 3 - 1
        dx = t % 3 - 1
        shift = np.uint32((t % taps_per_word) * field)
        y0 = 0 if dy >= 0 else 1  # the output rows and columns whose tap lies inside
        y1 = ho if stride * (ho - 1) + dy < h else ho - 1
        x0 = 0 if dx >= 0 else 1
        x1 = wo if stride * (wo - 1) + dx < w else wo - 1
        for v in range(channel_words):
            src = bits[v]
            dst = patches[(t // taps_per_word) * channel_words + v]
            if stride == 1:
                # one flat run over those rows (slices: indices provably >= 0, so
                # it vectorizes); where it crosses a row edge, the bits go out again
                p0 = y0 * w + x0
                p1 = (y1 - 1) * w + x1
                off = dy * w + dx
                if p1 > p0:
                    d = dst[p0:p1]
                    s = src[p0 + off:p1 + off]
                    for p in range(d.size):
                        d[p] |= s[p] << shift
                if dx != 0:
                    for y in range(y0, y1):
                        p = y * w + (0 if dx < 0 else w - 1)
                        if p0 <= p < p1:
                            dst[p] &= ~(src[p + off] << shift)
            else:
                for y in range(y0, y1):
                    src_row = (stride * y + dy) * w + dx
                    for x in range(x0, x1):
                        dst[y * wo + x] |= src[src_row + stride * x] << shift


@njit(cache=True)
def _head_counts(patches, words):
    """Mismatches int32 (C_out, positions) in all words but the last 18 (C_in >
    64), 18 words per pass (then 9 if left); one row of zeros otherwise."""
    n, npos = patches.shape
    if n <= 18:
        return np.zeros((1, npos), dtype=np.int32)
    counts = np.zeros((words.shape[0], npos), dtype=np.int32)
    for o in range(words.shape[0]):
        k = 0
        while k + 18 <= n - 18:
            for p in range(npos):
                for j in range(18):
                    counts[o, p] += np.int32(_popcount(patches[k + j, p] ^ words[o, k + j]))
            k += 18
        for p in range(npos if k < n - 18 else 0):
            for j in range(9):
                counts[o, p] += np.int32(_popcount(patches[k + j, p] ^ words[o, k + j]))
    return counts


# The epilogues: what output (o, p) gets from its integer sum s. Each runs the
# float model's float32 operations in its order (no fastmath, so no FMA
# contraction): the outputs are the float model's bits. Parameters: float32
# (rows, C_out); res float32 (C_out, positions).
SUMS, HARDTANH, RPRELU = 0, 1, 2


@njit(cache=True)
def _put_hardtanh(o, p, s, affine, res, out):
    """out = hardtanh(bn(float32(s) * alpha) + res)."""
    v = np.float32(s) * affine[0, o]
    v = v * affine[1, o] + affine[2, o]
    v = v + res[o, p]  # a zero plane where option A pads: + 0.0 turns -0.0 into +0.0, as np.pad
    out[o, p] = min(max(v, np.float32(-1)), np.float32(1))


@njit(cache=True)
def _put_rprelu(o, p, s, affine, res, out):
    """out = rprelu(bn(alpha * s) + res): the alpha multiply as channel_affine(s,
    alpha, 0), batch norm, the residual add, then functional.rprelu."""
    one, zero = np.float32(1), np.float32(0)
    v = np.float32(s) * affine[0, o] + zero
    v = (v * affine[1, o] + affine[2, o]) + res[o, p]
    v = v * one + affine[3, o]
    out[o, p] = (v if v > zero else affine[4, o] * v) * one + affine[5, o]


@njit(cache=True)
def _conv_tail(epilogue, n_words, patches, words, bias, head, affine, res, out):
    """The conv over one image's positions: per output channel one loop that adds
    head + the mismatches in the last n_words patch words and runs the epilogue
    (SUMS: out = s, HARDTANH, RPRELU). Both are compile-time constants: the word
    loop unrolls so the position loop vectorizes, and the other epilogues are
    pruned. Everything is indexed from the 2-D arrays: a view per channel costs
    two atomic reference-count updates, as much as an 8x8 channel (measured).
    The next conv's sign bits are packed apart (_pack_image): OR-ing them in
    here chains every channel's stores to the next one's loads (2x slower)."""
    literally(epilogue)
    literally(n_words)
    k0 = patches.shape[0] - n_words
    two = np.int32(2)
    for o in range(words.shape[0]):
        h = o if head.shape[0] > 1 else 0
        for p in range(out.shape[1]):
            m = head[h, p]
            for j in range(n_words):
                m += np.int32(_popcount(patches[k0 + j, p] ^ words[o, k0 + j]))
            s = np.int32(bias[o, p] - two * m)
            if epilogue == SUMS:
                out[o, p] = s
            elif epilogue == HARDTANH:
                _put_hardtanh(o, p, s, affine, res, out)
            else:
                _put_rprelu(o, p, s, affine, res, out)


@njit(cache=True)
def _conv(epilogue, patches, words, bias, affine, res, out):
    """_conv_tail for this word count: 5, 9 or 18 words in one loop, more (C_in >
    64) with the head counted first."""
    literally(epilogue)
    n = patches.shape[0]
    head = _head_counts(patches, words)
    if n == 5:
        _conv_tail(epilogue, 5, patches, words, bias, head, affine, res, out)
    elif n == 9:
        _conv_tail(epilogue, 9, patches, words, bias, head, affine, res, out)
    else:
        _conv_tail(epilogue, 18, patches, words, bias, head, affine, res, out)


@njit(parallel=True, cache=True)
def _conv_sums_floats(x, shift, words, bias, h, w, stride, field, taps_per_word, channel_words):
    """int32 sums (N, C_out, Ho * Wo) of float32 x (N, C, H * W) by sign(x + shift)."""
    n = x.shape[0]
    npos = bias.shape[1]
    out = np.empty((n, words.shape[0], npos), dtype=np.int32)
    unused = np.empty((0, 0), dtype=np.float32)  # what the epilogue does not read
    for b in prange(n):
        bits = np.empty((channel_words, h * w), dtype=np.uint32)
        _pack_image(x[b], shift, bits)
        patches = np.empty((words.shape[1], npos), dtype=np.uint32)
        _patch_image(bits, h, w, stride, field, taps_per_word, patches)
        _conv(SUMS, patches, words, bias, unused, unused, out[b])
    return out


@njit(parallel=True, cache=True)
def _conv_sums_bits(bits, words, bias, h, w, stride, field, taps_per_word):
    """int32 sums (N, C_out, Ho * Wo) of activation bits (N, channel_words, H * W)."""
    n = bits.shape[0]
    npos = bias.shape[1]
    out = np.empty((n, words.shape[0], npos), dtype=np.int32)
    unused = np.empty((0, 0), dtype=np.float32)  # what the epilogue does not read
    for b in prange(n):
        patches = np.empty((words.shape[1], npos), dtype=np.uint32)
        _patch_image(bits[b], h, w, stride, field, taps_per_word, patches)
        _conv(SUMS, patches, words, bias, unused, unused, out[b])
    return out


def conv3x3_sums(x, conv, shift=None):
    """Integer sums int32 (N, C_out, Ho, Wo) of conv(sign(x + shift), B) for float32
    x (N, C_in, H, W), sign, packing and popcount fused; ``shift`` per input
    channel (ReActNet's move0) or None; ``conv`` a :class:`PackedConv`."""
    x = _check_input(x, conv)
    field, taps = conv.layout
    out = _conv_sums_floats(x.reshape(len(x), conv.c_in, -1), _channel_shift(shift, conv.c_in),
                            conv.words, conv.bias, conv.height, conv.width, conv.stride, field,
                            taps, patch_layout(conv.c_in)[2])
    return out.reshape((len(x), conv.c_out) + conv.out_size)


def bnn_conv3x3_packed(a_packed, conv):
    """Integer sums int32 (N, C_out, Ho, Wo) from channel-packed activations
    uint64 (N, H, W, words) (bitpack.pack_activations) and a :class:`PackedConv`."""
    words = num_words(conv.c_in)
    if (not isinstance(a_packed, np.ndarray) or a_packed.dtype != np.uint64
            or a_packed.shape[1:] != (conv.height, conv.width, words) or len(a_packed) == 0):
        raise ValueError(f"a_packed must be uint64 (N, {conv.height}, {conv.width}, {words}) for "
                         f"c_in={conv.c_in}, found {getattr(a_packed, 'dtype', type(a_packed))} "
                         f"{np.shape(a_packed)}")
    n = len(a_packed)
    field, taps = conv.layout
    # little-endian: the uint32 halves of word k hold channels 64k.. and 64k + 32..
    halves = np.ascontiguousarray(a_packed).view("<u4")[..., :patch_layout(conv.c_in)[2]]
    bits = np.ascontiguousarray(halves.reshape(n, conv.height * conv.width, -1).transpose(0, 2, 1))
    out = _conv_sums_bits(bits, conv.words, conv.bias, conv.height, conv.width, conv.stride,
                          field, taps)
    return out.reshape((n, conv.c_out) + conv.out_size)


def bnn_conv3x3(a, kernel_codes, stride=1):
    """BNN conv: a int8 {-1,+1} (N, C_in, H, W), kernel_codes uint16 (C_out, C_in)
    -> int32 (N, C_out, Ho, Wo), exact zero-padding semantics."""
    a = _check_signs(a)
    codes = check_codes(kernel_codes, "kernel_codes", 2)
    _check_channels(a, codes.shape[1], "kernel_codes")
    return bnn_conv3x3_packed(pack_activations(a), pack_conv(codes, a.shape[2], a.shape[3], stride))


# ------------------------------------------------------------ fused blocks

# A whole residual block per image: the binary convs above with the float
# steps around them (the _put_* epilogues) in the same passes.

@njit(parallel=True, cache=True)
def _hardtanh_block(x, words1, bias1, affine1, words2, bias2, affine2, h, w, stride, pad_lo,
                    field1, taps1, field2, taps2):
    n, c_in, hw = x.shape
    c_out = words1.shape[0]
    npos = bias1.shape[1]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    no_shift = np.zeros(max(c_in, c_out), dtype=np.float32)
    out = np.empty((n, c_out, npos), dtype=np.float32)
    for b in prange(n):
        bits = np.empty(((c_in + 31) // 32, hw), dtype=np.uint32)
        _pack_image(x[b], no_shift, bits)
        patches = np.empty((words1.shape[1], npos), dtype=np.uint32)
        _patch_image(bits, h, w, stride, field1, taps1, patches)
        shortcut = x[b]
        if stride > 1 or pad_lo > 0 or c_in != c_out:
            # option A: every stride-th pixel into channels pad_lo.., zeros elsewhere
            shortcut = np.zeros((c_out, npos), dtype=np.float32)
            for i in range(max(0, -pad_lo), min(c_in, c_out - pad_lo)):
                for y in range(ho):
                    for z in range(wo):
                        shortcut[pad_lo + i, y * wo + z] = x[b, i, stride * (y * w + z)]
        hidden = np.empty((c_out, npos), dtype=np.float32)
        _conv(HARDTANH, patches, words1, bias1, affine1, shortcut, hidden)
        bits = np.empty(((c_out + 31) // 32, npos), dtype=np.uint32)
        _pack_image(hidden, no_shift, bits)
        patches = np.empty((words2.shape[1], npos), dtype=np.uint32)
        _patch_image(bits, ho, wo, 1, field2, taps2, patches)
        _conv(HARDTANH, patches, words2, bias2, affine2, hidden, out[b])
    return out


def hardtanh_block(x, conv1, affine1, conv2, affine2, pad_lo=0):
    """The binary-activation basic block in one fused pass per image:

        h = hardtanh(bn1(alpha1 * conv1(sign(x))) + shortcut(x))
        out = hardtanh(bn2(alpha2 * conv2(sign(h))) + h)

    x float32 (N, C_in, H, W); conv1, conv2 :class:`PackedConv`; affine1,
    affine2 float32 (3, C_out) rows alpha, bn scale, bn shift; the option-A
    shortcut takes every stride-th pixel into channels pad_lo .. pad_lo + C_in - 1
    (stride 1, pad_lo 0: the identity). Returns float32 (N, C_out, Ho, Wo).
    """
    x = _check_input(x, conv1)
    ho, wo = conv1.out_size
    if not 0 <= pad_lo < conv1.c_out:
        raise ValueError(f"pad_lo must lie in [0, {conv1.c_out}), found {pad_lo}")
    if (conv2.c_in, conv2.c_out, conv2.height, conv2.width, conv2.stride) != (
            conv1.c_out, conv1.c_out, ho, wo, 1):
        raise ValueError(f"conv2 must be a stride-1 conv from {conv1.c_out} to {conv1.c_out} "
                         f"channels on {ho} x {wo}, found {conv2.c_in} to {conv2.c_out} on "
                         f"{conv2.height} x {conv2.width}, stride {conv2.stride}")
    out = _hardtanh_block(x.reshape(len(x), conv1.c_in, -1), conv1.words, conv1.bias,
                          _check_affine(affine1, conv1.c_out, "affine1"), conv2.words, conv2.bias,
                          _check_affine(affine2, conv1.c_out, "affine2"), conv1.height,
                          conv1.width, conv1.stride, int(pad_lo), *conv1.layout, *conv2.layout)
    return out.reshape((len(x), conv1.c_out, ho, wo))


@njit(parallel=True, cache=True)
def _rprelu_block(x, shift, words, bias, affine, res, h, w, stride, field, taps):
    n, c_in, hw = x.shape
    npos = bias.shape[1]
    out = np.empty((n, words.shape[0], npos), dtype=np.float32)
    unused = np.empty((0, 0), dtype=np.float32)  # what the epilogue does not read
    for b in prange(n):
        bits = np.empty(((c_in + 31) // 32, hw), dtype=np.uint32)
        _pack_image(x[b], shift, bits)
        patches = np.empty((words.shape[1], npos), dtype=np.uint32)
        _patch_image(bits, h, w, stride, field, taps, patches)
        _conv(RPRELU, patches, words, bias, affine, res[b], out[b])
    return out


def rprelu_block(x, shift, conv, affine, res):
    """ReActNet's block in one fused pass per image:

        out = rprelu(bn(alpha * conv(sign(x + shift))) + res)

    x float32 (N, C_in, H, W); shift float32 (C_in,) (move0); ``conv`` a
    :class:`PackedConv`; affine float32 (6, C_out) rows alpha, bn scale, bn
    shift, move1, PReLU slope, move2; res float32 (N, C_out, Ho, Wo), the
    shortcut. Returns float32 (N, C_out, Ho, Wo).
    """
    x = _check_input(x, conv)
    ho, wo = conv.out_size
    res = np.asarray(res)
    if res.dtype != np.float32 or res.shape != (len(x), conv.c_out, ho, wo):
        raise ValueError(f"res must be float32 {(len(x), conv.c_out, ho, wo)}, found "
                         f"{res.dtype} {res.shape}")
    out = _rprelu_block(x.reshape(len(x), conv.c_in, -1), _channel_shift(shift, conv.c_in),
                        conv.words, conv.bias, _check_affine(affine, conv.c_out, "affine", rows=6),
                        np.ascontiguousarray(res).reshape(len(x), conv.c_out, -1),
                        conv.height, conv.width, conv.stride, *conv.layout)
    return out.reshape((len(x), conv.c_out, ho, wo))


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


def _check_input(x, conv):
    """float32 (N, c_in, height, width) input of a PackedConv, C-contiguous."""
    x = _check_float32(x, "x")
    if x.shape[1:] != (conv.c_in, conv.height, conv.width):
        raise ValueError(f"x must be (N, {conv.c_in}, {conv.height}, {conv.width}) for this conv, "
                         f"found {x.shape}")
    return np.ascontiguousarray(x)


def _channel_shift(shift, c_in):
    if shift is None:
        return np.zeros(c_in, np.float32)
    shift = np.asarray(shift)
    if shift.dtype != np.float32 or shift.shape != (c_in,):
        raise ValueError(f"shift must be float32 ({c_in},), found {shift.dtype} {shift.shape}")
    return np.ascontiguousarray(shift)


def _check_affine(affine, c_out, name, rows=3):
    affine = np.asarray(affine)
    if affine.dtype != np.float32 or affine.shape != (rows, c_out):
        raise ValueError(f"{name} must be float32 ({rows}, {c_out}), found {affine.dtype} "
                         f"{affine.shape}")
    return np.ascontiguousarray(affine)


def _check_channels(a, c_in, name):
    if a.shape[1] != c_in:
        raise ValueError(f"{name} expects {c_in} input channels, activations have {a.shape[1]}")


def _pad_columns(idx, group):
    """idx with zero columns up to a multiple of ``group`` (kernels read whole groups)."""
    padded = np.zeros((idx.shape[0], -(-idx.shape[1] // group) * group), dtype=np.intp)
    padded[:, :idx.shape[1]] = idx
    return padded


def _check_codebook(codebook, idx, c_in):
    """Validate (codebook, idx) against c_in (romlayer.check_codebook); return them
    contiguous for numba."""
    codebook, idx = check_codebook(codebook, idx, c_in)
    return np.ascontiguousarray(codebook), np.ascontiguousarray(idx, dtype=np.intp)
