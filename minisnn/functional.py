"""Array functions shared by the layers, in plain numpy where it reads best.

The convolution here is the readable reference (``conv2d_forward_reference``
and its backward: a plain im2col, one GEMM, as CS231n's ``layers.py``);
``minisnn.fastconv`` holds the numba kernels every layer runs by default
(``method="auto"``), tested equal to it. The batch-norm, activation and
ReActNet kernels below are numba loops over the same arithmetic as their
one-line numpy forms, written out so each takes one parallel pass.
"""

import numpy as np
from numba import njit, prange



def conv_output_size(size, kernel, stride, padding):
    out = (size + 2 * padding - kernel) // stride + 1
    if out <= 0:
        raise ValueError(f"input size {size} too small for kernel {kernel}, "
                         f"stride {stride}, padding {padding}")
    return out


def pad_nchw(x, padding):
    if padding == 0:
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    out[:, :, padding:padding + h, padding:padding + w] = x
    return out


def im2col_reference(x, kh, kw, stride, padding):
    """(N, C, H, W) -> columns (C*kh*kw, N*Ho*Wo), rows ordered (c, i, j): row
    (c, i, j) holds the input pixel that tap (i, j) of channel c meets at each
    output position."""
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    xp = pad_nchw(x, padding)
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo), (ho, wo)


def col2im_reference(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of :func:`im2col_reference`: add every column entry back onto the
    input pixel it was read from."""
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] += \
                cols[:, i, j].transpose(1, 0, 2, 3)
    return xp[:, :, padding:padding + h, padding:padding + w]


def check_conv_input(x, w):
    if x.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"conv input of shape {x.shape} has {x.shape[1] if x.ndim > 1 else '?'} "
                         f"channels, weight {w.shape} expects {w.shape[1]}")


def gemm_columns_forward(cols, w, n, ho, wo):
    """The conv from its im2col columns: W (C_out, C_in*kh*kw) @ cols, as NCHW."""
    c_out = w.shape[0]
    out = (w.reshape(c_out, -1) @ cols).reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out)


def gemm_columns_backward(dout, cols, w, x_shape, stride, padding, need_dx, col2im):
    """Gradients (dx, dw) of :func:`gemm_columns_forward`: dw = dout @ cols^T and
    dx = col2im(W^T @ dout) (None unless ``need_dx``)."""
    c_out, c_in, kh, kw = w.shape
    dout2 = dout.transpose(1, 0, 2, 3).reshape(c_out, -1)
    dw = (dout2 @ cols.T).reshape(w.shape)
    dx = None
    if need_dx:
        dx = col2im(w.reshape(c_out, -1).T @ dout2, x_shape, kh, kw, stride, padding)
    return dx, dw


def conv2d_forward_reference(x, w, stride=1, padding=0):
    """Cross-correlation of x (N, C_in, H, W) with w (C_out, C_in, kh, kw) as
    one matrix product: out = W (C_out, C_in*kh*kw) @ im2col(x). Returns the
    output (N, C_out, Ho, Wo) and the cache for the backward."""
    check_conv_input(x, w)
    cols, (ho, wo) = im2col_reference(x, w.shape[2], w.shape[3], stride, padding)
    return (gemm_columns_forward(cols, w, x.shape[0], ho, wo),
            ("reference", x.shape, cols, w, stride, padding))


def conv2d_backward_reference(dout, cache, need_dx=True):
    """Gradients (dx, dw) of :func:`conv2d_forward_reference`; dx is None if not needed."""
    _, x_shape, cols, w, stride, padding = cache
    return gemm_columns_backward(dout, cols, w, x_shape, stride, padding, need_dx,
                                 col2im_reference)


# fastmath 'reassoc' only: lets LLVM vectorize the float64 sums (a strict
# left-to-right sum is one dependent add at a time, 2.5x slower at 16 channels)
@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def batch_stats(x):
    """Per-channel mean and biased variance of (N, C, H, W), two-pass in float64."""
    n_img, c_in, h, w = x.shape
    m = n_img * h * w
    mean = np.empty(c_in)
    var = np.empty(c_in)
    for c in prange(c_in):
        s = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    s += x[n, c, y, z]
        mu = s / m
        q = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    d = x[n, c, y, z] - mu
                    q += d * d
        mean[c] = mu
        var[c] = q / m
    return mean, var


# No fastmath: fastmath lets LLVM fuse the multiply-add into an FMA where the
# CPU has one, so eval-mode results (and the integer engine's bit-exactness
# with them, popcount's fused block epilogues) would depend on the machine.
@njit(parallel=True, cache=True)
def channel_affine(x, scale, shift, out):
    """out[:, c] = x[:, c] * scale[c] + shift[c], rounded after each operation."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        a = scale[c]
        b = shift[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = x[n, c, y, z] * a + b


# nsz only, as relu's max: no contraction into an FMA, no reassociation, so
# each of the fused operations rounds as it does in its own pass
@njit(parallel=True, fastmath={"nnan", "ninf", "nsz"}, cache=True)
def channel_affine_relu(x, scale, shift, out):
    """out = max(x[:, c] * scale[c] + shift[c], 0): channel_affine, then relu, in one pass."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        a = scale[c]
        b = shift[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = max(x[n, c, y, z] * a + b, 0)


@njit(parallel=True, fastmath={"nnan", "ninf", "nsz"}, cache=True)
def channel_affine_add_relu(x, scale, shift, residual, out):
    """out = max((x[:, c] * scale[c] + shift[c]) + residual, 0): channel_affine,
    the residual add and relu in one pass."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        a = scale[c]
        b = shift[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = max((x[n, c, y, z] * a + b) + residual[n, c, y, z], 0)


@njit(parallel=True, fastmath={"nnan", "ninf", "nsz"}, cache=True)
def channel_affine_add_hardtanh(x, scale, shift, residual, pre, out):
    """pre = (x[:, c] * scale[c] + shift[c]) + residual and out = clip(pre, -1, 1):
    channel_affine, the residual add and hardtanh in one pass; pre is what
    hardtanh's backward needs."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        a = scale[c]
        b = shift[c]
        for y in range(h):
            for z in range(w):
                v = (x[n, c, y, z] * a + b) + residual[n, c, y, z]
                pre[n, c, y, z] = v
                out[n, c, y, z] = min(max(v, -1), 1)


@njit(parallel=True, cache=True)
def add(a, b, out):
    """out = a + b for (N, C, H, W) arrays of any strides, on all cores (numpy's
    add runs on one)."""
    n_img, c_in, h, w = a.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = a[n, c, y, z] + b[n, c, y, z]


@njit(parallel=True, fastmath={"reassoc"}, cache=True)  # vectorized sums, as batch_stats
def bn_backward_sums(dout, x, mean, inv_std):
    """Per channel: sum(dout) and sum(dout * xhat), xhat recomputed from x."""
    n_img, c_in, h, w = x.shape
    dbeta = np.empty(c_in)
    dgamma = np.empty(c_in)
    for c in prange(c_in):
        s = 0.0
        sx = 0.0
        mu = mean[c]
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    g = dout[n, c, y, z]
                    s += g
                    sx += g * (x[n, c, y, z] - mu)
        dbeta[c] = s
        dgamma[c] = sx * inv_std[c]
    return dbeta, dgamma


@njit(parallel=True, fastmath=True, cache=True)
def bn_backward_dx(dout, x, mean, inv_std, gamma, dbeta, dgamma, out):
    """dx = gamma*inv_std * (dout - dbeta/m - xhat * dgamma/m)."""
    n_img, c_in, h, w = x.shape
    m = n_img * h * w
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        k = gamma[c] * inv_std[c]
        a = k * inv_std[c] * dgamma[c] / m  # coefficient of (x - mean)
        b = k * dbeta[c] / m
        mu = mean[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = k * dout[n, c, y, z] - b - a * (x[n, c, y, z] - mu)


@njit(parallel=True, fastmath=True, cache=True)
def _relu_flat(x, out):
    for i in prange(x.size):
        out[i] = max(x[i], 0)


def relu(x):
    """max(x, 0) on all cores (numpy's maximum runs on one)."""
    return _elementwise(_relu_flat, x)


@njit(parallel=True, fastmath=True, cache=True)
def _relu_backward_flat(dout, out, dx):
    for i in prange(dout.size):
        dx[i] = dout[i] if out[i] > 0 else 0


def relu_backward(dout, out):
    """Gradient of ReLU given its output: dout where out > 0, else 0."""
    dx = np.empty_like(dout)
    _relu_backward_flat(np.ascontiguousarray(dout).reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


# Elementwise kernels of the activations: one pass each instead of numpy's
# temporaries (masks, int64 sign arrays, casts) on every activation tensor.
@njit(parallel=True, fastmath=True, cache=True)
def _sign_flat(x, out):
    for i in prange(x.size):
        out[i] = 1 if x[i] >= 0 else -1


@njit(parallel=True, fastmath=True, cache=True)
def _clip_flat(x, out):
    for i in prange(x.size):
        out[i] = min(max(x[i], -1), 1)


@njit(parallel=True, fastmath=True, cache=True)
def _clip_grad_flat(dout, x, dx):
    for i in prange(x.size):
        dx[i] = dout[i] if abs(x[i]) <= 1 else 0


@njit(parallel=True, fastmath=True, cache=True)
def _approx_sign_grad_flat(dout, x, dx):
    for i in prange(x.size):
        dx[i] = dout[i] * max(2 - 2 * abs(x[i]), 0)


def _elementwise(kernel, *arrays):
    out = np.empty_like(arrays[0])
    kernel(*[np.ascontiguousarray(a).reshape(-1) for a in arrays], out.reshape(-1))
    return out


def sign(x):
    """+1 where x >= 0, else -1, in x's dtype."""
    return _elementwise(_sign_flat, x)


def hardtanh(x):
    return _elementwise(_clip_flat, x)


def clip_backward(dout, x):
    """dout where |x| <= 1, else 0: the gradient of clip(x, -1, 1) (and the clip STE)."""
    return _elementwise(_clip_grad_flat, dout, x)


def approx_sign_backward(dout, x):
    """dout * (2 - 2|x|)_+ : Bi-Real Net's ApproxSign gradient."""
    return _elementwise(_approx_sign_grad_flat, dout, x)


# -- ReActNet's per-channel shift and PReLU ----------------------------------
@njit(parallel=True, fastmath={"reassoc"}, cache=True)  # vectorized sums, as batch_stats
def channel_sums(x):
    """Per-channel sum of (N, C, H, W) in float64 (a bias's gradient)."""
    n_img, c_in, h, w = x.shape
    out = np.empty(c_in)
    for c in prange(c_in):
        s = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    s += x[n, c, y, z]
        out[c] = s
    return out


@njit(parallel=True, cache=True)
def prelu(x, slope, out):
    """out = x where x > 0, else slope[c] * x (PyTorch's PReLU, one slope per channel)."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        a = slope[c]
        for y in range(h):
            for z in range(w):
                v = x[n, c, y, z]
                out[n, c, y, z] = v if v > 0 else a * v


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def prelu_backward(dout, x, slope, dx):
    """dx = dout * (1 if x > 0 else slope[c]); returns dslope[c] = sum of dout * min(x, 0)."""
    n_img, c_in, h, w = x.shape
    dslope = np.empty(c_in)
    for c in prange(c_in):
        a = slope[c]
        s = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    v = x[n, c, y, z]
                    g = dout[n, c, y, z]
                    if v > 0:
                        dx[n, c, y, z] = g
                    else:
                        dx[n, c, y, z] = a * g
                        s += g * v
        dslope[c] = s
    return dslope


@njit(cache=True, inline="always")
def _rprelu(v, b, a, d):
    """One element of :func:`rprelu`."""
    u = v * np.float32(1) + b  # as channel_affine(x, 1, b): -0.0 + 0.0
    return (u if u > 0 else a * u) * np.float32(1) + d


@njit(parallel=True, cache=True)
def rprelu(x, shift_in, slope, shift_out, out):
    """ReActNet's RPReLU in one pass: prelu(x + shift_in[c], slope[c]) + shift_out[c],
    the same float32 operations as the three layers one after another."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        b, a, d = shift_in[c], slope[c], shift_out[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = _rprelu(x[n, c, y, z], b, a, d)


@njit(parallel=True, cache=True)
def channel_affine_add_rprelu(x, scale, shift, residual, shift_in, slope, shift_out, pre, out):
    """pre = (x[:, c] * scale[c] + shift[c]) + residual and out = rprelu(pre, ...):
    channel_affine, the residual add and :func:`rprelu` in one pass; pre is
    what rprelu's backward needs."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        sa, sb = scale[c], shift[c]
        b, a, d = shift_in[c], slope[c], shift_out[c]
        for y in range(h):
            for z in range(w):
                v = (x[n, c, y, z] * sa + sb) + residual[n, c, y, z]
                pre[n, c, y, z] = v
                out[n, c, y, z] = _rprelu(v, b, a, d)


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def rprelu_backward(dout, x, shift_in, slope, dx):
    """Gradients of :func:`rprelu` in one pass: fills dx and returns the
    per-channel sums (d shift_in, d slope, d shift_out) in float64."""
    n_img, c_in, h, w = x.shape
    d_in = np.empty(c_in)
    d_slope = np.empty(c_in)
    d_out = np.empty(c_in)
    for c in prange(c_in):
        b, a = shift_in[c], slope[c]
        s_in = 0.0
        s_slope = 0.0
        s_out = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    g = dout[n, c, y, z]
                    v = x[n, c, y, z] * np.float32(1) + b
                    s_out += g
                    if v > 0:
                        dx[n, c, y, z] = g
                        s_in += g
                    else:
                        dx[n, c, y, z] = a * g
                        s_in += a * g
                        s_slope += g * v
        d_in[c] = s_in
        d_slope[c] = s_slope
        d_out[c] = s_out
    return d_in, d_slope, d_out


@njit(parallel=True, cache=True)
def shifted_sign(x, shift, out):
    """out = sign(x + shift[c]) (+1 where x + shift >= 0), ReActNet's RSign in one pass."""
    n_img, c_in, h, w = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t % c_in
        b = shift[c]
        for y in range(h):
            for z in range(w):
                out[n, c, y, z] = 1 if x[n, c, y, z] * np.float32(1) + b >= 0 else -1


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def shifted_sign_backward(dout, x, shift, approx, dx):
    """Gradient of :func:`shifted_sign` through its surrogate at v = x + shift[c]
    (ApproxSign (2 - 2|v|)_+ if ``approx``, else the clip STE 1{|v| <= 1});
    fills dx and returns the shift's gradient, its per-channel sum, in float64."""
    n_img, c_in, h, w = x.shape
    dshift = np.empty(c_in)
    for c in prange(c_in):
        b = shift[c]
        s = 0.0
        for n in range(n_img):
            for y in range(h):
                for z in range(w):
                    v = x[n, c, y, z] * np.float32(1) + b
                    if approx:
                        g = dout[n, c, y, z] * max(2 - 2 * abs(v), 0)
                    else:
                        g = dout[n, c, y, z] if abs(v) <= 1 else 0
                    dx[n, c, y, z] = g
                    s += g
        dshift[c] = s
    return dshift
