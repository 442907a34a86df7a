"""The ReActNet block and the models built from it (the two-step recipe's networks)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradcheck import assert_close, assert_same_bytes, numerical_grad, signed_zero_pair
from minisnn import functional as F
from minisnn import models, nn
from minisnn.quant import BinaryConv2d, SignInputConv2d
from minisnn.subbit import SubBitConv2d


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def _randomize(block, rng):
    """Non-trivial shifts, slopes and batch-norm affines, so every path carries gradient."""
    for name, p in block.named_parameters():
        if name.endswith(("move0.bias", "move1.bias", "move2.bias")):
            p.data = (rng.standard_normal(p.data.shape) * 0.3).astype(p.data.dtype)
        elif name.endswith("prelu.weight"):
            p.data = rng.uniform(-0.5, 1.5, p.data.shape).astype(p.data.dtype)
        elif name.endswith("bias"):
            p.data = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.5
        elif p.data.ndim == 1:
            p.data = rng.uniform(0.5, 1.5, p.data.shape).astype(p.data.dtype)


def _approx(v):
    """ApproxSign, the smooth function whose derivative is the sign's surrogate gradient."""
    return np.where(v < -1, -1, np.where(v < 0, 2 * v + v * v, np.where(v < 1, 2 * v - v * v, 1)))


@pytest.mark.parametrize("in_planes,planes,stride", [(4, 4, 1), (4, 8, 2), (4, 6, 1)])
def test_reactnet_block_gradients(rng, in_planes, planes, stride):
    """Every gradient of the block (input, shifts, conv weights, PReLU, batch
    norms, the downsample's 1x1 conv) by finite differences of the block with
    the straight-through sign written out: sign(v0) + approx(v) - approx(v0),
    equal to sign(v) at the point v0 and with ApproxSign's derivative (step
    1's real-weight conv keeps the rest smooth)."""
    conv = lambda c_in, c_out, s: SignInputConv2d(c_in, c_out, 3, s, 1, binary_act=True, rng=rng)
    block = models.ReActBlock(in_planes, planes, stride, conv, rng=rng)
    assert (block.downsample is None) == (stride == 1 and in_planes == planes)
    _randomize(block, rng)
    block.astype(np.float64)
    x = rng.uniform(-1.3, 1.3, (3, in_planes, 4, 4))

    v0 = block.move0.forward(x)
    straight = np.where(v0 >= 0, 1.0, -1.0) - _approx(v0)

    def smooth(x):
        out = block.binary_conv.conv_forward(straight + _approx(block.move0.forward(x)))
        out = block.bn1.forward(out)
        out = out + (x if block.downsample is None else block.downsample.forward(x))
        return block.move2.forward(block.prelu.forward(block.move1.forward(out)))

    r = rng.standard_normal(block.forward(x).shape)
    block.zero_grad()
    block.forward(x)
    dx = block.backward(r)
    analytic = {name: p.grad.copy() for name, p in block.named_parameters()}
    loss = lambda: float(np.sum(smooth(x) * r))
    assert_close(dx, numerical_grad(loss, x), "input", 1e-4, 1e-6)
    for name, p in block.named_parameters():
        assert_close(analytic[name], numerical_grad(loss, p.data), name, 1e-4, 1e-6)


def test_reactnet_block_forward_is_the_authors_formula(rng):
    block = models.ReActBlock(4, 8, 2, lambda c_in, c_out, s: BinaryConv2d(
        c_in, c_out, 3, s, 1, binary_act=True, rng=rng), rng=rng).astype(np.float64)
    _randomize(block, rng)
    x = rng.standard_normal((2, 4, 6, 6))
    b = lambda m: m.bias.data
    w = block.binary_conv.weight.data
    alpha = np.abs(w).mean(axis=(1, 2, 3))[:, None, None, None]
    conv = F.conv2d_forward_reference(np.where(x + b(block.move0) >= 0, 1.0, -1.0), alpha * np.sign(w), 2, 1)[0]

    def bn(m, v):
        mean, var = v.mean(axis=(0, 2, 3), keepdims=True), v.var(axis=(0, 2, 3), keepdims=True)
        return ((v - mean) / np.sqrt(var + m.eps) * m.weight.data[None, :, None, None]
                + m.bias.data[None, :, None, None])

    pooled = x.reshape(2, 4, 3, 2, 3, 2).mean(axis=(3, 5))
    res = bn(block.downsample[2], F.conv2d_forward_reference(pooled, block.downsample[1].weight.data, 1, 0)[0])
    out = bn(block.bn1, conv) + res + b(block.move1)
    a = block.prelu.weight.data[None, :, None, None]
    ref = np.maximum(out, 0) + a * np.minimum(out, 0) + b(block.move2)
    np.testing.assert_allclose(block.forward(x), ref, rtol=1e-10, atol=1e-10)


def test_sign_input_conv_straight_through_gradients(rng):
    """Step 1's conv: real weights (exact gradient), sign input with the
    ApproxSign surrogate: its gradients are those of conv(approx(x), W)."""
    conv = SignInputConv2d(2, 3, 3, 2, 1, binary_act=True, rng=rng).astype(np.float64)
    x = rng.uniform(-1.4, 1.4, (2, 2, 5, 5))
    x[np.abs(x) < 1e-3] += 0.01
    np.testing.assert_array_equal(conv.forward(x), F.conv2d_forward_reference(np.where(x >= 0, 1.0, -1.0),
                                                                    conv.weight.data, 2, 1)[0])
    r = rng.standard_normal(conv.forward(x).shape)
    conv.zero_grad()
    conv.forward(x)
    dx = conv.backward(r)
    approx = lambda v: np.where(v < -1, -1, np.where(v < 0, 2 * v + v * v,
                                                     np.where(v < 1, 2 * v - v * v, 1)))
    w = conv.weight.data
    xs = np.where(x >= 0, 1.0, -1.0)
    assert_close(conv.weight.grad, numerical_grad(
        lambda: np.sum(F.conv2d_forward_reference(xs, w, 2, 1)[0] * r), w), "weight")
    assert_close(dx, numerical_grad(
        lambda: np.sum(F.conv2d_forward_reference(approx(x), w, 2, 1)[0] * r), x), "input", atol=1e-6)


@pytest.mark.parametrize("quant,conv_type", [("fp", SignInputConv2d), ("bnn", BinaryConv2d),
                                             ("snn", SubBitConv2d)])
def test_reactnet_resnet20_layout(quant, conv_type):
    m = models.resnet20(quant, "binary", tau=5 if quant == "snn" else None, block="reactnet")
    convs = [(n, c) for n, c in m.named_modules() if n.endswith("binary_conv")]
    assert len(convs) == 18 and all(type(c) is conv_type and c.binary_act for _, c in convs)
    assert [len(s) for s in m.stages()] == [6, 6, 6]
    assert [n for n, _ in m.named_modules() if n.endswith("downsample")] == \
        ["layer2.0.downsample", "layer3.0.downsample"]
    assert not hasattr(m, "act1")  # the stem is conv + batch norm, as the authors'
    out = m.forward(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32


def test_reactnet_resnet18_has_the_authors_keys():
    m = models.resnet18("snn", "binary", tau=4, block="reactnet", num_classes=7)
    keys = set(m.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.3.move0.bias", "layer4.3.move2.bias",
                "layer1.0.binary_conv.weight", "layer3.2.prelu.weight", "layer2.0.downsample.1.weight",
                "layer2.0.downsample.2.running_mean", "fc.weight"):
        assert key in keys, key
    assert "layer1.0.downsample.1.weight" not in keys  # 64 -> 64, stride 1: identity
    assert [len(s) for s in m.stages()] == [4, 4, 4, 4]
    assert m.layer2[0].binary_conv.stride == 2 and m.layer2[1].binary_conv.stride == 1


@pytest.mark.parametrize("quant,act,block,match", [
    ("fp", "binary", "basic", "needs block 'reactnet'"),
    ("bnn", "real", "reactnet", "block 'reactnet' needs act 'binary'"),
    ("bnn", "binary", "bireal", "unknown block 'bireal'"),
])
def test_bad_block_combinations_are_refused(quant, act, block, match):
    with pytest.raises(ValueError, match=match):
        models.resnet20(quant, act, block=block)


def test_basic_block_models_are_unchanged_by_the_block_option():
    """Old configs have no 'block': they still build the same weights (the
    trained rows must retrain to their recorded accuracy)."""
    cfg = {"arch": "resnet20", "quant": "bnn", "act": "binary", "seed": 4, "num_classes": 10}
    a = models.build_model(cfg).state_dict()
    b = models.build_model(dict(cfg, block="basic")).state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_fused_rprelu_equals_the_three_layers(rng):
    """The block's one-pass move1 -> prelu -> move2 gives the layers' outputs
    bit for bit and their gradients (float32 and float64)."""
    for dtype in (np.float32, np.float64):
        c = 5
        layers = [nn.LearnableBias(c), nn.PReLU(c), nn.LearnableBias(c)]
        layers[0].bias.data = rng.standard_normal((1, c, 1, 1)).astype(np.float32)
        layers[1].weight.data = rng.uniform(-1, 1, c).astype(np.float32)
        layers[2].bias.data = rng.standard_normal((1, c, 1, 1)).astype(np.float32)
        for m in layers:
            m.astype(dtype)
        x = rng.standard_normal((3, c, 4, 6)).astype(dtype)
        x[0, 0, 0, :2] = [-layers[0].bias.data[0, 0, 0, 0], -0.0]  # v = 0 and -0: the kink
        ref = x
        for m in layers:
            ref = m.forward(ref)
        params = [np.ascontiguousarray(m, dtype=dtype).reshape(-1) for m in
                  (layers[0].bias.data, layers[1].weight.data, layers[2].bias.data)]
        out = np.empty_like(x)
        F.rprelu(x, *params, out)
        np.testing.assert_array_equal(out, ref)
        assert np.array_equal(np.signbit(out), np.signbit(ref))
        dout = rng.standard_normal(x.shape).astype(dtype)
        d = dout
        for m in reversed(layers):
            d = m.backward(d)
        dx = np.empty_like(x)
        sums = F.rprelu_backward(dout, x, params[0], params[1], dx)
        np.testing.assert_allclose(dx, d, rtol=1e-6)
        for got, m in zip(sums, (layers[0].bias, layers[1].weight, layers[2].bias)):
            np.testing.assert_allclose(got.reshape(m.grad.shape), m.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(quant="snn", tau=12), "tau must be an integer in 1..9"),
    (dict(quant="snn", tau=None), "quant 'snn' needs tau"),
    (dict(quant="int4"), "unknown quant 'int4'"),
    (dict(weight_init="xavier"), "unknown weight_init 'xavier'"),
])
def test_model_config_refuses_bad_values_before_building(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.model_config("resnet20", **kwargs)


def test_model_config_keeps_tau_and_options_for_subbit_models_only():
    assert models.model_config("resnet20", "bnn", "binary", tau=5, period=3)["tau"] is None
    cfg = models.model_config("resnet18", "snn", "binary", tau=4, block="reactnet", period=3)
    assert cfg["tau"] == 4 and cfg["snn_options"] == {"period": 3}


def test_torch_uniform_weight_init_is_pytorchs_conv_default():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every conv (stem, block convs,
    shortcut convs; the classifier already draws PyTorch's way), recorded in
    the config, rebuilt from it; the default He init leaves the config as it was."""
    default = models.model_config("resnet20", "fp", "binary", block="reactnet")
    assert "weight_init" not in default
    cfg = models.model_config("resnet20", "fp", "binary", block="reactnet",
                              weight_init="torch_uniform")
    assert cfg["weight_init"] == "torch_uniform"
    he, uniform = models.build_model(default), models.build_model(cfg)
    convs = 0
    for (name, a), (_, b) in zip(he.named_modules(), uniform.named_modules()):
        w = getattr(getattr(b, "weight", None), "data", None)
        if w is None or w.ndim != 4:
            continue
        convs += 1
        fan_in = int(np.prod(w.shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, name
        assert abs(w.std() * np.sqrt(3 * fan_in) - 1) < 0.2, name
        assert abs(a.weight.data.std() * np.sqrt(fan_in / 2) - 1) < 0.2, name  # He: sqrt(2/fan_in)
    assert convs == 1 + 18 + 2  # stem, 18 binary convs, 2 downsampling 1x1 convs
    again = models.build_model(cfg)
    for (_, a), (_, b) in zip(uniform.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("arch,quant,block", [("resnet18", "snn", "reactnet"),
                                              ("resnet20", "snn", "basic"),
                                              ("resnet20", "bnn", "basic")])
def test_a_model_built_without_init_keeps_the_other_random_state(arch, quant, block):
    """init=False: every weight a read-only zero that takes no memory, every
    other array (codebook codes and seeds, batch-norm state) as with init=True."""
    config = models.model_config(arch, quant, "binary", tau=5 if quant == "snn" else None,
                                 seed=4, num_classes=10, block=block)
    drawn = models.build_model(config)
    bare = models.build_model(config, init=False)
    weights = {name for name, p in drawn.named_parameters()  # conv and linear weights, fc bias
               if (name.endswith("weight") and p.data.ndim >= 2
                   and not name.endswith("codebook.weight")) or name == "fc.bias"}
    assert len(weights) > 10
    for name, value in bare.state_dict(copy=False).items():
        if name in weights:
            assert value.strides == (0,) * value.ndim and not value.any(), name
        elif not name.endswith((".idx", "codebook.weight")):  # both derived from the weights
            np.testing.assert_array_equal(value, drawn.state_dict()[name], err_msg=name)
    if quant == "snn":
        seeds = [m.codebook.seed for _, m in bare.named_modules() if isinstance(m, SubBitConv2d)]
        assert len(set(int(s) for s in seeds)) == len(seeds)  # drawn, not defaulted


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 40),
       seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_fused_batchnorm_add_rprelu_gives_the_separate_passes_bytes(n, c, h, w, seed, dtype):
    """channel_affine_add_rprelu is channel_affine, the add and rprelu, byte for byte
    (the pre-activation and the output), exact and negative zeros included."""
    rng = np.random.default_rng(seed)
    x, residual = signed_zero_pair(rng, (n, c, h, w), dtype)
    scale, shift, shift_in, slope, shift_out = rng.standard_normal((5, c)).astype(dtype)
    shift[::2] = -0.0
    shift_in[1::2] = 0.0
    added = np.empty_like(x)
    F.channel_affine(x, scale, shift, added)
    F.add(added, residual, added)
    expect = np.empty_like(x)
    F.rprelu(added, shift_in, slope, shift_out, expect)
    pre, out = np.empty_like(x), np.empty_like(x)
    F.channel_affine_add_rprelu(x, scale, shift, residual, shift_in, slope, shift_out, pre, out)
    assert pre.tobytes() == added.tobytes() and out.tobytes() == expect.tobytes()


@pytest.mark.parametrize("in_planes,planes,stride", [(4, 4, 1), (4, 8, 2)])
def test_reactnet_block_fused_path_gives_the_layer_by_layer_bytes(rng, in_planes, planes, stride):
    """Without hooks on bn1 the block runs batch norm, shortcut add and RPReLU in
    one pass; with one, layer by layer: the same outputs, gradients and running
    statistics, bit for bit."""
    blocks = []
    for hooked in (False, True):
        conv = lambda c_in, c_out, s: BinaryConv2d(c_in, c_out, 3, s, 1, binary_act=True,
                                                   rng=np.random.default_rng(5))
        block = models.ReActBlock(in_planes, planes, stride, conv, rng=np.random.default_rng(6))
        _randomize(block, np.random.default_rng(7))
        if hooked:
            block.bn1.register_forward_hook(lambda *args: None)
        blocks.append(block)
    x = rng.standard_normal((3, in_planes, 16, 16)).astype(np.float32)
    dout = rng.standard_normal((3, planes, 16 // stride, 16 // stride)).astype(np.float32)
    assert_same_bytes(blocks, x, dout)
