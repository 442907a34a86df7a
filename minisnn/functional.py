"""Array kernels shared by the layers: im2col convolution and its gradients.

Convolution is lowered to one BLAS GEMM on an im2col matrix built with a
strided view (no Python loop over pixels). The column layout is
(C_in*kH*kW, N*H_out*W_out) so that the weight matrix (C_out, C_in*kH*kW)
multiplies it directly.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


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


def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> columns (C*kh*kw, N*Ho*Wo), rows ordered (c, i, j)."""
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    xp = pad_nchw(x, padding)
    sn, sc, sh, sw = xp.strides
    view = as_strided(xp, shape=(c, kh, kw, n, ho, wo),
                      strides=(sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)
    return np.ascontiguousarray(view).reshape(c * kh * kw, n * ho * wo), (ho, wo)


def col2im(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of :func:`im2col`: scatter-add columns back to (N, C, H, W)."""
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += \
                cols[:, i, j].transpose(1, 0, 2, 3)
    if padding:
        return xp[:, :, padding:padding + h, padding:padding + w]
    return xp


def conv2d_forward(x, w, stride=1, padding=0):
    """Cross-correlation of x (N, C_in, H, W) with w (C_out, C_in, kh, kw).

    Returns the output (N, C_out, Ho, Wo) and the cache for the backward.
    """
    n = x.shape[0]
    c_out, c_in, kh, kw = w.shape
    if x.shape[1] != c_in:
        raise ValueError(f"conv input has {x.shape[1]} channels, weight expects {c_in}")
    cols, (ho, wo) = im2col(x, kh, kw, stride, padding)
    out = w.reshape(c_out, -1) @ cols
    out = out.reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out), (x.shape, cols, w, stride, padding)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients (dx, dw) of :func:`conv2d_forward`; dx is None if not needed."""
    x_shape, cols, w, stride, padding = cache
    c_out, c_in, kh, kw = w.shape
    dout2 = dout.transpose(1, 0, 2, 3).reshape(c_out, -1)
    dw = (dout2 @ cols.T).reshape(w.shape)
    dx = None
    if need_dx:
        dcols = w.reshape(c_out, -1).T @ dout2
        dx = col2im(dcols, x_shape, kh, kw, stride, padding)
    return dx, dw
