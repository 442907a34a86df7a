import numpy as np
from hypothesis import given, settings, strategies as st

from minisnn import functional as F


def _gemm_reference(x, w, dout, stride, padding):
    """The im2col + GEMM path, forced (it is itself checked against loops)."""
    cols, (ho, wo) = F.im2col(x, 3, 3, stride, padding)
    c_out = w.shape[0]
    out = (w.reshape(c_out, -1) @ cols).reshape(c_out, x.shape[0], ho, wo).transpose(1, 0, 2, 3)
    cache = ("gemm", x.shape, cols, w, stride, padding)
    dx, dw = F.conv2d_backward(dout, cache)
    return out, dx, dw


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 5), c_out=st.integers(1, 5),
       h=st.integers(16, 21), w=st.integers(16, 23), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_direct_conv_equals_gemm_path(n, c_in, c_out, h, w, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    dout = rng.standard_normal((n, c_out, h, w)).astype(dtype)
    assert F.uses_direct(x.shape, wt.shape, 1, 1)
    out, cache = F.conv2d_forward(x, wt, 1, 1)
    assert cache[0] == "direct" and out.dtype == dtype
    dx, dw = F.conv2d_backward(dout, cache)
    ref_out, ref_dx, ref_dw = _gemm_reference(x, wt, dout, 1, 1)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, ref_dw, rtol=tol, atol=tol * 10)


def test_direct_path_only_where_it_pays():
    assert F.uses_direct((2, 16, 32, 32), (16, 16, 3, 3), 1, 1)
    assert not F.uses_direct((2, 64, 8, 8), (64, 64, 3, 3), 1, 1)
    assert not F.uses_direct((2, 16, 32, 32), (32, 16, 3, 3), 2, 1)
    assert not F.uses_direct((2, 16, 32, 32), (16, 16, 1, 1), 1, 0)
    assert not F.uses_direct((2, 16, 64, 4), (16, 16, 3, 3), 1, 1)
