"""The numba conv kernels against the readable reference conv."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import fastconv, nn
from minisnn import functional as F


def _loops(x, w, stride, padding):
    """The definition, one output at a time."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((n, c_out, ho, wo))
    for b in range(n):
        for o in range(c_out):
            for y in range(ho):
                for z in range(wo):
                    out[b, o, y, z] = np.sum(
                        xp[b, :, y * stride:y * stride + kh, z * stride:z * stride + kw] * w[o])
    return out


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4), h=st.integers(1, 9),
       w=st.integers(1, 9), k=st.sampled_from([1, 2, 3]), stride=st.integers(1, 3),
       padding=st.integers(0, 2), seed=st.integers(0, 2**31))
def test_reference_conv_is_the_definition_and_gemm_its_bits(n, c_in, c_out, h, w, k, stride,
                                                            padding, seed):
    """The reference equals the loops; the fast GEMM path (numba im2col/col2im)
    gives the reference's very bits, gradients included."""
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w))
    wt = rng.standard_normal((c_out, c_in, k, k))
    out, cache = F.conv2d_forward_reference(x, wt, stride, padding)
    np.testing.assert_allclose(out, _loops(x, wt, stride, padding), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, dw = F.conv2d_backward_reference(dout, cache)
    fast, fcache = fastconv.conv2d_forward(x, wt, stride, padding, method="gemm")
    fdx, fdw = fastconv.conv2d_backward(dout, fcache)
    np.testing.assert_array_equal(fast, out)
    np.testing.assert_array_equal(fdx, dx)
    np.testing.assert_array_equal(fdw, dw)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 13), c_in=st.integers(1, 5), c_out=st.integers(1, 5),
       h=st.integers(1, 21), w=st.integers(1, 23), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_direct_conv_equals_the_reference(n, c_in, c_out, h, w, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    dout = rng.standard_normal((n, c_out, h, w)).astype(dtype)
    out, cache = fastconv.conv2d_forward(x, wt, 1, 1, method="direct")
    assert cache[0] == "direct" and out.dtype == dtype
    dx, dw = fastconv.conv2d_backward(dout, cache)
    ref_out, ref_cache = F.conv2d_forward_reference(x, wt, 1, 1)
    ref_dx, ref_dw = F.conv2d_backward_reference(dout, ref_cache)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, ref_dw, rtol=tol, atol=tol * 10)


def test_direct_path_choice():
    assert fastconv.uses_direct((2, 16, 32, 32), (16, 16, 3, 3), 1, 1)
    assert not fastconv.uses_direct((2, 64, 8, 8), (64, 64, 3, 3), 1, 1)  # BLAS is faster there
    assert not fastconv.uses_direct((2, 16, 32, 32), (32, 16, 3, 3), 2, 1)
    assert not fastconv.uses_direct((2, 16, 32, 32), (16, 16, 1, 1), 1, 0)
    assert not fastconv.uses_direct((2, 16, 32, 32), (16, 16, 3, 3), 1, 0)
    with pytest.raises(ValueError, match="stride 1 and padding 1, got weight"):
        fastconv.conv2d_forward(np.zeros((1, 16, 8, 8), np.float32),
                                np.zeros((4, 16, 3, 3), np.float32), 2, 1, method="direct")
    with pytest.raises(ValueError, match="unknown conv method 'winograd'"):
        fastconv.conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), method="winograd")


def test_layers_run_the_reference_when_asked():
    rng = np.random.default_rng(0)
    fast = nn.Conv2d(3, 4, 3, 1, 1, rng=np.random.default_rng(1))
    ref = nn.Conv2d(3, 4, 3, 1, 1, rng=np.random.default_rng(1), method="reference")
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(ref.forward(x), fast.forward(x), rtol=1e-5, atol=1e-5)
    assert ref.cache[0] == "reference" and fast.cache[0] == "direct"
    dout = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(ref.backward(dout), fast.backward(dout), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref.weight.grad, fast.weight.grad, rtol=1e-4, atol=1e-3)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 11), w=st.integers(1, 11),
       kh=st.integers(1, 5), kw=st.integers(1, 5), stride=st.integers(1, 4),
       padding=st.integers(0, 3), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_im2col_and_col2im_give_the_reference_bits(n, c, h, w, kh, kw, stride, padding, seed,
                                                   dtype):
    """Byte for byte (signed zeros included), strides wider than the kernel too."""
    if h + 2 * padding < kh or w + 2 * padding < kw:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    cols, size = fastconv.im2col(x, kh, kw, stride, padding)
    ref_cols, ref_size = F.im2col_reference(x, kh, kw, stride, padding)
    assert size == ref_size and cols.tobytes() == ref_cols.tobytes()
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    dcols[:, ::3] = -0.0  # pixels whose every contribution is -0.0 sum to +0.0, as the scatter
    dx = fastconv.col2im(dcols, x.shape, kh, kw, stride, padding)
    ref_dx = F.col2im_reference(dcols, x.shape, kh, kw, stride, padding)
    assert dx.shape == x.shape
    assert dx.tobytes() == np.ascontiguousarray(ref_dx).tobytes()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c_in=st.integers(1, 4), c_out=st.integers(1, 5),
       h=st.integers(1, 18), w=st.integers(1, 18), stride=st.integers(1, 2),
       method=st.sampled_from(["auto", "direct", "gemm", "reference"]),
       seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_backward_with_dout_scale_is_the_backward_of_the_scaled_gradient(
        n, c_in, c_out, h, w, stride, method, seed, dtype):
    """dout_scale gives the bytes of scaling dout with channel_affine first."""
    if method == "direct":
        stride = 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    out, cache = fastconv.conv2d_forward(x, wt, stride, 1, method)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout.reshape(-1)[::3] = -0.0
    scale = rng.standard_normal(c_out).astype(dtype)
    scaled = np.empty_like(dout)
    F.channel_affine(dout, scale, np.zeros_like(scale), scaled)
    dx, dw = fastconv.conv2d_backward(scaled, cache)
    fdx, fdw = fastconv.conv2d_backward(dout, cache, dout_scale=scale)
    assert np.ascontiguousarray(fdx).tobytes() == np.ascontiguousarray(dx).tobytes()
    assert fdw.tobytes() == dw.tobytes()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
       scaled=st.booleans(), strided=st.booleans(), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_pad_flat_is_the_zero_padded_channel_major_planes(n, c, h, w, scaled, strided, seed,
                                                          dtype):
    """Byte for byte: np.pad of x (or of channel_affine(x, scale, 0)) moved to
    (C, N, H+2, W+2), for C-ordered and strided inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, 2 * w if strided else w)).astype(dtype)
    x.reshape(-1)[::4] = -0.0
    x = x[..., ::2] if strided else x
    scale = rng.standard_normal(c).astype(dtype) if scaled else None
    expect = x
    if scaled:
        expect = np.empty_like(x)
        F.channel_affine(np.ascontiguousarray(x), scale, np.zeros_like(scale), expect)
    expect = np.pad(expect.transpose(1, 0, 2, 3), ((0, 0), (0, 0), (1, 1), (1, 1)))
    buf, shape = fastconv.pad_flat(x, scale)
    assert shape == expect.shape and buf.tobytes() == np.ascontiguousarray(expect).tobytes()

