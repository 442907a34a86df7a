import numpy as np
import pytest

from gradcheck import assert_close, check_module, numerical_grad
from minisnn import functional as F
from minisnn import models, nn
from minisnn.quant import BinaryConv2d, SignActivation, sign, weight_scale


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_sign_convention_zero_is_plus_one():
    np.testing.assert_array_equal(sign(np.array([-2.0, -0.0, 0.0, 1e-9, 3.0])), [-1, 1, 1, 1, 1])


@pytest.mark.parametrize("grad,expect", [
    ("ste", [0, 1, 1, 1, 1, 1, 0]),
    ("approxsign", [0, 0, 1, 2, 1, 0, 0]),
])
def test_sign_activation_straight_through(grad, expect):
    x = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    act = SignActivation(grad)
    np.testing.assert_array_equal(act.forward(x), [-1, -1, -1, 1, 1, 1, 1])
    np.testing.assert_allclose(act.backward(np.ones_like(x)), expect)


def test_surrogates_are_derivatives_of_their_smooth_forms(rng):
    x = rng.uniform(-1.5, 1.5, 50)
    x = x[np.abs(np.abs(x) - 1) > 1e-3]
    x = x[np.abs(x) > 1e-3]
    approx = lambda v: np.where(v < -1, -1, np.where(v < 0, 2 * v + v * v,
                                                     np.where(v < 1, 2 * v - v * v, 1)))
    num = (approx(x + 1e-6) - approx(x - 1e-6)) / 2e-6
    np.testing.assert_allclose(F.approx_sign_backward(np.ones_like(x), x), num, atol=1e-5)
    num = (np.clip(x + 1e-6, -1, 1) - np.clip(x - 1e-6, -1, 1)) / 2e-6
    np.testing.assert_allclose(F.clip_backward(np.ones_like(x), x), num, atol=1e-5)


def test_binary_conv_forward_is_scaled_sign(rng):
    conv = BinaryConv2d(3, 4, stride=1, rng=rng)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = conv.weight.data
    alpha = np.abs(w).mean(axis=(1, 2, 3))
    ref, _ = F.conv2d_forward_reference(x, alpha[:, None, None, None] * np.sign(w), 1, 1)
    np.testing.assert_allclose(conv.forward(x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weight_scale(w), alpha, rtol=1e-6)


@pytest.mark.parametrize("binary_act", [False, True])
def test_binary_conv_straight_through_gradients(rng, binary_act):
    """The latent-weight gradient is the gradient of the surrogate forward
    conv(x, alpha * clip(W, -1, 1)) with alpha held constant; the input
    gradient (binary activations) is that of ApproxSign."""
    conv = BinaryConv2d(2, 3, stride=2, binary_act=binary_act, rng=rng).astype(np.float64)
    w = conv.weight.data
    w[0, 0, 0] = [1.4, -1.3, 0.5]  # some weights outside [-1, 1]: no gradient there
    x = rng.uniform(-1.4, 1.4, (2, 2, 5, 5))
    out = conv.forward(x)
    r = rng.standard_normal(out.shape)
    conv.zero_grad()
    conv.forward(x)
    dx = conv.backward(r)
    alpha = weight_scale(w)[:, None, None, None]
    approx = lambda v: np.where(v < -1, -1, np.where(v < 0, 2 * v + v * v,
                                                     np.where(v < 1, 2 * v - v * v, 1)))

    xin = sign(x) if binary_act else x
    w_saved = w.copy()

    def loss_w():
        return np.sum(F.conv2d_forward_reference(xin, alpha * np.clip(w, -1, 1), 2, 1)[0] * r)

    assert_close(conv.weight.grad, numerical_grad(loss_w, w), "latent weight")
    np.testing.assert_array_equal(conv.weight.grad[0, 0, 0, :2], 0)
    w[...] = w_saved
    if binary_act:
        wq = alpha * sign(w)

        def loss_x():
            return np.sum(F.conv2d_forward_reference(approx(x), wq, 2, 1)[0] * r)
        assert_close(dx, numerical_grad(loss_x, x), "input")


def _small_model(quant, act):
    config = {"arch": "resnet20", "quant": quant, "act": act, "seed": 3}
    return models.ResNetCifar(config, depth=8, widths=(2, 4, 4), num_classes=3)


def test_whole_small_network_gradients(rng):
    model = _small_model("fp", "real")
    x = rng.standard_normal((4, 3, 8, 8))
    check_module(model, x, rng, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("quant,act,name", [("fp", "real", "fp"), ("bnn", "real", "1W/32A"),
                                            ("bnn", "binary", "1W/1A")])
def test_resnet20_modes(quant, act, name):
    model = models.resnet20(quant, act, seed=0)
    assert models.mode_name(quant, act) == name
    assert models.mode_name("fp", "binary") == "32W/1A"
    convs = [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, BinaryConv2d))]
    assert len(convs) == 19
    # first conv and classifier stay full precision in every mode
    assert type(model.conv1) is nn.Conv2d
    n_binary = sum(isinstance(m, BinaryConv2d) for m in convs)
    assert n_binary == (0 if quant == "fp" else 18)
    params = sum(p.data.size for p in model.parameters())
    assert params == 269722  # He et al.'s 0.27M parameters, BN included
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (2, 10) and out.dtype == np.float32
    assert model.backward(np.ones_like(out)).shape == x.shape


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown quant 'int4'"):
        models.resnet20("int4")
    with pytest.raises(ValueError, match="quant .fp. with act .binary. needs block .reactnet."):
        models.resnet20("fp", "binary")
