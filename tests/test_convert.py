"""minisnn.convert: the sub-bit authors' PyTorch checkpoints as minisnn models.

The fixtures (tests/fixtures, written by scripts/make_torch_fixtures.py) are
the authors' ReActNet ResNet-18 layout at widths 4/8/16/32 with 10 classes,
with the PyTorch logits of a fixed input in logits.npz.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest

from minisnn import convert, models, torchfile
from minisnn.checkpoint import load_checkpoint, load_model, restore_module
from minisnn.quant import BinaryConv2d, SignInputConv2d
from minisnn.subbit import (SubBitConv2d, codes_to_kernels, nearest_kernels,
                            nearest_kernels_float32)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# file -> (quant, tau), as scripts/make_torch_fixtures.py made them
CHECKPOINTS = {"reactnet_tau4.zip.pth": ("snn", 4), "reactnet_tau5.legacy.pth": ("snn", 5),
               "reactnet_tau6.zip.pth": ("snn", 6), "reactnet_step1.legacy.pth": ("fp", None),
               "reactnet_bnn.zip.pth": ("bnn", None)}
CONV_TYPES = {"snn": SubBitConv2d, "bnn": BinaryConv2d, "fp": SignInputConv2d}


def read(name):
    path = FIXTURES / name
    return convert.read_state(torchfile.load(path), path)


def converted(name):
    state, _ = read(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tau-4 fixture warns by design (tested below)
        return convert.convert(state, name)


def assert_logits_match(model, name):
    """Within 1e-4 of the largest PyTorch logit (float32 sums in another order)."""
    stored = np.load(FIXTURES / "logits.npz")
    ref = stored[name]
    out = model.forward(stored["x"].copy())
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_float_logits_equal_pytorch(name):
    model = converted(name)
    quant, tau = CHECKPOINTS[name]
    config = model.config
    assert (config["quant"], config["tau"], config["act"], config["block"]) == \
        (quant, tau, "binary", "reactnet")
    assert config["widths"] == [4, 8, 16, 32] and config["num_classes"] == 10
    convs = [m for n, m in model.named_modules() if n.endswith("binary_conv")]
    assert len(convs) == 16 and all(type(m) is CONV_TYPES[quant] for m in convs)
    assert_logits_match(model, name)


@pytest.mark.parametrize("name", ["reactnet_tau5.legacy.pth", "reactnet_tau4.zip.pth"])
def test_codebooks_are_the_patterns_and_their_signs_in_file_order(name):
    state, _ = read(name)
    model = converted(name)
    for key, patterns in state.items():
        if not key.endswith("binarize.patterns"):
            continue
        layer = dict(model.named_modules())[key[:-len(".binarize.patterns")]]
        np.testing.assert_array_equal(layer.codebook.weight.data, patterns)
        signs = np.where(patterns >= 0, 1, -1).reshape(-1, 3, 3)  # row-major 3x3, 0 -> +1
        np.testing.assert_array_equal(codes_to_kernels(layer.codebook.codes), signs)
        # the authors' assignment: nearest codebook kernel, ties to the lowest row
        w = layer.weight.data.reshape(-1, 9).astype(np.float64)
        dist = ((w[:, None, :] - signs.reshape(1, -1, 9)) ** 2).sum(axis=2)
        np.testing.assert_array_equal(layer.idx.ravel(), dist.argmin(axis=1))


def test_tau9_patterns_act_as_the_sign_bnn():
    """All 512 kernels in any row order (the authors' bit_num=9): each latent
    kernel's nearest is its own sign, so the model equals the BNN reading."""
    state, _ = read("reactnet_tau5.legacy.pth")
    rng = np.random.default_rng(0)
    bnn_state = {k: v for k, v in state.items() if not k.endswith("binarize.patterns")}
    for key in [k for k in state if k.endswith("binarize.patterns")]:
        signs = codes_to_kernels(rng.permutation(512)).reshape(512, 9)
        state[key] = (signs * rng.uniform(0.01, 3, (512, 9))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near ties: latent weights with a component near 0
        snn = convert.convert(state, "tau9")
    bnn = convert.convert(bnn_state, "bnn", sign_weights=True)
    assert snn.config["tau"] == 9 and bnn.config["quant"] == "bnn"
    x = np.load(FIXTURES / "logits.npz")["x"]
    np.testing.assert_array_equal(snn.forward(x.copy()), bnn.forward(x.copy()))


def test_tiny_and_zero_pattern_entries_warn():
    state, _ = read("reactnet_tau4.zip.pth")
    with pytest.warns(UserWarning, match=r"62 pattern entries in 16 layers .* \+1 for the 16 "
                                         "exact zeros"):
        convert.convert(state, "tau4")
    state, _ = read("reactnet_tau5.legacy.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert.convert(state, "tau5")


def near_tied_state():
    """The tau-5 fixture with latent kernel (1, 2) of layer1.2 put between two
    codebook rows a and b (0.05 where they agree, 0 where they differ: equally
    near both, and nearer than any other row when no other row agrees with
    them where they agree), then moved ulp by ulp towards b until the exact
    and float32 rules disagree on it (float32's equal norms keep a, the lower
    row): ``(state, (exact's row, float32's row))``."""
    state, _ = read("reactnet_tau5.legacy.pth")
    kernels = np.where(state["layer1.2.binary_conv.binarize.patterns"] >= 0, 1.0, -1.0)
    for a, b in zip(*np.triu_indices(len(kernels), 1)):
        same = kernels[a] == kernels[b]
        if (kernels[:, same] == kernels[a, same]).all(axis=1).sum() == 2:
            break
    kernel = np.where(same, 0.05 * kernels[a], 0).astype(np.float32)
    j = np.flatnonzero(~same)[0]
    for _ in range(64):
        rules = (nearest_kernels(kernel[None], kernels)[0],
                 nearest_kernels_float32(kernel[None], kernels)[0])
        if rules[0] != rules[1]:
            break
        kernel[j] = np.nextafter(kernel[j], np.float32(kernels[b, j]))
    assert rules == (b, a)
    w = state["layer1.2.binary_conv.weight"].copy()
    w[1, 2] = kernel.reshape(3, 3)
    state["layer1.2.binary_conv.weight"] = w
    return state, rules


@pytest.mark.parametrize("assign", ["float32", "exact"])
def test_kernels_the_rules_assign_differently_are_counted_and_warned(assign):
    state, (exact, float32) = near_tied_state()
    with pytest.warns(UserWarning, match=r"1 kernels in 1 layers \(first "
                                         r"layer1.2.binary_conv: 1\).*this model uses " + assign):
        model = convert.convert(state, "tau5", assign=assign)
    conv = model.layer1[2].binary_conv
    assert conv.codebook.rule == assign and model.config["snn_options"] == {"assign": assign}
    assert conv.idx[1, 2] == (float32 if assign == "float32" else exact)
    assert convert.rule_differences(model) == {
        name: int(name == "layer1.2.binary_conv") for name, m in model.named_modules()
        if isinstance(m, SubBitConv2d)}
    with pytest.raises(ValueError, match="unknown assignment rule 'float64'"):
        convert.convert(state, "tau5", assign="float64")


def test_the_rule_travels_with_the_checkpoint(tmp_path):
    """load_model, the integer engine and the kernel codes (kernels, export
    --rom) of a saved conversion assign by the rule it was converted with."""
    from minisnn.checkpoint import save_inference
    from minisnn.compile import compile_model
    from minisnn.subbit import binary_kernel_codes
    state, (exact, float32) = near_tied_state()
    for assign, row in (("float32", float32), ("exact", exact)):
        with pytest.warns(UserWarning, match="1 kernels in 1 layers"):
            model = convert.convert(state, "tau5", assign=assign)
        loaded = load_model(save_inference(tmp_path / f"{assign}.npz", model))
        conv = loaded.layer1[2].binary_conv
        assert conv.codebook.rule == assign and conv.idx[1, 2] == row
        assert binary_kernel_codes(conv)[1, 2] == conv.codebook.codes[row]
        compiled = compile_model(loaded, input_size=64)
        layer = next(c.layer for b in compiled.blocks for c in b.convs
                     if c.layer.name == "layer1.2.binary_conv")
        assert layer.idx[1, 2] == row


def test_zero_latent_weights_of_a_sign_conv_warn():
    state, _ = read("reactnet_bnn.zip.pth")
    w = state["layer2.1.binary_conv.weights"].copy()
    w[5] = 0
    state["layer2.1.binary_conv.weights"] = w
    with pytest.warns(UserWarning, match="'layer2.1.binary_conv.weights' has 1 latent weights "
                                         "of exactly 0"):
        convert.convert(state, "bnn")


def test_authors_layout_and_prefix():
    state, info = read("reactnet_tau5.legacy.pth")
    assert info == {"epoch": 256, "best_top1_acc": 61.25}
    assert all(not k.startswith("module.") for k in state)
    bare, info = read("reactnet_tau6.zip.pth")
    assert info == {} and "conv1.weight" in bare


def test_sign_weights_reads_step1_convs_as_a_bnn():
    state, _ = read("reactnet_step1.legacy.pth")
    model = convert.convert(state, "step1", sign_weights=True)
    assert model.config["quant"] == "bnn"
    conv = model.layer3[0].binary_conv
    assert isinstance(conv, BinaryConv2d)
    np.testing.assert_array_equal(conv.weight.data, state["layer3.0.binary_conv.weight"])


def edited(name, edit):
    state, _ = read(name)
    edit(state)
    return state


def torchvision_names(state):
    for key in [k for k in state if ".binary_conv." in k]:
        state[key.replace("binary_conv", "conv1")] = state.pop(key)


def duplicate_row(state, key):
    p = state[key].copy()
    p[1] = p[0]
    state[key] = p


@pytest.mark.parametrize("name, edit, match", [
    ("reactnet_tau5.legacy.pth",
     lambda s: s.__setitem__("layer4.4.move0.bias", np.zeros((1, 32, 1, 1), np.float32)),
     r"cannot place key 'layer4.4.move0.bias' \(shape \(1, 32, 1, 1\)\)"),
    ("reactnet_tau5.legacy.pth", lambda s: s.__setitem__("fc.weight", s["fc.weight"].T),
     r"'fc.weight' has shape \(32, 10\), expected \(classes, 32\)"),
    ("reactnet_tau5.legacy.pth", lambda s: s.pop("layer2.0.downsample.1.weight"),
     r"no key 'layer2.0.downsample.1.weight'.*\(8, 4, 1, 1\)"),
    ("reactnet_tau5.legacy.pth", lambda s: s.pop("layer3.2.binary_conv.binarize.patterns"),
     r"'layer3.2.binary_conv.weight' makes layer3.2 a fp conv, but layer1.0 is snn of tau 5"),
    ("reactnet_tau5.legacy.pth",
     lambda s: s.__setitem__("layer2.1.binary_conv.binarize.patterns",
                             s["layer3.0.binary_conv.binarize.patterns"][:16]),
     r"'layer2.1.binary_conv.binarize.patterns' makes layer2.1 a snn conv of tau 4"),
    ("reactnet_tau5.legacy.pth",
     lambda s: s.__setitem__("layer1.0.binary_conv.binarize.patterns",
                             np.ones((24, 9), np.float32)),
     r"'layer1.0.binary_conv.binarize.patterns' has shape \(24, 9\), expected \(2\^tau, 9\)"),
    ("reactnet_tau5.legacy.pth",
     lambda s: duplicate_row(s, "layer1.1.binary_conv.binarize.patterns"),
     r"'layer1.1.binary_conv.binarize.patterns' rows 0 and 1 have the same sign pattern"),
    ("reactnet_step1.legacy.pth", lambda s: s.pop("conv1.weight"), r"no key 'conv1.weight'"),
    ("reactnet_step1.legacy.pth", torchvision_names,
     r"no block conv .* layer1's first key is 'layer1.0.move0.bias'"),
    ("reactnet_step1.legacy.pth",
     lambda s: s.__setitem__("conv1.weight", np.zeros((8, 3, 7, 7), np.float32)),
     r"'conv1.weight' has 8 output channels, but layer1 is 4 wide"),
    ("reactnet_bnn.zip.pth",
     lambda s: s.__setitem__("layer1.0.binary_conv.weights", np.zeros((143, 1), np.float16)),
     r"'layer1.0.binary_conv.weights' has shape \(143, 1\).*expected \(4, 4, 3, 3\)"),
    ("reactnet_bnn.zip.pth",
     lambda s: s.__setitem__("layer3.1.prelu.weight", np.array([np.nan] * 16, np.float16)),
     r"'layer3.1.prelu.weight' holds 16 values that are NaN or infinite"),
    ("reactnet_bnn.zip.pth",
     lambda s: s.__setitem__("layer1.0.bn1.running_mean", np.zeros(4, np.int64)),
     r"'layer1.0.bn1.running_mean' has shape \(4,\) and dtype int64, expected \(4,\) float"),
])
def test_refuses_naming_the_first_key_it_cannot_place(name, edit, match):
    with pytest.raises(ValueError, match=match):
        convert.convert(edited(name, edit), "ckpt")


def test_read_state_refuses_other_objects():
    with pytest.raises(ValueError, match=r"neither the authors' checkpoint.*found \['meta', "
                                         r"'tensors'\]"):
        convert.read_state(torchfile.load(FIXTURES / "tensors.zip.pth"), "t")
    with pytest.raises(ValueError, match="found list"):
        convert.read_state([1, 2], "t")
    with pytest.raises(ValueError, match="'state_dict' is a list"):
        convert.read_state({"state_dict": []}, "t")
    with pytest.raises(ValueError, match="entry 'a' is a int, not a tensor"):
        convert.read_state({"state_dict": {"a": 1}}, "t")


def test_cli_writes_a_checkpoint_of_the_same_model(tmp_path, capsys):
    name = "reactnet_tau5.legacy.pth"
    out = tmp_path / "model.npz"
    assert convert.main([str(FIXTURES / name), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ReActNet Bi-Real ResNet-18 (tau=5 W/1A)" in text
    assert "layer4.3.binary_conv" in text and "tau=5" in text and f"wrote {out}" in text
    assert "kernel assignment: float32 (float32 distances, as PyTorch on a CPU)" in text
    arrays, config = load_checkpoint(out)
    assert config["epoch"] == 256 and config["best_top1_acc"] == 61.25
    assert config["model"]["snn_options"] == {"assign": "float32"}
    assert config["converted_from"].endswith(name)
    model = models.build_model(config["model"])
    restore_module(model, arrays, out)
    assert_logits_match(model.eval(), name)


@pytest.mark.parametrize("assign", ["float32", "exact"])
def test_load_model_rebuilds_a_reduced_width_conversion(tmp_path, assign):
    """Either rule gives PyTorch's logits here: the small fixtures hold no kernel
    the rules assign differently (scripts/make_torch_fixtures.py checks)."""
    out = tmp_path / "model.npz"
    assert convert.main([str(FIXTURES / "reactnet_tau6.zip.pth"), "--out", str(out),
                         "--assign", assign]) == 0
    model = load_model(out)
    assert {m.codebook.rule for _, m in model.named_modules()
            if isinstance(m, SubBitConv2d)} == {assign}
    assert_logits_match(model, "reactnet_tau6.zip.pth")


def test_cli_refusals_exit_2(tmp_path, capsys):
    for target, match in [(FIXTURES / "tensors.zip.pth", "neither the authors' checkpoint"),
                          (tmp_path / "missing.pth", "not found")]:
        with pytest.raises(SystemExit) as exc:
            convert.main([str(target), "--out", str(tmp_path / "x.npz")])
        assert exc.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("name", [n for n, (quant, _) in CHECKPOINTS.items() if quant != "fp"])
def test_integer_engine_equals_the_converted_float_model(name):
    """The converted binary and sub-bit models compile to the integer engine,
    whose logits equal minisnn's float model bit for bit."""
    from minisnn.compile import compile_model
    model = converted(name).eval()
    x = np.load(FIXTURES / "logits.npz")["x"]
    compiled = compile_model(model, input_size=x.shape[-1])
    np.testing.assert_array_equal(compiled.predict(x), model.forward(x))
    assert len(compiled.layers) == 16


def test_a_full_width_conversion_runs_a_512_channel_conv_on_the_verilog_engines(tmp_path):
    """A full-width tau=5 ResNet-18 in the authors' layout (made here from a
    minisnn model, so no 134 MB file ships) converts, exports its ROMs, and a
    512->512 layer4 conv read back from them (2x2 positions: 64x64 images) runs
    on the BNN and sub-bit Verilog engines equal to the integer engine."""
    from minisnn import compile as C
    from minisnn import export, rtlmodel, rtlsim
    source = models.resnet18("snn", "binary", tau=5, block="reactnet", num_classes=10, seed=3)
    state = {}
    for key, value in source.state_dict().items():
        if key.endswith((".codebook.codes", ".codebook.seed", ".codebook.step", ".binary_conv.idx")):
            continue
        state[key.replace(".binary_conv.codebook.weight", ".binary_conv.binarize.patterns")] = value
    with pytest.warns(UserWarning, match=r"kernels in \d+ layers .* uses float32"):
        model = convert.convert(state, "full-width")  # latent weights near 0: near ties
    assert model.config["widths"] == [64, 128, 256, 512] and model.config["tau"] == 5
    compiled = C.compile_model(model, input_size=64)
    name = "layer4.1.binary_conv"
    conv = next(c for b in compiled.blocks for c in b.convs if c.layer.name == name)
    entry = export.export_layer(conv.layer, tmp_path / "rom")
    export.write_manifest(tmp_path / "rom", [entry])
    layer = export.read_layer(tmp_path / "rom", name)  # what the simulation reads
    assert (layer.c_in, layer.c_out, layer.height, layer.width) == (512, 512, 2, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    signs, _ = C.capture(model, name, x)
    engine_sums = conv.sums(signs)[0]  # sign(+-1) is itself: the integer engine's sums
    codes = rtlmodel.codes_from_signs(signs[0])
    for cfg in (rtlmodel.EngineConfig("bnn", lanes=16, dot9=16),
                rtlmodel.EngineConfig("snn", lanes=64, dot9=16)):
        sim = rtlsim.check_rom(tmp_path / "rom", name, codes, cfg)  # golden and cycle model too
        np.testing.assert_array_equal(sim.sums[0], engine_sums)
