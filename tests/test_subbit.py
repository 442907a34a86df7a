from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradcheck import assert_close, numerical_grad
from minisnn import functional as F
from minisnn import models, subbit
from minisnn.nn import softmax_cross_entropy
from minisnn.quant import BinaryConv2d, weight_scale
from minisnn.subbit import (ALL_KERNELS, NEAR_TIE, Codebook, SubBitConv2d, binary_kernel_codes,
                            codes_to_kernels, init_codebooks_from, kernels_to_codes,
                            nearest_kernels, nearest_kernels_float32)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# -- kernel code space ----------------------------------------------------------
def test_code_bit_order_is_row_major():
    for j in range(9):
        k = codes_to_kernels(1 << j)
        expect = -np.ones((3, 3))
        expect[j // 3, j % 3] = 1
        np.testing.assert_array_equal(k, expect)
    assert kernels_to_codes([[1, -1, -1], [-1, -1, 1], [-1, -1, -1]]) == 1 + 32


def test_codes_round_trip_batched():
    codes = np.arange(512).reshape(8, 4, 16)
    k = codes_to_kernels(codes)
    assert k.shape == (8, 4, 16, 3, 3) and set(np.unique(k)) == {-1.0, 1.0}
    np.testing.assert_array_equal(kernels_to_codes(k), codes)
    assert kernels_to_codes(ALL_KERNELS).tolist() == list(range(512))
    # real kernels: bit = (w >= 0), so sign(0) is +1 as in quant.sign
    np.testing.assert_array_equal(kernels_to_codes(np.zeros((2, 3, 3))), [511, 511])


def test_code_errors():
    with pytest.raises(ValueError, match=r"\[0, 511\], found 0..512"):
        codes_to_kernels([0, 512])
    with pytest.raises(ValueError, match=r"end in \(3, 3\)"):
        kernels_to_codes(np.zeros((2, 9)))


# -- nearest-kernel assignment ------------------------------------------------------
def brute_nearest(w, kernels):
    """Exact reference: squared distances in rational arithmetic, first minimum."""
    out = []
    for row in w:
        fr = [Fraction(float(v)) for v in row]
        d = [sum((a - int(b)) ** 2 for a, b in zip(fr, k)) for k in kernels]
        out.append(d.index(min(d)))
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(tau=st.integers(1, 9), n=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_assignment_equals_brute_force_with_ties(tau, n, seed, dtype):
    rng = np.random.default_rng(seed)
    codes = rng.choice(512, 1 << tau, replace=False)  # unsorted: ties go to lowest index
    kernels = codes_to_kernels(codes).reshape(-1, 9)
    w = (rng.integers(-3, 4, (n, 9)) / 2).astype(dtype)  # half-integer grid: many exact ties
    np.testing.assert_array_equal(nearest_kernels(w, kernels), brute_nearest(w, kernels))


def test_assignment_exact_where_float64_rounding_would_tie():
    # scores 2 - 2^-60 and 2 + 2^-60 both round to 2.0 in float64; the second is nearer
    w = np.zeros((1, 9))
    w[0, :3] = [1, 1, 2.0 ** -60]
    k = -np.ones((2, 9))
    k[:, :2] = 1
    k[1, 2] = 1
    assert (w @ k.T)[0, 0] == (w @ k.T)[0, 1]
    assert nearest_kernels(w, k).tolist() == [1] == brute_nearest(w, k).tolist()


@pytest.mark.parametrize("chunk", [None, 7])
def test_assignment_wide_magnitudes_and_constructed_ties(rng, monkeypatch, chunk):
    if chunk:  # rows scored in batches of 7: batch ends and the exact fallback meet
        monkeypatch.setattr(subbit, "_ASSIGN_CHUNK", chunk)
    kernels = codes_to_kernels(rng.choice(512, 16, replace=False)).reshape(-1, 9)
    mags = 2.0 ** rng.integers(-70, 2, (300, 9)) * rng.integers(-3, 4, (300, 9))
    w = mags.astype(np.float32)
    w[::3, 4] = w[::3, 5]  # equal pairs (tie when kernels differ by a swap)
    w[1::3, :3] = 0
    np.testing.assert_array_equal(nearest_kernels(w, kernels), brute_nearest(w, kernels))


def test_codebook_assign_shape(rng):
    cb = Codebook(4, rng)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    idx = cb.assign(w)
    assert idx.shape == (5, 3) and idx.dtype == np.uint16
    np.testing.assert_array_equal(idx.ravel(), brute_nearest(w.reshape(-1, 9), cb.kernels))


def float32_of(x):
    """A rational rounded to the nearest float32, ties to even (no double rounding)."""
    near = np.float32(float(x))
    candidates = [near, np.nextafter(near, np.float32(np.inf)),
                  np.nextafter(near, np.float32(-np.inf))]
    return min(candidates, key=lambda f: (abs(Fraction(float(f)) - x),
                                          int(np.float32(f).view(np.uint32)) & 1))


FMA_FLOATS = st.one_of(st.just(0.0), st.floats(2.0 ** -60, 2.0 ** 60, width=32),
                       st.floats(-2.0 ** 60, -2.0 ** -60, width=32))


@settings(max_examples=300, deadline=None)
@given(a=FMA_FLOATS, b=FMA_FLOATS, c=FMA_FLOATS)
def test_fma_float32_rounds_once(a, b, c):
    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    expect = float32_of(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
    assert subbit._fma_float32(a, b, c) == expect


def test_fma_float32_where_float64_rounding_lands_halfway():
    # a^2 = 1 + m 2^-11 + m^2 2^-24 ends in a float32 half ulp (2^-24) for odd m; a
    # c below float64's half ulp decides the side, which rounding the float64 sum
    # to float32 (twice rounded) loses about half the time
    twice_rounded_wrong = 0
    for m in range(1, 40, 2):
        for c in (2.0 ** -60, -2.0 ** -60, 2.0 ** -55, -2.0 ** -55):
            a, c = np.float32(1 + m * 2.0 ** -12), np.float32(c)
            exact = Fraction(float(a)) ** 2 + Fraction(float(c))
            assert subbit._fma_float32(a, a, c) == float32_of(exact)
            twice_rounded_wrong += np.float32(float(exact)) != float32_of(exact)
    assert twice_rounded_wrong >= 20


@pytest.mark.parametrize("chunk", [None, 7])
def test_float32_rule_equals_pytorch(monkeypatch, chunk):
    """PyTorch 2.13's own argmin of torch.norm (tests/fixtures/assign_float32.npz,
    made by scripts/make_torch_fixtures.py): random and near-tied kernels."""
    if chunk:
        monkeypatch.setattr(subbit, "_ASSIGN_CHUNK", chunk)
    fixture = np.load(FIXTURES / "assign_float32.npz")
    for tau in (4, 5, 6, 9):
        w, idx = fixture[f"tau{tau}.w"], fixture[f"tau{tau}.idx"]
        kernels = codes_to_kernels(fixture[f"tau{tau}.codes"]).reshape(-1, 9)
        np.testing.assert_array_equal(nearest_kernels_float32(w, kernels), idx)
        differ = int((nearest_kernels(w, kernels) != idx).sum())
        assert differ > 0  # the fixture tells the rules apart


def test_float32_rule_equal_norms_go_to_the_first_row():
    kernels = codes_to_kernels([7, 301, 300, 5, 4]).reshape(-1, 9)  # rows, not codes, count
    w = np.zeros((3, 9), np.float32)  # row 0: every norm is 3
    w[1] = 0.25 * (kernels[2] + kernels[1])  # equally near rows 1 and 2 (codes 301, 300)
    w[2] = 0.25 * (kernels[4] + kernels[3])  # equally near rows 3 and 4 (codes 5, 4)
    norms = np.sqrt(((w[:, None].astype(np.float64) - kernels) ** 2).sum(axis=2))
    nearest = [np.flatnonzero(row == row.min()).tolist() for row in norms]
    assert nearest == [[0, 1, 2, 3, 4], [1, 2], [3, 4]]
    assert nearest_kernels_float32(w, kernels).tolist() == [0, 1, 3]


@settings(max_examples=60, deadline=None)
@given(tau=st.integers(1, 9), n=st.integers(1, 60), seed=st.integers(0, 2 ** 32 - 1))
def test_float32_and_exact_rules_agree_but_on_near_ties(tau, n, seed):
    """For latent weights in [-1, 1] the rules differ only where the exact score
    gap between the two best kernels is below NEAR_TIE: weights on a grid of
    1/8 (exact ties) moved by -4..4 x 2^-26..2^-15 in one entry put gaps from
    float32 rounding (where the rules do differ) to just above the bound;
    uniform weights fill the rest."""
    rng = np.random.default_rng(seed)
    kernels = codes_to_kernels(rng.choice(512, 1 << tau, replace=False)).reshape(-1, 9)
    w = rng.integers(-8, 9, (n, 9)) / 8
    w[np.arange(n), rng.integers(0, 9, n)] += rng.integers(-4, 5, n) \
        * 2.0 ** -rng.integers(15, 27, n)
    uniform = rng.random(n) < 0.3
    w[uniform] = rng.uniform(-1, 1, (int(uniform.sum()), 9))
    w = np.clip(w, -1, 1).astype(np.float32)
    scores = w.astype(np.float64) @ kernels.T.astype(np.float64)  # exact: few bits
    top2 = np.sort(scores, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= NEAR_TIE
    exact, float32 = nearest_kernels(w, kernels), nearest_kernels_float32(w, kernels)
    np.testing.assert_array_equal(float32[decided], exact[decided])


# -- codebook construction ----------------------------------------------------------
def test_random_init_distinct_sorted_and_seeded():
    a = Codebook(5, np.random.default_rng(3))
    b = Codebook(5, np.random.default_rng(3))
    assert len(np.unique(a.codes)) == 32 and np.all(np.diff(a.codes.astype(int)) > 0)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.weight.data, codes_to_kernels(a.codes).reshape(32, 9))
    assert not a.weight.decay
    conv = SubBitConv2d(8, 4, tau=3, rng=np.random.default_rng(0))
    scale = np.abs(conv.weight.data).mean()  # P starts at the latent weights' scale
    np.testing.assert_allclose(conv.codebook.weight.data,
                               scale * codes_to_kernels(conv.codebook.codes).reshape(8, 9))
    full = Codebook(9, np.random.default_rng(0))
    np.testing.assert_array_equal(full.codes, np.arange(512))


def test_bad_codebook_args(rng):
    with pytest.raises(ValueError, match="tau must be an integer in 1..9, found 10"):
        Codebook(10, rng)
    with pytest.raises(ValueError, match="period must be an integer >= 1, found 0"):
        Codebook(3, rng, period=0)
    with pytest.raises(ValueError, match="unknown codebook init 'best'"):
        SubBitConv2d(2, 2, tau=3, init="best")


def test_init_frequent_picks_top_codes(rng):
    cb = Codebook(2, rng)
    codes = np.array([9] * 5 + [300] * 3 + [7] * 3 + [100] * 3 + [2] * 1)
    cb.init_frequent(codes)
    # 9 (5 times), then 7, 100, 300 tie at 3: all four fit; code 2 (once) does not
    assert cb.codes.tolist() == [7, 9, 100, 300]
    cb1 = Codebook(1, rng)
    cb1.init_frequent(codes)
    assert cb1.codes.tolist() == [7, 9]  # 9 first, then the lowest of the three tied codes


# -- gradients ------------------------------------------------------------------------
@pytest.mark.parametrize("binary_act", [False, True])
def test_latent_weight_gradient_is_clip_ste(rng, binary_act):
    conv = SubBitConv2d(3, 4, stride=2, tau=4, binary_act=binary_act, rng=rng).astype(np.float64)
    w = conv.weight.data
    w[0, 0, 0] = [1.4, -1.3, 0.5]  # outside [-1, 1]: no gradient
    x = rng.uniform(-1.4, 1.4, (2, 3, 5, 5))
    out = conv.forward(x)
    r = rng.standard_normal(out.shape)
    conv.zero_grad()
    conv.forward(x)
    conv.backward(r)
    alpha = weight_scale(w)[:, None, None, None]
    xin = np.where(x >= 0, 1.0, -1.0) if binary_act else x

    def loss():
        return np.sum(F.conv2d_forward_reference(xin, alpha * np.clip(w, -1, 1), 2, 1)[0] * r)

    assert_close(conv.weight.grad, numerical_grad(loss, w), "latent weight")
    np.testing.assert_array_equal(conv.weight.grad[0, 0, 0, :2], 0)


def test_input_gradient_real_activations(rng):
    conv = SubBitConv2d(2, 3, stride=1, tau=3, rng=rng).astype(np.float64)
    x = rng.standard_normal((2, 2, 4, 4))
    r = rng.standard_normal(conv.forward(x).shape)
    dx = conv.backward(r)
    wq = weight_scale(conv.weight.data)[:, None, None, None] * \
        codes_to_kernels(conv.codebook.codes[conv.idx], np.float64)
    assert_close(dx, numerical_grad(lambda: np.sum(F.conv2d_forward_reference(x, wq, 1, 1)[0] * r), x),
                 "input")


def test_codebook_gradient_is_sum_over_assigned_kernels(rng):
    conv = SubBitConv2d(4, 5, stride=1, tau=3, rng=rng, period=1).astype(np.float64)
    x = rng.standard_normal((2, 4, 4, 4))
    r = rng.standard_normal(conv.forward(x).shape)
    conv.zero_grad()
    conv.forward(x)
    conv.backward(r)
    assert len(np.unique(conv.idx)) > 1
    alpha = weight_scale(conv.weight.data)[:, None, None, None]
    idx = conv.idx.copy()
    p = conv.codebook.weight.data.copy()

    def loss():
        wq = alpha * p[idx].reshape(conv.weight.data.shape)
        return np.sum(F.conv2d_forward_reference(x, wq, 1, 1)[0] * r)

    assert_close(conv.codebook.weight.grad, numerical_grad(loss, p), "codebook P")
    unused = np.setdiff1d(np.arange(8), idx)
    assert np.all(conv.codebook.weight.grad[unused] == 0)


def test_codebook_gradient_only_on_refinement_steps(rng):
    conv = SubBitConv2d(4, 4, tau=2, rng=rng, period=3)
    x = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    fed = []
    for _ in range(7):
        conv.zero_grad()
        conv.backward(np.ones_like(conv.forward(x)))
        fed.append(bool(np.any(conv.codebook.weight.grad != 0)))
        conv.after_update()
    assert fed == [False, False, True, False, False, True, False]
    off = SubBitConv2d(4, 4, tau=2, rng=rng, period=1, refine=False)
    off.backward(np.ones_like(off.forward(x)))
    assert np.all(off.codebook.weight.grad == 0)


# -- tau = 9 is a BNN ---------------------------------------------------------------------
@pytest.mark.parametrize("binary_act", [False, True])
def test_tau9_equals_binary_conv(rng, binary_act):
    bnn = BinaryConv2d(6, 5, 3, 2, 1, binary_act=binary_act, rng=np.random.default_rng(1))
    snn = SubBitConv2d(6, 5, stride=2, tau=9, binary_act=binary_act, rng=rng)
    snn.weight.data = bnn.weight.data.copy()
    assert np.all(bnn.weight.data != 0)
    x = rng.standard_normal((3, 6, 7, 7)).astype(np.float32)
    out_b, out_s = bnn.forward(x), snn.forward(x)
    np.testing.assert_array_equal(out_s, out_b)
    r = rng.standard_normal(out_b.shape).astype(np.float32)
    np.testing.assert_array_equal(snn.backward(r), bnn.backward(r))
    np.testing.assert_array_equal(snn.weight.grad, bnn.weight.grad)
    np.testing.assert_array_equal(snn.kernel_codes(), binary_kernel_codes(bnn))


def test_exact_zero_weight_takes_lowest_index(rng):
    snn = SubBitConv2d(1, 1, tau=9, rng=rng)
    snn.weight.data[...] = 0.5
    snn.weight.data[0, 0, 1, 1] = 0.0  # tie between +1 and -1 at j = 4
    assert snn.kernel_codes()[0, 0] == 511 - 16  # the lower code: -1 at the zero
    assert kernels_to_codes(snn.weight.data)[0, 0] == 511  # sign(0) = +1 in a BNN


# -- refinement ---------------------------------------------------------------------------
def _perturb(p, rng):
    """A stand-in optimizer step on P: big random moves, exact zeros, duplicates."""
    p += rng.normal(0, 1.5, p.shape).astype(p.dtype) * (rng.random(p.shape) < 0.3)
    p[rng.random(p.shape) < 0.1] = 0.0  # exact zeros exercise the sign memory
    if rng.random() < 0.3:  # force a duplicate pattern now and then
        i, j = rng.choice(len(p), 2, replace=False)
        p[j] = p[i]


@pytest.mark.parametrize("tau", [1, 3, 5, 9])
def test_refinement_invariants(rng, tau):
    cb = Codebook(tau, rng)
    replaced_any = False
    for _ in range(60):
        _perturb(cb.weight.data, rng)
        before = cb.codes.copy()
        small = np.abs(cb.weight.data) < 1e-3
        expect_bits = np.where(small, codes_to_kernels(before).reshape(-1, 9) > 0,
                               cb.weight.data >= 0)
        cb.update()
        assert cb.codes.dtype == np.uint16 and len(np.unique(cb.codes)) == 1 << tau
        assert np.abs(cb.weight.data).max() <= 3
        bits = codes_to_kernels(cb.codes).reshape(-1, 9) > 0
        kept = np.all(bits == expect_bits, axis=1)
        replaced = ~kept
        replaced_any |= replaced.any()
        # replaced entries are new kernels with P reset to mean|P| times them
        ratio = cb.weight.data[replaced] / codes_to_kernels(cb.codes[replaced]).reshape(-1, 9)
        assert np.all(ratio > 0) and (ratio.size == 0 or np.ptp(ratio) < 1e-6)
        # kept entries follow sign with memory (zeros keep the previous bit)
        prev_bits = codes_to_kernels(before).reshape(-1, 9) > 0
        assert np.all(bits[kept][small[kept]] == prev_bits[kept][small[kept]])
        np.testing.assert_array_equal(cb.kernels, codes_to_kernels(cb.codes).reshape(-1, 9))
    assert int(cb.step) == 60
    assert replaced_any


def test_duplicate_keeps_the_entry_that_already_had_the_pattern(rng):
    cb = Codebook(2, rng)
    cb.set_codes([0, 5, 9, 200])
    cb.weight.data[0] = codes_to_kernels(9).reshape(9)  # entry 0 moves onto entry 2's kernel
    cb.update()
    assert cb.codes[2] == 9 and cb.codes[0] not in (0, 5, 9, 200)
    assert len(np.unique(cb.codes)) == 4


def test_refinement_repeats_and_survives_state_round_trip():
    def run(conv, steps, seed):
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            conv.weight.data += rng.normal(0, 0.1, conv.weight.data.shape).astype(np.float32)
            _perturb(conv.codebook.weight.data, rng)
            conv.after_update()

    a = SubBitConv2d(3, 4, tau=3, rng=np.random.default_rng(5))
    b = SubBitConv2d(3, 4, tau=3, rng=np.random.default_rng(5))
    run(a, 30, 1)
    run(b, 30, 1)
    np.testing.assert_array_equal(a.codebook.codes, b.codebook.codes)
    # resume a copy from the state dict (a different construction seed) and continue both
    c = SubBitConv2d(3, 4, tau=3, rng=np.random.default_rng(99))
    c.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(c.state_dict()[key], value, err_msg=key)
    run(a, 30, 2)
    run(c, 30, 2)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(c.state_dict()[key], value, err_msg=key)


def test_after_load_recomputes_idx(rng):
    conv = SubBitConv2d(3, 4, tau=3, rng=rng)
    state = conv.state_dict()
    state["idx"] = np.zeros_like(state["idx"])
    conv.load_state_dict(state)
    np.testing.assert_array_equal(conv.idx, conv.codebook.assign(conv.weight.data))
    assert conv.idx.dtype == np.uint16 and conv.idx.any()


# -- model level ----------------------------------------------------------------------------
def _small(quant, act, seed=3, **snn_options):
    config = {"arch": "resnet20", "quant": quant, "act": act, "seed": seed, "tau": 3,
              "snn_options": snn_options}
    return models.ResNetCifar(config, depth=8, widths=(4, 8, 8), num_classes=3)


def test_resnet20_snn_config_is_json_and_rebuilds():
    import json
    model = models.resnet20("snn", "binary", tau=5, refine=False, period=10, init="random")
    config = json.loads(json.dumps(model.config))
    again = models.build_model(config)
    again.load_state_dict(model.state_dict())
    convs = [m for _, m in again.named_modules() if isinstance(m, SubBitConv2d)]
    assert len(convs) == 18
    assert all(m.tau == 5 and not m.codebook.refine and m.codebook.period == 10 for m in convs)


def test_assign_rule_is_a_config_option_kept_by_every_conv():
    import json
    model = models.resnet20("snn", "binary", tau=4, seed=2, assign="float32")
    again = models.build_model(json.loads(json.dumps(model.config)))
    again.load_state_dict(model.state_dict())
    convs = [m for _, m in again.named_modules() if isinstance(m, SubBitConv2d)]
    assert convs and all(m.codebook.rule == "float32" for m in convs)
    for conv in convs:
        w = conv.weight.data.reshape(-1, 9)
        np.testing.assert_array_equal(conv.idx.ravel(), nearest_kernels_float32(
            w, conv.codebook.kernels))
        b, _ = conv.binary_weight()
        np.testing.assert_array_equal(b.reshape(-1, 9), conv.codebook.kernels[conv.idx.ravel()])
    default = models.resnet20("snn", "binary", tau=4, seed=2)
    assert all(m.codebook.rule == "exact" for _, m in default.named_modules()
               if isinstance(m, SubBitConv2d))
    with pytest.raises(ValueError, match="unknown nearest-kernel rule 'float16', expected one "
                                         r"of \('exact', 'float32'\)"):
        SubBitConv2d(2, 2, tau=3, assign="float16")


def test_init_codebooks_from_bnn(rng):
    bnn = _small("bnn", "real", seed=1)
    snn = _small("snn", "real", seed=2, init="frequent")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="init='frequent' but no codebook yet"):
        snn.forward(x)
    names = init_codebooks_from(snn, bnn)
    assert len(names) == 6
    for name in names:
        layer = dict(snn.named_modules())[name]
        ref = Codebook(3, rng)
        ref.init_frequent(binary_kernel_codes(dict(bnn.named_modules())[name]))
        np.testing.assert_array_equal(layer.codebook.codes, ref.codes)
    snn.forward(x)
    state = bnn.state_dict()
    del state["layer1.0.conv1.weight"]
    with pytest.raises(ValueError, match="bnn.npz: no array 'layer1.0.conv1.weight'"):
        init_codebooks_from(snn, state, source="bnn.npz")
    state = bnn.state_dict()
    state["layer2.0.conv2.weight"] = state["layer2.0.conv2.weight"][:, :2]
    with pytest.raises(ValueError, match=r"'layer2.0.conv2.weight' has shape \(8, 2, 3, 3\), "
                                         r"expected \(8, 8, 3, 3\)"):
        init_codebooks_from(snn, state)


@pytest.mark.parametrize("act", ["real", "binary"])
def test_training_smoke_loss_falls_and_codebooks_refine(act):
    model = _small("snn", act, period=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    convs = [m for _, m in model.named_modules() if isinstance(m, SubBitConv2d)]
    start = [m.codebook.codes.copy() for m in convs]
    losses = []
    for _ in range(40):
        model.zero_grad()
        loss, d = softmax_cross_entropy(model.forward(x), y)
        model.backward(d)
        for name, p in model.named_parameters():
            # a large codebook rate so that 20 refinement steps flip some signs
            p.data -= (1.0 if "codebook" in name else 0.1) * p.grad
        for _, m in model.named_modules():
            if hasattr(m, "after_update"):
                m.after_update()
        losses.append(loss)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert any(np.any(m.codebook.codes != s) for m, s in zip(convs, start))
    assert all(len(np.unique(m.codebook.codes)) == 8 for m in convs)
