import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import bitpack
from minisnn.subbit import codes_to_kernels, kernels_to_codes

SETTINGS = settings(max_examples=40, deadline=None)


def signs(rng, shape):
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), c=st.integers(1, 130),
       h=st.integers(1, 6), w=st.integers(1, 6))
def test_activation_round_trip_and_bit_order(seed, n, c, h, w):
    a = signs(np.random.default_rng(seed), (n, c, h, w))
    packed = bitpack.pack_activations(a)
    assert packed.dtype == np.uint64 and packed.shape == (n, h, w, (c + 63) // 64)
    np.testing.assert_array_equal(bitpack.unpack_activations(packed, c), a)
    # documented order: channel ch -> word ch // 64, bit ch % 64; unused bits 0
    for ch in range(c):
        bit = (packed[..., ch // 64] >> np.uint64(ch % 64)) & np.uint64(1)
        np.testing.assert_array_equal(bit.astype(np.int8) * 2 - 1, a[:, ch])
    if c % 64:
        assert not (packed[..., -1] >> np.uint64(c % 64)).any()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 3))
def test_real_activations_pack_by_sign(seed, c):
    x = np.random.default_rng(seed).normal(size=(2, c, 3, 4)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1
    expected = np.where(x >= 0, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(bitpack.unpack_activations(bitpack.pack_activations(x), c), expected)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c_out=st.integers(1, 5), c_in=st.integers(1, 130))
def test_weight_round_trip_and_bit_order(seed, c_out, c_in):
    codes = np.random.default_rng(seed).integers(0, 512, (c_out, c_in)).astype(np.uint16)
    packed = bitpack.pack_weights(codes)
    assert packed.shape == (c_out, 3, 3, (c_in + 63) // 64)
    np.testing.assert_array_equal(bitpack.unpack_weights(packed, c_in), codes)
    kernels = codes_to_kernels(codes)  # (c_out, c_in, 3, 3)
    i = c_in - 1
    bit = (packed[..., i // 64] >> np.uint64(i % 64)) & np.uint64(1)
    np.testing.assert_array_equal(bit.astype(np.float32) * 2 - 1, kernels[:, i])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 4), h=st.integers(1, 9),
       w=st.integers(1, 9), stride=st.sampled_from([1, 2]))
def test_patch_codes_and_masks_match_padded_windows(seed, c, h, w, stride):
    a = signs(np.random.default_rng(seed), (2, c, h, w))
    codes = bitpack.patch_codes(a, stride)
    masks = bitpack.tap_masks(h, w, stride)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    assert codes.shape == (2, c, ho, wo) and masks.shape == (ho, wo)
    padded = np.zeros((2, c, h + 2, w + 2))
    padded[:, :, 1:-1, 1:-1] = a
    valid = np.zeros((h + 2, w + 2))
    valid[1:-1, 1:-1] = 1
    for y in range(ho):
        for x in range(wo):
            win = padded[:, :, y * stride:y * stride + 3, x * stride:x * stride + 3]
            mask = kernels_to_codes(valid[y * stride:y * stride + 3, x * stride:x * stride + 3] - 0.5)
            assert masks[y, x] == mask
            # kernels_to_codes maps 0 to +1, the padding must give bit 0 instead
            np.testing.assert_array_equal(codes[:, :, y, x], kernels_to_codes(win) & mask)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c_out=st.integers(1, 5), c_in=st.integers(1, 130))
def test_patch_weights_bit_order(seed, c_out, c_in):
    codes = np.random.default_rng(seed).integers(0, 512, (c_out, c_in)).astype(np.uint16)
    field, taps, channel_words, words = bitpack.patch_layout(c_in)
    assert field >= c_in and field * taps <= 32 * channel_words and taps * field <= max(32, field)
    assert words == -(-9 // taps) * channel_words
    packed = bitpack.pack_patch_weights(codes)
    assert packed.dtype == np.uint32 and packed.shape == (c_out, words)
    # documented order: tap t, channel c -> word (t // taps) * channel_words + c // 32,
    # bit (t % taps) * field + c % 32; every other bit 0
    rebuilt = np.zeros_like(packed)
    for t in range(9):
        for c in range(c_in):
            word = (t // taps) * channel_words + c // 32
            bit = np.uint32((t % taps) * field + c % 32)
            on = (packed[:, word] >> bit) & np.uint32(1)
            np.testing.assert_array_equal(on, (codes[:, c] >> t) & 1)
            rebuilt[:, word] |= on << bit
    np.testing.assert_array_equal(rebuilt, packed)


def test_patch_layout_fills_the_words():
    assert bitpack.patch_layout(16) == (16, 2, 1, 5)  # 144 of 160 bits
    assert bitpack.patch_layout(32) == (32, 1, 1, 9)
    assert bitpack.patch_layout(64) == (64, 1, 2, 18)
    assert bitpack.patch_layout(3) == (4, 8, 1, 2)
    with pytest.raises(ValueError, match="c_in must be positive"):
        bitpack.patch_layout(0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        bitpack.pack_activations(np.zeros((1, 1, 2, 2), np.int8))
    with pytest.raises(ValueError, match="dtype int32"):
        bitpack.pack_activations(np.ones((1, 1, 2, 2), np.int32))
    with pytest.raises(ValueError, match="4-D"):
        bitpack.patch_codes(np.ones((1, 2, 2), np.int8))
    with pytest.raises(ValueError, match="uint16"):
        bitpack.pack_weights(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="511"):
        bitpack.pack_weights(np.full((2, 2), 512, np.uint16))
    with pytest.raises(ValueError, match="2 words for 70"):
        bitpack.unpack_activations(np.zeros((1, 2, 2, 1), np.uint64), 70)
    with pytest.raises(ValueError, match="padding bits"):
        bitpack.unpack_activations(np.full((1, 2, 2, 1), 2**63, np.uint64), 3)
    with pytest.raises(ValueError, match="stride"):
        bitpack.tap_masks(4, 4, 3)
