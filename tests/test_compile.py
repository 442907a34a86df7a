import json

import numpy as np
import pytest

from minisnn import bitpack, export, infer, models, popcount
from minisnn import checkpoint as ckpt
from minisnn import compile as C
from minisnn.nn import BatchNorm2d
from minisnn.quant import BinaryConv2d, sign
from minisnn.subbit import SubBitConv2d

BINARY_MODES = [("bnn", None), ("snn", 5)]


def randomize_bn(bn, rng):
    """Running stats and affine far from the init, so signs after each BN vary."""
    c = bn.weight.data.size
    bn.weight.data = rng.normal(0, 1, c).astype(np.float32)
    bn.bias.data = rng.normal(0, 0.5, c).astype(np.float32)
    bn.running_mean = rng.normal(0, 3, c).astype(np.float32)
    bn.running_var = rng.uniform(0.5, 30, c).astype(np.float32)


def random_model(quant, act, tau, seed):
    model = models.resnet20(quant, act, tau=tau, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for _, module in model.named_modules():
        if isinstance(module, BatchNorm2d):
            randomize_bn(module, rng)
    return model.eval()


def save_model(path, model):
    ckpt.save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                         {"model": model.config})
    return path


# ------------------------------------------------------------------ random models

@pytest.mark.parametrize("quant,tau", BINARY_MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_logits_equal_float_eval_logits(quant, tau, seed):
    model = random_model(quant, "binary", tau, seed)
    compiled = C.compile_model(model)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((12, 3, 32, 32)) * rng.uniform(0.2, 3)).astype(np.float32)
    expected = model.forward(x)
    assert np.ptp(expected, axis=0).min() > 0  # every logit varies: the signs inside do too
    np.testing.assert_array_equal(compiled.predict(x), expected)
    assert len(compiled.layers) == 18
    assert all(layer.tau == tau for layer in compiled.layers)


def test_compiled_layers_hold_the_trained_kernels():
    model = random_model("snn", "binary", 5, 3)
    compiled = C.compile_model(model)
    conv = model.layer2[0].conv1
    layer = compiled.layers[6]
    assert layer.name == "layer2.0.conv1" and (layer.c_in, layer.c_out, layer.stride) == (16, 32, 2)
    assert (layer.height, layer.out_height) == (32, 16)
    np.testing.assert_array_equal(layer.kernel_codes, conv.kernel_codes())
    np.testing.assert_array_equal(layer.codebook[layer.idx], layer.kernel_codes)


@pytest.mark.parametrize("channels", [5, 64, 70])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_sign_packing_matches_bitpack(channels, stride):
    rng = np.random.default_rng(channels + stride)
    x = rng.standard_normal((3, channels, 9, 10)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = 0.0
    x[rng.random(x.shape) < 0.1] = -0.0  # sign(-0) = +1 too
    np.testing.assert_array_equal(C.sign_pack(x), bitpack.pack_activations(x))
    np.testing.assert_array_equal(C.sign_patch_codes(x, stride), bitpack.patch_codes(x, stride))


# ------------------------------------------------------------------ threshold fold

def random_bn_params(rng, c, alpha):
    """gamma with negatives and zeros; some means put the BN zero exactly on an integer."""
    gamma = rng.normal(0, 1, c).astype(np.float32)
    gamma[rng.random(c) < 0.2] = 0
    beta = rng.normal(0, 1, c).astype(np.float32)
    mean = rng.normal(0, 5, c).astype(np.float32)
    on_integer = rng.random(c) < 0.4
    mean[on_integer] = (alpha * rng.integers(-20, 21, c))[on_integer]
    beta[on_integer] = 0
    var = rng.uniform(1e-3, 10, c).astype(np.float32)
    return gamma, beta, mean, var


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("c_in", [3, 16, 64])
def test_thresholds_equal_sign_of_float_bn_at_every_integer(seed, c_in):
    rng = np.random.default_rng(seed)
    c = 24
    alpha = rng.uniform(0, 2, c).astype(np.float32)
    alpha[rng.random(c) < 0.1] = 0
    bn = BatchNorm2d(c).eval()
    bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var = random_bn_params(rng, c, alpha)
    threshold, flip = C.sign_thresholds(alpha, C.bn_affine(bn), c_in)
    np.testing.assert_array_equal(flip, alpha * bn.weight.data < 0)
    bound = 9 * c_in
    s = np.arange(-bound, bound + 1, dtype=np.int32)
    # reference: the float layers themselves on every integer sum, one per image
    sums = np.broadcast_to(s[:, None, None, None], (s.size, c, 1, 1))
    conv_out = sums.astype(np.float32) * alpha[:, None, None]
    expected = sign(bn.forward(np.ascontiguousarray(conv_out))) > 0
    bits = popcount.apply_thresholds(np.ascontiguousarray(sums), threshold, flip)
    np.testing.assert_array_equal(bits.astype(bool), expected)


@pytest.mark.parametrize("conv_cls", [BinaryConv2d, SubBitConv2d])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_bn_sign_chain_runs_on_thresholds(conv_cls, stride):
    rng = np.random.default_rng(stride)
    conv = conv_cls(20, 12, stride=stride, binary_act=True, rng=rng)
    bn = BatchNorm2d(12)
    randomize_bn(bn, rng)
    bn.weight.data[::4] *= -1
    bn.eval()
    x = rng.standard_normal((4, 20, 10, 10)).astype(np.float32)
    expected = sign(bn.forward(conv.forward(x))) > 0
    compiled = C.compile_conv("chain", conv, bn, 10, 10, thresholds=True)
    assert compiled.layer.threshold is not None and compiled.layer.flip.any()
    np.testing.assert_array_equal(compiled.sign_bits(x).astype(bool), expected)
    assert 0 < expected.mean() < 1


# ------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("quant,act,tau,what", [
    ("fp", "real", None, "full-precision"),
    ("bnn", "real", None, "real activations"),
    ("snn", "real", 5, "real activations"),
])
def test_non_binary_checkpoints_are_refused_naming_the_layer(tmp_path, capsys, quant, act, tau,
                                                             what):
    path = save_model(tmp_path / "m.npz", models.resnet20(quant, act, tau=tau))
    with pytest.raises(ValueError, match=f"layer1.0.conv1.*{what}"):
        C.compile_checkpoint(path)
    assert infer.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "layer1.0.conv1" in err and what in err and "Traceback" not in err


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path, capsys):
    assert infer.main([str(tmp_path / "none.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert infer.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable checkpoint" in err


def test_export_writes_every_compiled_layer(tmp_path):
    path = save_model(tmp_path / "m.npz", random_model("snn", "binary", 5, 0))
    assert export.main(["--rom", str(path), "--out", str(tmp_path / "rom")]) == 0
    manifest = json.loads((tmp_path / "rom" / "manifest.json").read_text())
    assert len(manifest["layers"]) == 18
    layer = export.read_layer(tmp_path / "rom", "layer3.2.conv2")
    np.testing.assert_array_equal(layer.kernel_codes,
                                  C.compile_checkpoint(path).layers[-1].kernel_codes)


# ------------------------------------------------------------------ trained models

@pytest.mark.parametrize("quant", ["bnn", "snn"])
def test_trained_model_agrees_on_all_10000_test_images(trained, cifar, quant):
    model = ckpt.load_model(trained[quant])
    compiled = C.compile_model(model)
    result = infer.compare(model, compiled, cifar["x_test"], cifar["y_test"], batch_size=500)
    assert result["images"] == 10000
    assert result["differing_predictions"] == 0, result
    assert result["exactly_equal_logits"] == 10000, result
    assert result["max_abs_logit_difference"] == 0
    assert result["int_accuracy"] == result["float_accuracy"]


# ------------------------------------------------------------------ ReActNet blocks

def random_reactnet(arch, quant, tau, seed, **kw):
    model = getattr(models, arch)(quant, "binary", tau=tau, seed=seed, block="reactnet", **kw)
    rng = np.random.default_rng(seed + 200)
    for name, p in model.named_parameters():
        if name.endswith(("move0.bias", "move1.bias", "move2.bias")):
            p.data = rng.normal(0, 0.4, p.data.shape).astype(np.float32)
        elif name.endswith("prelu.weight"):
            p.data = rng.uniform(-0.5, 1.5, p.data.shape).astype(np.float32)
    for _, module in model.named_modules():
        if isinstance(module, BatchNorm2d):
            randomize_bn(module, rng)
    return model.eval()


@pytest.mark.parametrize("quant,tau", BINARY_MODES + [("snn", 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_reactnet_resnet20_compiles_to_the_float_logits(quant, tau, seed):
    model = random_reactnet("resnet20", quant, tau, seed)
    compiled = C.compile_model(model)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((10, 3, 32, 32)) * rng.uniform(0.2, 3)).astype(np.float32)
    x[0, :, :4] = 0.0  # exact zeros and shifts of either sign: the sign test's edge cases
    expected = model.forward(x)
    assert np.ptp(expected, axis=0).min() > 0
    np.testing.assert_array_equal(compiled.predict(x), expected)
    assert [lay.name for lay in compiled.layers][:2] == ["layer1.0.binary_conv", "layer1.1.binary_conv"]
    assert len(compiled.layers) == 18 and all(lay.tau == tau for lay in compiled.layers)


def test_reactnet_resnet18_compiles_to_the_float_logits():
    """The authors' ImageNet layout (7x7 stem, max pool, 4 x 4 blocks), narrow
    enough to run here, on 64x64 images."""
    model = random_reactnet("resnet18", "snn", 5, 3, num_classes=7)
    compiled = C.compile_model(model, input_size=64)
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(compiled.predict(x), model.forward(x))
    assert len(compiled.layers) == 16 and compiled.layers[-1].c_in == 512


@pytest.mark.parametrize("shift_sign", [1, -1])
def test_shifted_sign_packing_matches_shift_then_bitpack(shift_sign):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 70, 7, 9)).astype(np.float32)
    shift = (shift_sign * rng.uniform(0, 1, 70)).astype(np.float32)
    x[:, :, 0, 0] = -shift[None, :]  # x + shift exactly 0: sign +1
    shifted = np.empty_like(x)
    from minisnn import functional as F
    F.channel_affine(x, np.ones(70, np.float32), shift, shifted)
    np.testing.assert_array_equal(C.sign_pack(x, shift), bitpack.pack_activations(shifted))
    for stride in (1, 2):
        np.testing.assert_array_equal(C.sign_patch_codes(x, stride, shift),
                                      bitpack.patch_codes(shifted, stride))


def test_step_one_models_are_refused_naming_the_layer():
    model = models.resnet20("fp", "binary", block="reactnet").eval()
    with pytest.raises(ValueError, match="layer layer1.0.binary_conv: SignInputConv2d has "
                                         "full-precision weights"):
        C.compile_model(model)


@pytest.mark.parametrize("quant,tau", BINARY_MODES)
def test_reactnet_checkpoint_exports_its_roms(tmp_path, quant, tau):
    model = random_reactnet("resnet20", quant, tau, 5)
    path = save_model(tmp_path / "m.npz", model)
    assert export.main(["--rom", str(path), "--out", str(tmp_path / "rom")]) == 0
    layers = C.compile_model(model).layers
    manifest = json.loads((tmp_path / "rom" / "manifest.json").read_text())
    assert [e["name"] for e in manifest["layers"]] == [lay.name for lay in layers]
    for lay in (layers[0], layers[6], layers[-1]):
        back = export.read_layer(tmp_path / "rom", lay.name)
        np.testing.assert_array_equal(back.kernel_codes, lay.kernel_codes)
        np.testing.assert_array_equal(back.scale, lay.scale)
        np.testing.assert_array_equal(back.shift, lay.shift)
        assert back.stride == lay.stride and back.tau == lay.tau


def test_capture_sees_a_reactnet_conv_input_as_signs():
    model = random_reactnet("resnet20", "snn", 5, 2)
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    inp, out = C.capture(model, "layer2.1.binary_conv", x)
    assert inp.shape == (1, 32, 16, 16) and set(np.unique(inp)) <= {-1.0, 1.0}
    layer = C.compile_model(model).layers[7]
    assert layer.name == "layer2.1.binary_conv"
    alpha = model.layer2[1].binary_conv.binary_weight()[1]
    sums = popcount.snn_conv3x3_codes(C.sign_patch_codes(inp, 1), bitpack.tap_masks(16, 16, 1),
                                      layer.codebook, layer.idx)
    np.testing.assert_array_equal(sums.astype(np.float32) * alpha[None, :, None, None], out)
