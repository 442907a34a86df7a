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
    conv = popcount.pack_conv(codes, h, w, stride)
    np.testing.assert_array_equal(popcount.bnn_conv3x3_packed(bitpack.pack_activations(a), conv),
                                  expected)
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
                                             popcount.pack_conv(codes, 4, 4)), "1\\) for c_in=3"),
        (lambda: popcount.conv3x3_sums(a.astype(np.float32), popcount.pack_conv(codes, 4, 5)),
         "x must be \\(N, 3, 4, 5\\)"),
        (lambda: popcount.conv3x3_sums(a.astype(np.float32), popcount.pack_conv(codes, 4, 4),
                                       np.zeros(2, np.float32)), "shift must be float32 \\(3,\\)"),
        (lambda: popcount.pack_conv(codes, 0, 4), "input size"),
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


# ------------------------------------------------------------ the fused engine

def signs_of(x, shift):
    """sign(x + shift) as functional.shifted_sign: x * 1 + shift >= 0 in float32."""
    v = x * np.float32(1) + shift[None, :, None, None]
    return np.where(v >= 0, 1, -1).astype(np.int8)


def draw_images(rng, n, c, h, w):
    """Real activations with exact zeros, negative zeros and values on +-1."""
    x = (rng.standard_normal((n, c, h, w)) * rng.uniform(0.3, 2)).astype(np.float32)
    pick = rng.random(x.shape)
    x[pick < 0.05] = 0.0
    x[(pick >= 0.05) & (pick < 0.1)] = -0.0
    x[(pick >= 0.1) & (pick < 0.15)] = rng.choice([-1.0, 1.0])
    return x


def draw_affine(rng, rows, c):
    """Per-channel float32 rows: alpha >= 0, the rest of either sign."""
    affine = rng.normal(0, 1, (rows, c)).astype(np.float32)
    affine[0] = np.abs(affine[0])
    return affine


def int_sums(a, codes, stride):
    return reference(a, codes_to_kernels(codes), stride).astype(np.int32)


def hardtanh_reference(x, codes1, affine1, codes2, affine2, stride, pad_lo):
    """The Bi-Real block from plain numpy float32 steps, one operation at a time."""
    n, c_in = x.shape[:2]
    c_out = codes1.shape[0]

    def conv_bn(a, codes, affine, s):
        v = int_sums(a, codes, s).astype(np.float32) * affine[0][:, None, None]
        return v * affine[1][:, None, None] + affine[2][:, None, None]

    zero = np.zeros(c_in, np.float32)
    v = conv_bn(signs_of(x, zero), codes1, affine1, stride)
    shortcut = np.zeros_like(v)
    shortcut[:, pad_lo:pad_lo + c_in] = x[:, :c_out - pad_lo, ::stride, ::stride]
    h = np.minimum(np.maximum(v + shortcut, np.float32(-1)), np.float32(1))
    v = conv_bn(signs_of(h, np.zeros(c_out, np.float32)), codes2, affine2, 1) + h
    return np.minimum(np.maximum(v, np.float32(-1)), np.float32(1))


def rprelu_reference(x, shift, codes, affine, res, stride):
    """ReActNet's block from plain numpy float32 steps, one operation at a time."""
    col = [a[:, None, None] for a in affine]
    one = np.float32(1)
    v = int_sums(signs_of(x, shift), codes, stride).astype(np.float32) * col[0] + np.float32(0)
    v = (v * col[1] + col[2]) + res
    v = v * one + col[3]
    return np.where(v > 0, v, col[4] * v) * one + col[5]


engine_shapes = dict(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3),
                     c_in=st.one_of(st.integers(1, 40), st.integers(60, 140)),
                     c_out=st.integers(1, 40), h=st.integers(1, 11), w=st.integers(1, 11),
                     stride=st.sampled_from([1, 2]))


@SETTINGS
@given(**engine_shapes)
def test_fused_sums_equal_the_reference_on_shifted_signs(seed, n, c_in, c_out, h, w, stride):
    rng = np.random.default_rng(seed)
    x = draw_images(rng, n, c_in, h, w)
    shift = rng.normal(0, 0.5, c_in).astype(np.float32)
    shift[::3] = 0
    x[0, :, 0, 0] = -shift  # x + shift exactly 0: sign +1
    codes = rng.integers(0, 512, (c_out, c_in)).astype(np.uint16)
    conv = popcount.pack_conv(codes, h, w, stride)
    out = popcount.conv3x3_sums(x, conv, shift)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, int_sums(signs_of(x, shift), codes, stride))
    np.testing.assert_array_equal(popcount.conv3x3_sums(x, conv),
                                  int_sums(signs_of(x, np.zeros(c_in, np.float32)), codes, stride))


@SETTINGS
@given(**engine_shapes, pad=st.integers(0, 8))
def test_fused_hardtanh_block_equals_the_float_steps(seed, n, c_in, c_out, h, w, stride, pad):
    rng = np.random.default_rng(seed)
    x = draw_images(rng, n, c_in, h, w)
    pad_lo = min(pad, c_out - 1)
    codes1 = rng.integers(0, 512, (c_out, c_in)).astype(np.uint16)
    codes2 = rng.integers(0, 512, (c_out, c_out)).astype(np.uint16)
    affine1, affine2 = draw_affine(rng, 3, c_out), draw_affine(rng, 3, c_out)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = popcount.hardtanh_block(x, popcount.pack_conv(codes1, h, w, stride), affine1,
                                  popcount.pack_conv(codes2, ho, wo), affine2, pad_lo)
    assert out.dtype == np.float32 and out.shape == (n, c_out, ho, wo)
    expected = hardtanh_reference(x, codes1, affine1, codes2, affine2, stride, pad_lo)
    np.testing.assert_array_equal(out.view(np.int32), expected.view(np.int32))  # -0.0 too


@SETTINGS
@given(**engine_shapes)
def test_fused_rprelu_block_equals_the_float_steps(seed, n, c_in, c_out, h, w, stride):
    rng = np.random.default_rng(seed)
    x = draw_images(rng, n, c_in, h, w)
    shift = rng.normal(0, 0.5, c_in).astype(np.float32)
    codes = rng.integers(0, 512, (c_out, c_in)).astype(np.uint16)
    affine = draw_affine(rng, 6, c_out)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    res = draw_images(rng, n, c_out, ho, wo)
    out = popcount.rprelu_block(x, shift, popcount.pack_conv(codes, h, w, stride), affine, res)
    assert out.dtype == np.float32 and out.shape == (n, c_out, ho, wo)
    expected = rprelu_reference(x, shift, codes, affine, res, stride)
    np.testing.assert_array_equal(out.view(np.int32), expected.view(np.int32))


def test_sub_bit_layers_run_on_their_decoded_kernels():
    """The engine computes a sub-bit layer's sums from codebook[idx]: equal to the Dot9 table."""
    rng = np.random.default_rng(5)
    a = rng.choice(np.array([-1, 1], np.int8), (2, 20, 7, 9))
    codebook = rng.choice(512, 32, replace=False).astype(np.uint16)
    idx = rng.integers(0, 32, (12, 20))
    for stride in (1, 2):
        conv = popcount.pack_conv(codebook[idx], 7, 9, stride)
        np.testing.assert_array_equal(popcount.conv3x3_sums(a.astype(np.float32), conv),
                                      popcount.snn_conv3x3(a, codebook, idx, stride))


def test_fused_blocks_refuse_mismatched_parts():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 512, (8, 4)).astype(np.uint16)
    conv1 = popcount.pack_conv(codes, 6, 6, 2)
    conv2 = popcount.pack_conv(rng.integers(0, 512, (8, 8)).astype(np.uint16), 3, 3)
    affine = np.ones((3, 8), np.float32)
    x = np.ones((1, 4, 6, 6), np.float32)
    cases = [
        (lambda: popcount.hardtanh_block(x, conv1, affine, conv1, affine), "conv2 must be"),
        (lambda: popcount.hardtanh_block(x, conv1, affine[:2], conv2, affine), "affine1 must be"),
        (lambda: popcount.hardtanh_block(x, conv1, affine, conv2, affine, pad_lo=8), "pad_lo"),
        (lambda: popcount.hardtanh_block(x[:, :3], conv1, affine, conv2, affine), "x must be"),
        (lambda: popcount.rprelu_block(x, np.zeros(4, np.float32), conv1, affine,
                                       np.ones((1, 8, 3, 3), np.float32)), "affine must be"),
        (lambda: popcount.rprelu_block(x, np.zeros(4, np.float32), conv1,
                                       np.ones((6, 8), np.float32), np.ones((1, 8, 3, 4), np.float32)),
         "res must be"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
