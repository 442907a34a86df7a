"""Numba convolution kernels: the fast path of every conv layer.

``conv2d_forward(x, w, stride, padding, method)`` computes what
``functional.conv2d_forward_reference`` does (the readable version, which
``method="reference"`` runs instead), tested equal to it. Two fast paths:

- im2col + one BLAS GEMM (any kernel, stride, padding): the reference's
  algorithm with im2col/col2im as parallel loops; the same columns and the
  same GEMM, so the same bits.
- direct kernels for 3x3, stride 1, padding 1: there the GEMMs are tall and
  thin (K = 9*C_in, few output channels) and the im2col matrix is 9x the
  input, so BLAS is memory-bound; the direct kernels read the input once.
  The input is zero-padded into a (C, N, H+2, W+2) buffer, so the padded
  planes of one channel for consecutive images form one flat vector in
  which the 9 taps are 9 constant offsets: the inner loops are long,
  contiguous and vectorize, even for 8x8 planes. Outputs computed at pad
  positions between rows and images are dropped. They sum in another order
  (fastmath), so they agree with the reference to rounding, not bits.
"""

import numpy as np
from numba import njit, prange

from .functional import (channel_affine, check_conv_input, conv2d_backward_reference,
                         conv2d_forward_reference, conv_output_size, gemm_columns_backward,
                         gemm_columns_forward, pad_nchw)

_GROUP_FLOATS = 2048  # images per kernel task: enough planes for ~2048-float loops (1024: 3-12% slower)
_DIRECT_MIN_SIDE = 16  # below 16x16 planes BLAS wins (measured: 64 channels at 8x8)
METHODS = ("auto", "direct", "gemm", "reference")


@njit(parallel=True, cache=True)
def _im2col(xp, kh, kw, stride, ho, wo, cols):
    n_img, c_in = xp.shape[:2]
    for r in prange(c_in * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for n in range(n_img):  # scalar indexing: a view per row costs 1.2-1.6x here
            for y in range(ho):
                base = (n * ho + y) * wo
                for x in range(wo):
                    cols[r, base + x] = xp[n, c, y * stride + i, x * stride + j]


@njit(cache=True, inline="always")
def _inside(size, stride, padding, out_size, offset):
    """[lo, hi): the output positions o whose input position o*stride + offset -
    padding lies in [0, size) (tap ``offset`` of the kernel)."""
    lo = min(max(0, (padding - offset + stride - 1) // stride), out_size)
    hi = max(min(out_size, (size - 1 + padding - offset) // stride + 1), lo)
    return lo, hi


@njit(cache=True, inline="always")
def _fill(dst, value):
    for k in range(dst.size):
        dst[k] = value


@njit(parallel=True, cache=True)
def _im2col_same(x, kh, kw, padding, cols):
    """_im2col for stride 1 and output planes as wide as the input: row (c, i, j)
    of image n is then the plane shifted by one offset, copied as one run
    (whole rows at once: 8x8 planes vectorize), with the padded rows and
    columns written as zeros, without a padded copy of x."""
    n_img, c_in, h, w = x.shape
    ho = cols.shape[1] // (n_img * w)
    plane = ho * w
    xf = x.reshape(-1)
    zero = cols.dtype.type(0)
    for r in prange(c_in * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        y_lo, y_hi = _inside(h, 1, padding, ho, i)
        x_lo, x_hi = _inside(w, 1, padding, w, j)
        for n in range(n_img):
            dst = cols[r, n * plane:(n + 1) * plane]
            _fill(dst[:y_lo * w], zero)
            _fill(dst[y_hi * w:], zero)
            if y_hi <= y_lo:
                continue
            src = xf[((n * c_in + c) * h + y_lo + i - padding) * w + x_lo + j - padding:]
            run = dst[y_lo * w + x_lo:y_hi * w - (w - x_hi)]
            for k in range(run.size):
                run[k] = src[k]
            for y in range(y_lo, y_hi):  # the columns the run wrapped into
                _fill(dst[y * w:y * w + x_lo], zero)
                _fill(dst[y * w + x_hi:(y + 1) * w], zero)


@njit(parallel=True, cache=True)
def _col2im(cols, kh, kw, stride, padding, ho, wo, dx):
    """Per channel and image: the scatter-adds into a zeroed padded plane (taps
    in (i, j) order, as col2im_reference adds them), whose inside is then
    copied into dx; one channel per task, so the adds never race."""
    n_img, c_in, h, w = dx.shape
    hp = max(h + 2 * padding, (ho - 1) * stride + kh)  # room for every tap, wide strides too
    wp = max(w + 2 * padding, (wo - 1) * stride + kw)
    plane = ho * wo
    dxf = dx.reshape(-1)
    for c in prange(c_in):
        acc = np.empty(hp * wp, dtype=cols.dtype)
        for n in range(n_img):
            acc[:] = 0
            for i in range(kh):
                for j in range(kw):
                    src = cols[(c * kh + i) * kw + j, n * plane:(n + 1) * plane]
                    for y in range(ho):
                        dst = acc[(y * stride + i) * wp + j:]
                        if stride == 1:  # unit stride: the adds vectorize
                            for x in range(wo):
                                dst[x] += src[y * wo + x]
                        else:
                            for x in range(wo):
                                dst[x * stride] += src[y * wo + x]
            out = dxf[(n * c_in + c) * h * w:(n * c_in + c + 1) * h * w]
            for y in range(h):
                row = acc[(y + padding) * wp + padding:]
                for x in range(w):
                    out[y * w + x] = row[x]


def im2col(x, kh, kw, stride, padding):
    """functional.im2col_reference as parallel loops: the same columns."""
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    cols = np.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    if stride == 1 and wo == w and w > padding:  # w > padding: every tap column has inputs
        _im2col_same(np.ascontiguousarray(x), kh, kw, padding, cols)
    else:  # strided reads: the loop over a padded copy is the faster one (measured)
        _im2col(np.ascontiguousarray(pad_nchw(x, padding)), kh, kw, stride, ho, wo, cols)
    return cols, (ho, wo)


def col2im(cols, x_shape, kh, kw, stride, padding):
    """functional.col2im_reference as parallel loops, one channel per task;
    the result is C-contiguous."""
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), kh, kw, stride, padding, ho, wo, dx)
    return dx


@njit(parallel=True, cache=True)
def _pad_planes(x, scale, buf):
    """Write each plane (c, n) of x into buf with a zero border (pad_flat); with
    a non-empty scale, x[:, c] * scale[c] + 0 instead of x (channel_affine's
    rounding, no FMA: this kernel has no fastmath). x is C-contiguous; rows
    are copied through flat views (1.5x faster at 32x32 than 4-D indexing)."""
    n, c, h, w = x.shape
    wp = w + 2
    plane = (h + 2) * wp
    xf = x.reshape(-1)
    zero = buf.dtype.type(0)
    scaled = scale.size > 0
    for t in prange(c * n):
        ch, img = t // n, t % n
        dst = buf[t * plane:(t + 1) * plane]
        src = xf[(img * c + ch) * h * w:(img * c + ch + 1) * h * w]
        _fill(dst[:wp], zero)
        _fill(dst[(h + 1) * wp:], zero)
        a = scale[ch] if scaled else zero
        for y in range(h):
            row = dst[(y + 1) * wp:(y + 2) * wp]
            s = src[y * w:(y + 1) * w]
            row[0] = zero
            if scaled:
                for i in range(w):
                    row[1 + i] = s[i] * a + zero
            else:
                for i in range(w):
                    row[1 + i] = s[i]
            row[w + 1] = zero


def pad_flat(x, scale=None):
    """Zero-pad (N, C, H, W) by 1 into a (C, N, H+2, W+2) buffer; with ``scale``
    (C,), pad x[:, c] * scale[c] instead.

    Returns (buf, shape) with buf flat and shape = (C, N, H+2, W+2): the
    padded plane of image n, channel c starts at (c*N + n) * (H+2)*(W+2).
    """
    n, c, h, w = x.shape
    buf = np.empty(c * n * (h + 2) * (w + 2), dtype=x.dtype)
    _pad_planes(np.ascontiguousarray(x), np.empty(0, x.dtype) if scale is None else scale.astype(x.dtype),
                buf)
    return buf, (c, n, h + 2, w + 2)


def _images_per_task(shape):
    return max(1, _GROUP_FLOATS // (shape[2] * shape[3]))


@njit(cache=True)
def _span(images, h, wp, wd):
    """Flat positions from the first output of a run of images to the last."""
    plane = (h + 2) * wp
    return (images - 1) * plane + (h - 1) * wp + wd


@njit(cache=True, inline="always")
def _taps(buf, b0, wp, length):
    """The 9 shifted views of the padded plane starting at b0: tap (i, j) of
    flat output position p reads buf[b0 + i*wp + j + p]."""
    b1 = b0 + wp
    b2 = b1 + wp
    return (buf[b0:b0 + length], buf[b0 + 1:b0 + 1 + length], buf[b0 + 2:b0 + 2 + length],
            buf[b1:b1 + length], buf[b1 + 1:b1 + 1 + length], buf[b1 + 2:b1 + 2 + length],
            buf[b2:b2 + length], buf[b2 + 1:b2 + 1 + length], buf[b2 + 2:b2 + 2 + length])


@njit(cache=True, inline="always")
def _weights9(w, o, c):
    """The 9 taps of kernel w[o, c] as scalars, kept in registers."""
    k = w[o, c]
    return k[0, 0], k[0, 1], k[0, 2], k[1, 0], k[1, 1], k[1, 2], k[2, 0], k[2, 1], k[2, 2]


@njit(parallel=True, fastmath=True, cache=True)
def _direct3x3(buf, shape, w, group, out):
    """out[n, o] = sum_c 3x3 correlation of padded plane (c, n) with w[o, c].

    A task covers ``group`` images and four output channels, which share
    each of the 9 tap loads (the loop is load-bound: four channels per pass
    run 1.2x faster than two with 512-bit vectors); when C_out is not a
    multiple of 4 the last pass repeats its last channel.
    """
    c_in, n_img, hp, wp = shape
    c_out = w.shape[0]
    h, wd = hp - 2, wp - 2
    plane = hp * wp
    quads = (c_out + 3) // 4
    groups = (n_img + group - 1) // group
    for t in prange(groups * quads):
        n0 = (t // quads) * group
        o0 = (t % quads) * 4
        o1, o2, o3 = min(o0 + 1, c_out - 1), min(o0 + 2, c_out - 1), min(o0 + 3, c_out - 1)
        images = min(group, n_img - n0)
        length = _span(images, h, wp, wd)
        acc = np.zeros((4, length), dtype=out.dtype)
        r0, r1, r2, r3 = acc[0], acc[1], acc[2], acc[3]
        for c in range(c_in):
            s0, s1, s2, s3, s4, s5, s6, s7, s8 = _taps(buf, (c * n_img + n0) * plane, wp, length)
            a0, a1, a2, a3, a4, a5, a6, a7, a8 = _weights9(w, o0, c)
            b0, b1, b2, b3, b4, b5, b6, b7, b8 = _weights9(w, o1, c)
            d0, d1, d2, d3, d4, d5, d6, d7, d8 = _weights9(w, o2, c)
            e0, e1, e2, e3, e4, e5, e6, e7, e8 = _weights9(w, o3, c)
            for p in range(length):
                x0, x1, x2 = s0[p], s1[p], s2[p]
                x3, x4, x5 = s3[p], s4[p], s5[p]
                x6, x7, x8 = s6[p], s7[p], s8[p]
                r0[p] += (a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4
                          + a5 * x5 + a6 * x6 + a7 * x7 + a8 * x8)
                r1[p] += (b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4
                          + b5 * x5 + b6 * x6 + b7 * x7 + b8 * x8)
                r2[p] += (d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4
                          + d5 * x5 + d6 * x6 + d7 * x7 + d8 * x8)
                r3[p] += (e0 * x0 + e1 * x1 + e2 * x2 + e3 * x3 + e4 * x4
                          + e5 * x5 + e6 * x6 + e7 * x7 + e8 * x8)
        for j in range(4):
            o = min(o0 + j, c_out - 1)
            for k in range(images):
                for y in range(h):
                    for x in range(wd):
                        out[n0 + k, o, y, x] = acc[j, k * plane + y * wp + x]


@njit(cache=True, inline="always")
def _add9(row, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """row[k] += a_k: one pass's 9 tap sums into a float64 accumulator row."""
    row[0] += a0
    row[1] += a1
    row[2] += a2
    row[3] += a3
    row[4] += a4
    row[5] += a5
    row[6] += a6
    row[7] += a7
    row[8] += a8


@njit(parallel=True, fastmath=True, cache=True)
def _direct3x3_dw(xbuf, gbuf, shape, c_out, group, dw):
    """dw[o, c] = sum_n 3x3 correlation of padded x plane (c, n) with the
    gradient plane (o, n); gbuf is the padded gradient (pad_flat layout),
    whose zero borders also zero the positions between rows and images."""
    c_in, n_img, hp, wp = shape
    h, wd = hp - 2, wp - 2
    plane = hp * wp
    zero = dw.dtype.type(0)
    for c in prange(c_in):
        acc = np.zeros((c_out, 9), dtype=np.float64)  # per-group partials summed in float64
        for n in range(0, n_img, group):
            length = _span(min(group, n_img - n), h, wp, wd)
            s0, s1, s2, s3, s4, s5, s6, s7, s8 = _taps(xbuf, (c * n_img + n) * plane, wp, length)
            for o in range(0, c_out, 2):  # two outputs per pass share the tap loads
                q = min(o + 1, c_out - 1)
                # output (y, x) sits at flat p = y*wp + x; its gradient at p + wp + 1
                g0 = (o * n_img + n) * plane + wp + 1
                g1 = (q * n_img + n) * plane + wp + 1
                g = gbuf[g0:g0 + length]
                f = gbuf[g1:g1 + length]
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
                e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = e8 = zero
                for p in range(length):
                    u, v = g[p], f[p]
                    t0, t1, t2 = s0[p], s1[p], s2[p]
                    t3, t4, t5 = s3[p], s4[p], s5[p]
                    t6, t7, t8 = s6[p], s7[p], s8[p]
                    a0 += u * t0
                    a1 += u * t1
                    a2 += u * t2
                    a3 += u * t3
                    a4 += u * t4
                    a5 += u * t5
                    a6 += u * t6
                    a7 += u * t7
                    a8 += u * t8
                    e0 += v * t0
                    e1 += v * t1
                    e2 += v * t2
                    e3 += v * t3
                    e4 += v * t4
                    e5 += v * t5
                    e6 += v * t6
                    e7 += v * t7
                    e8 += v * t8
                _add9(acc[o], a0, a1, a2, a3, a4, a5, a6, a7, a8)
                if q != o:
                    _add9(acc[q], e0, e1, e2, e3, e4, e5, e6, e7, e8)
        for o in range(c_out):
            for k in range(9):
                dw[o, c, k // 3, k % 3] = acc[o, k]


def direct_applies(w_shape, stride, padding):
    """Whether the direct kernels can compute this conv (3x3, stride 1, padding 1)."""
    return tuple(w_shape[2:]) == (3, 3) and stride == 1 and padding == 1


def uses_direct(x_shape, w_shape, stride, padding):
    """Whether conv2d_forward's automatic choice is the direct numba path."""
    return (direct_applies(w_shape, stride, padding)
            and min(x_shape[2], x_shape[3]) >= _DIRECT_MIN_SIDE)


def conv2d_forward(x, w, stride=1, padding=0, method="auto"):
    """Cross-correlation of x (N, C_in, H, W) with w (C_out, C_in, kh, kw).

    ``method``: 'auto' (the faster fast path for these shapes), 'direct',
    'gemm' or 'reference' (functional.conv2d_forward_reference). Returns the
    output (N, C_out, Ho, Wo) and the cache for :func:`conv2d_backward`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown conv method {method!r}, expected one of {METHODS}")
    if method == "reference":
        return conv2d_forward_reference(x, w, stride, padding)
    check_conv_input(x, w)
    n = x.shape[0]
    c_out, c_in, kh, kw = w.shape
    if method == "direct" and not direct_applies(w.shape, stride, padding):
        raise ValueError(f"the direct path needs a 3x3 kernel, stride 1 and padding 1, "
                         f"got weight {w.shape}, stride {stride}, padding {padding}")
    if method == "direct" or (method == "auto" and uses_direct(x.shape, w.shape, stride, padding)):
        w = np.ascontiguousarray(w, dtype=x.dtype)
        buf, shape = pad_flat(x)
        out = np.empty((n, c_out) + x.shape[2:], dtype=x.dtype)
        _direct3x3(buf, shape, w, _images_per_task(shape), out)
        return out, ("direct", buf, shape, w)
    cols, (ho, wo) = im2col(x, kh, kw, stride, padding)
    return gemm_columns_forward(cols, w, n, ho, wo), ("gemm", x.shape, cols, w, stride, padding)


def conv2d_backward(dout, cache, need_dx=True, dout_scale=None):
    """Gradients (dx, dw) of :func:`conv2d_forward`; dx is None if not needed.

    With ``dout_scale`` (C_out,) the gradient is dout[:, o] * dout_scale[o],
    as functional.channel_affine computes it (a binary conv's alpha); the
    direct path scales while it pads.
    """
    if dout_scale is not None and cache[0] != "direct":
        scaled = np.empty_like(dout)
        channel_affine(dout, dout_scale, np.zeros_like(dout_scale), scaled)
        dout, dout_scale = scaled, None
    if cache[0] == "reference":
        return conv2d_backward_reference(dout, cache, need_dx)
    if cache[0] == "direct":
        _, xbuf, shape, w = cache
        gbuf, gshape = pad_flat(np.ascontiguousarray(dout), dout_scale)
        dw = np.empty_like(w)
        group = _images_per_task(shape)
        _direct3x3_dw(xbuf, gbuf, shape, w.shape[0], group, dw)
        dx = None
        if need_dx:
            # dx is the correlation of the padded gradient with the flipped,
            # transposed kernels: the forward kernel again
            w_t = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            dx = np.empty((shape[1], shape[0], shape[2] - 2, shape[3] - 2), dtype=dout.dtype)
            _direct3x3(gbuf, gshape, w_t, group, dx)
        return dx, dw
    _, x_shape, cols, w, stride, padding = cache
    return gemm_columns_backward(dout, cols, w, x_shape, stride, padding, need_dx, col2im)
