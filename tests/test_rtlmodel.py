"""The RTL engines' Python model: golden sums, memory images, cycle model."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn import popcount, rtlmodel
from minisnn.export import random_layer
from minisnn.rtlmodel import EngineConfig


def _layer(seed, c_in, c_out, tau, h, w, stride, thresholds=True):
    return random_layer(np.random.default_rng(seed), c_in, c_out, tau, h, w, stride, thresholds=thresholds)


shapes = dict(seed=st.integers(0, 2**32 - 1), c_in=st.integers(1, 7), c_out=st.integers(1, 7),
              tau=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6), stride=st.sampled_from([1, 2]))


@settings(max_examples=40, deadline=None)
@given(**shapes, act_bits=st.sampled_from(rtlmodel.ACT_BITS))
def test_golden_sums_equal_a_plain_loop(seed, c_in, c_out, tau, h, w, stride, act_bits):
    layer = _layer(seed, c_in, c_out, tau, h, w, stride)
    codes = rtlmodel.random_codes(np.random.default_rng(seed + 1), (c_in, h, w), act_bits)
    m = 2**act_bits - 1
    expected = np.zeros((c_out, layer.out_height, layer.out_width), np.int64)
    for o in range(c_out):
        for i in range(c_in):
            code = int(layer.kernel_codes[o, i])
            for y in range(layer.out_height):
                for x in range(layer.out_width):
                    for j in range(9):
                        iy, ix = y * stride + j // 3 - 1, x * stride + j % 3 - 1
                        if 0 <= iy < h and 0 <= ix < w:
                            weight = 1 if code >> j & 1 else -1
                            expected[o, y, x] += weight * (2 * int(codes[i, iy, ix]) - m)
    np.testing.assert_array_equal(rtlmodel.golden_sums(layer, codes, act_bits), expected)


@settings(max_examples=25, deadline=None)
@given(**shapes)
def test_one_bit_golden_equals_the_popcount_engine(seed, c_in, c_out, tau, h, w, stride):
    layer = _layer(seed, c_in, c_out, tau, h, w, stride)
    signs = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), size=(1, c_in, h, w))
    sums = rtlmodel.golden_sums(layer, rtlmodel.codes_from_signs(signs[0]), 1)
    np.testing.assert_array_equal(sums, popcount.snn_conv3x3(signs, layer.codebook, layer.idx, stride)[0])
    np.testing.assert_array_equal(sums, popcount.bnn_conv3x3(signs, layer.kernel_codes, stride)[0])
    flip = np.asarray(layer.flip, bool)
    np.testing.assert_array_equal(rtlmodel.golden_bits(layer, sums),
                                  popcount.apply_thresholds(sums[None], layer.threshold, flip)[0])


def _unpack(word, width, n):
    return [(word >> (i * width)) & ((1 << width) - 1) for i in range(n)]


@settings(max_examples=30, deadline=None)
@given(**shapes, engine=st.sampled_from(rtlmodel.ENGINES), lanes=st.integers(1, 5), mult=st.integers(1, 3))
def test_weight_words_hold_every_kernel_once(seed, c_in, c_out, tau, h, w, stride, engine, lanes, mult):
    layer = _layer(seed, c_in, c_out, tau, h, w, stride)
    dot9 = min(2**tau, 2 ** (mult - 1)) if engine == "snn" else lanes * mult
    cfg = EngineConfig(engine, lanes, dot9)
    geo = rtlmodel.geometry(layer, cfg)
    words, width = rtlmodel.weight_words(layer, cfg)
    field = 9 if engine == "bnn" else tau
    assert len(words) == geo.ng * geo.groups and width == lanes * cfg.k * field
    table = layer.kernel_codes if engine == "bnn" else layer.idx
    for g in range(geo.ng):
        for j in range(geo.groups):
            fields = _unpack(words[g * geo.groups + j], field, lanes * cfg.k)
            for lane in range(lanes):
                for k in range(cfg.k):
                    o, i = j * lanes + lane, g * cfg.k + k
                    assert fields[lane * cfg.k + k] == (table[o, i] if o < c_out and i < c_in else 0)


@settings(max_examples=30, deadline=None)
@given(**shapes, lanes=st.integers(1, 5), act_bits=st.sampled_from(rtlmodel.ACT_BITS))
def test_threshold_words_and_sum_beats_round_trip(seed, c_in, c_out, tau, h, w, stride, lanes, act_bits):
    rng = np.random.default_rng(seed)
    layer = rtlmodel.with_random_thresholds(_layer(seed, c_in, c_out, tau, h, w, stride), rng, act_bits)
    cfg = EngineConfig("snn", lanes, 1, act_bits)
    geo = rtlmodel.geometry(layer, cfg)
    bound = 9 * (2**act_bits - 1) * c_in
    fields = [f for word in rtlmodel.threshold_words(layer, cfg) for f in _unpack(word, geo.sum_w + 1, lanes)]
    for o in range(c_out):
        thr = fields[o] & ((1 << geo.sum_w) - 1)
        thr -= (thr >> (geo.sum_w - 1)) << geo.sum_w
        assert fields[o] >> geo.sum_w == layer.flip[o]
        # a flipped channel's word holds ~thr, so that ~sum >= ~thr means sum <= thr
        assert (~thr if layer.flip[o] else thr) == np.clip(layer.threshold[o], -bound - 1, bound + 1)
    # sums beats as the engine packs them parse back to the same sums and bits
    sums = rng.integers(-bound, bound + 1, size=(c_out, geo.ho, geo.wo))
    bits = rng.integers(0, 2, size=sums.shape)
    beats = []
    for p in range(geo.ho * geo.wo):
        for j in range(geo.groups):
            word = 0
            for lane in range(lanes):
                o = j * lanes + lane
                if o < c_out:
                    s, b = sums.reshape(c_out, -1)[o, p], bits.reshape(c_out, -1)[o, p]
                    word |= (int(s) & ((1 << geo.sum_w) - 1) | int(b) << geo.sum_w) << (lane * (geo.sum_w + 1))
            beats.append(word)
    got_sums, got_bits = rtlmodel.parse_beats(layer, cfg, beats)
    np.testing.assert_array_equal(got_sums, sums)
    np.testing.assert_array_equal(got_bits, bits)
    with pytest.raises(ValueError, match="expected .* output beats"):
        rtlmodel.parse_beats(layer, cfg, beats[1:])


def test_stream_words_pack_channels_lowest_first():
    codes = np.array([[[1, 2]], [[3, 0]]], np.uint8)  # (C=2, H=1, W=2), A = 2
    assert rtlmodel.stream_words(codes, 2) == [1 | 3 << 2, 2 | 0 << 2]


def test_check_config_names_the_problem():
    layer = _layer(0, 4, 4, 3, 4, 4, 1)
    bnn = dataclasses.replace(layer, kind="bnn", tau=None, codebook=None, idx=None)
    for cfg, bad, message in [
        (EngineConfig("bnn", 3, 4), layer, "dot9 a multiple of lanes"),
        (EngineConfig("snn", 2, 3), layer, "power of two <= 2\\^tau = 8"),
        (EngineConfig("snn", 2, 16), layer, "power of two"),
        (EngineConfig("snn", 2, 2), bnn, "needs a sub-bit layer"),
        (EngineConfig("xnn", 2, 2), layer, "engine must be one of"),
        (EngineConfig("snn", 2, 2, act_bits=9), layer, "act_bits must lie in 1..8"),
        (EngineConfig("snn", 2, 2, table="lut"), layer, "table must be one of"),
    ]:
        with pytest.raises(ValueError, match=f"layer {bad.name}: .*{message}"):
            rtlmodel.check_config(bad, cfg)
    with pytest.raises(ValueError, match="activations must be integer codes in 0..3"):
        rtlmodel.golden_sums(layer, np.full((4, 4, 4), 4), 2)
    with pytest.raises(ValueError, match=r"activations must have shape \(4, 4, 4\)"):
        rtlmodel.golden_sums(layer, np.zeros((4, 4, 3), np.uint8), 1)


def test_cycle_model_back_to_back_images_cost_their_stages():
    # 64 channels at 8x8, stride 1: the next image's first rows arrive while the
    # last output row computes, so a second image adds exactly its stages
    items = 8 * 8 * 64
    assert (rtlmodel.cycle_model(64, 64, 8, 8, 1, EngineConfig("bnn", 8, 8), images=2)
            - rtlmodel.cycle_model(64, 64, 8, 8, 1, EngineConfig("bnn", 8, 8))) == items * 8
    for cfg in (EngineConfig("snn", 16, 8, table="reg"), EngineConfig("snn", 32, 8, table="ram")):
        groups = 64 // cfg.lanes
        two, one = (rtlmodel.cycle_model(64, 64, 8, 8, 1, cfg, tau=5, images=n) for n in (2, 1))
        # Dot9-only first stage (4 steps), items - 1 stages of max(4, groups), lanes-only drain
        assert two - one == 4 + (items - 1) * max(4, groups) + groups


def test_sub_bit_cycles_at_equal_dot9_units_follow_max_of_dots_and_lanes():
    # ResNet-18's 256 -> 256 layer at 14x14, tau = 5, D = 8: the BNN needs C_out / D = 32
    # cycles per input channel, the sub-bit engine max(2^5 / D, C_out / L); both first
    # wait for two input rows of 14 pixels of 256 cycles
    fill = 2 * 14 * 256
    bnn = rtlmodel.cycle_model(256, 256, 14, 14, 1, EngineConfig("bnn", 8, 8), tau=5) - fill
    for lanes, stage in [(8, 32), (16, 16), (32, 8), (64, 4), (128, 4)]:
        snn = rtlmodel.cycle_model(256, 256, 14, 14, 1, EngineConfig("snn", lanes, 8), tau=5) - fill
        assert bnn / snn == pytest.approx(32 / stage, rel=1e-3)


def test_stride_two_layers_wait_for_their_input():
    # stride 2 reads four input pixels (4 * C_in cycles) per output position: with
    # C_in = 4 channels and 1-cycle stages the input stream sets the pace
    fast = EngineConfig("bnn", 8, 8)
    cycles = rtlmodel.cycle_model(4, 8, 16, 16, 2, fast)
    assert cycles >= 16 * 16 * 4 > 8 * 8 * 4 * 1
