import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import bitpack, popcount
from minisnn.functional import conv2d_forward_reference
from minisnn.subbit import codes_to_kernels

SETTINGS = settings(max_examples=30, deadline=None)

shapes = dict(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), c_in=st.integers(1, 130),
              c_out=st.integers(1, 9), h=st.integers(1, 9), w=st.integers(1, 9),
              stride=st.sampled_from([1, 2]), tau=st.integers(1, 9))


def reference(x, weights, stride):
    """Plain float64 im2col conv with zero padding: exact on small integers."""
    return conv2d_forward_reference(x.astype(np.float64), weights.astype(np.float64), stride, padding=1)[0]


def draw_layer(seed, n, c_in, c_out, h, w, tau):
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, c_in, h, w))
    codebook = rng.choice(512, 2**tau, replace=False).astype(np.uint16)
    idx = rng.integers(0, 2**tau, (c_out, c_in))
    return rng, a, codebook, idx


@SETTINGS
@given(**shapes)
def test_bnn_and_snn_kernels_equal_the_padded_reference(seed, n, c_in, c_out, h, w, stride, tau):
    _, a, codebook, idx = draw_layer(seed, n, c_in, c_out, h, w, tau)
    codes = codebook[idx]
    expected = reference(a, codes_to_kernels(codes), stride)
    assert np.array_equal(expected, np.rint(expected))
    expected = expected.astype(np.int32)

    bnn = popcount.bnn_conv3x3(a, codes, stride)
    assert bnn.dtype == np.int32
    np.testing.assert_array_equal(bnn, expected)

    snn = popcount.snn_conv3x3(a, codebook, idx, stride)
    assert snn.dtype == np.int32
    np.testing.assert_array_equal(snn, expected)

    # packed-level entry points, as an engine keeping activations packed calls them
    packed = popcount.bnn_conv3x3_packed(bitpack.pack_activations(a), bitpack.pack_weights(codes),
                                         c_in, stride)
    np.testing.assert_array_equal(packed, expected)
    from_codes = popcount.snn_conv3x3_codes(bitpack.patch_codes(a, stride),
                                            bitpack.tap_masks(h, w, stride), codebook, idx)
    np.testing.assert_array_equal(from_codes, expected)


@SETTINGS
@given(**shapes)
def test_real_activation_kernel_equals_the_padded_reference(seed, n, c_in, c_out, h, w, stride, tau):
    rng, _, codebook, idx = draw_layer(seed, n, c_in, c_out, h, w, tau)
    # small integers and power-of-two scales keep every float32 sum exact
    x = rng.integers(-4, 5, (n, c_in, h, w)).astype(np.float32)
    alpha = rng.choice([0.25, 0.5, 1.0, 2.0], c_out).astype(np.float32)
    weights = alpha[:, None, None, None] * codes_to_kernels(codebook[idx])
    out = popcount.snn_conv3x3_real(x, codebook, idx, alpha, stride)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, reference(x, weights, stride).astype(np.float32))
    np.testing.assert_array_equal(popcount.float_conv3x3(x, weights, stride), out)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 6))
def test_apply_thresholds(seed, c):
    rng = np.random.default_rng(seed)
    sums = rng.integers(-20, 21, (2, c, 3, 4)).astype(np.int32)
    thresh = rng.integers(-20, 21, c).astype(np.int32)
    flip = rng.random(c) < 0.5
    bits = popcount.apply_thresholds(sums, thresh, flip)
    assert bits.dtype == np.uint8
    for o in range(c):
        want = sums[:, o] <= thresh[o] if flip[o] else sums[:, o] >= thresh[o]
        np.testing.assert_array_equal(bits[:, o], want.astype(np.uint8))


def test_bad_inputs_raise_clear_errors():
    a = np.ones((1, 3, 4, 4), np.int8)
    codes = np.zeros((2, 3), np.uint16)
    codebook = np.arange(4, dtype=np.uint16)
    idx = np.zeros((2, 3), np.int64)
    cases = [
        (lambda: popcount.bnn_conv3x3(a.astype(np.int32), codes), "int8"),
        (lambda: popcount.bnn_conv3x3(np.zeros_like(a), codes), "only -1 and \\+1"),
        (lambda: popcount.bnn_conv3x3(a[0], codes), "4-D"),
        (lambda: popcount.bnn_conv3x3(a, codes.astype(np.int32)), "uint16"),
        (lambda: popcount.bnn_conv3x3(a, np.zeros((2, 4), np.uint16)), "4 input channels"),
        (lambda: popcount.bnn_conv3x3(a, codes, stride=3), "stride"),
        (lambda: popcount.snn_conv3x3(a, codebook, idx + 4), "idx must lie in \\[0, 4\\)"),
        (lambda: popcount.snn_conv3x3(a, codebook, idx - 1), "idx must lie"),
        (lambda: popcount.snn_conv3x3(a, codebook, idx[:, :2]), "idx must be"),
        (lambda: popcount.snn_conv3x3(a, np.array([1, 2, 2, 3], np.uint16), idx), "distinct"),
        (lambda: popcount.snn_conv3x3(a, np.arange(3, dtype=np.uint16), idx), "2\\*\\*tau"),
        (lambda: popcount.snn_conv3x3_real(a.astype(np.float64), codebook, idx, np.ones(2)), "float32"),
        (lambda: popcount.snn_conv3x3_real(a.astype(np.float32), codebook, idx, np.ones(3)), "alpha"),
        (lambda: popcount.float_conv3x3(a.astype(np.float32), np.ones((2, 3, 5, 5), np.float32)), "w must"),
        (lambda: popcount.bnn_conv3x3_packed(np.zeros((1, 4, 4, 2), np.uint64),
                                             np.zeros((2, 3, 3, 1), np.uint64), 3), "1 words"),
        (lambda: popcount.snn_conv3x3_codes(np.zeros((1, 3, 4, 4), np.uint16),
                                            np.zeros((3, 3), np.uint16), codebook, idx), "tap masks"),
        (lambda: popcount.apply_thresholds(np.zeros((1, 2, 1, 1), np.int32),
                                           np.zeros(3, np.int32), np.zeros(2, bool)), "thresh"),
        (lambda: popcount.apply_thresholds(np.zeros((1, 2, 1, 1), np.int32),
                                           np.zeros(2, np.int32), np.zeros(2, np.int8)), "flip"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_snn_kernel_switches_to_int32_counts_for_wide_layers():
    # all-+1 input, all--1 kernels: 9 * 7300 mismatches at the centre overflow uint16
    c_in = 7300
    a = np.ones((1, c_in, 3, 3), np.int8)
    codebook = np.array([0, 511], np.uint16)
    idx = np.zeros((1, c_in), np.int64)
    out = popcount.snn_conv3x3(a, codebook, idx)
    expected = reference(a, codes_to_kernels(codebook[idx]), 1).astype(np.int32)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 1, 1] == -9 * c_in
