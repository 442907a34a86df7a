import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import functional as F


def _gemm_reference(x, w, dout, stride, padding):
    """The im2col + GEMM path (itself checked against loops in test_nn)."""
    out, cache = F.conv2d_forward(x, w, stride, padding, method="gemm")
    assert cache[0] == "gemm"
    dx, dw = F.conv2d_backward(dout, cache)
    return out, dx, dw


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 13), c_in=st.integers(1, 5), c_out=st.integers(1, 5),
       h=st.integers(1, 21), w=st.integers(1, 23), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_direct_conv_equals_gemm_path(n, c_in, c_out, h, w, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    dout = rng.standard_normal((n, c_out, h, w)).astype(dtype)
    out, cache = F.conv2d_forward(x, wt, 1, 1, method="direct")
    assert cache[0] == "direct" and out.dtype == dtype
    dx, dw = F.conv2d_backward(dout, cache)
    ref_out, ref_dx, ref_dw = _gemm_reference(x, wt, dout, 1, 1)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, ref_dw, rtol=tol, atol=tol * 10)


def test_direct_path_choice():
    assert F.uses_direct((2, 16, 32, 32), (16, 16, 3, 3), 1, 1)
    assert not F.uses_direct((2, 64, 8, 8), (64, 64, 3, 3), 1, 1)  # BLAS is faster there
    assert not F.uses_direct((2, 16, 32, 32), (32, 16, 3, 3), 2, 1)
    assert not F.uses_direct((2, 16, 32, 32), (16, 16, 1, 1), 1, 0)
    assert not F.uses_direct((2, 16, 32, 32), (16, 16, 3, 3), 1, 0)
    with pytest.raises(ValueError, match="stride 1 and padding 1, got weight"):
        F.conv2d_forward(np.zeros((1, 16, 8, 8), np.float32), np.zeros((4, 16, 3, 3), np.float32),
                         2, 1, method="direct")
