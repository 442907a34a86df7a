import json

import numpy as np
import pytest

from minisnn import models, summary
from minisnn.checkpoint import save_checkpoint


def hand_count(stem, binary, shortcuts, fc, bn_channels, tau):
    """Bits and Dot9 counts written out from layer shapes, independently of summary.py.

    ``binary``: (c_out, c_in, out_h) of every binary 3x3 conv (square maps);
    ``stem``/``shortcuts``: weight counts of full-precision convs; ``fc``: (out, in).
    """
    fp_params = stem + sum(shortcuts) + fc[0] * fc[1] + fc[0] + 2 * sum(bn_channels)
    kernels = sum(co * ci for co, ci, _ in binary)
    return {
        "fp_bits": 32 * (fp_params + 9 * kernels),
        "bnn_bits": 32 * fp_params + 9 * kernels,
        "snn_bits": 32 * fp_params + tau * kernels + len(binary) * 9 * 2 ** tau,
        "bnn_dot9": sum(co * ci * h * h for co, ci, h in binary),
        "snn_dot9": sum(2 ** tau * ci * h * h for co, ci, h in binary),
    }


def resnet20_by_hand(tau):
    binary = []
    for planes, h, c_first in ((16, 32, 16), (32, 16, 16), (64, 8, 32)):
        binary.append((planes, c_first, h))
        binary += [(planes, planes, h)] * 5
    bn = [16] + [16] * 6 + [32] * 6 + [64] * 6
    return hand_count(3 * 16 * 9, binary, [], (10, 64), bn, tau)


def resnet18_by_hand(tau):
    binary, shortcuts, bn = [], [], [64]
    c_in = 64
    for planes, h in ((64, 56), (128, 28), (256, 14), (512, 7)):
        binary += [(planes, c_in, h), (planes, planes, h), (planes, planes, h), (planes, planes, h)]
        bn += [planes] * 4
        if c_in != planes:
            shortcuts.append(planes * c_in)
            bn.append(planes)
        c_in = planes
    return hand_count(64 * 3 * 49, binary, shortcuts, (1000, 512), bn, tau)


@pytest.fixture(scope="module")
def resnet18_summary():
    return summary.summarize("resnet18", tau=5)  # a few seconds: share it


@pytest.mark.parametrize("arch,tau,hand", [("resnet20", 5, resnet20_by_hand),
                                           ("resnet20", 3, resnet20_by_hand),
                                           ("resnet18", 5, resnet18_by_hand)])
def test_totals_match_hand_computation(arch, tau, hand, resnet18_summary):
    s = resnet18_summary if arch == "resnet18" else summary.summarize(arch, tau=tau)
    t, h = s["totals"], hand(tau)
    assert t["fp_bytes"] * 8 == h["fp_bits"]
    assert t["bnn_bytes"] * 8 == h["bnn_bits"]
    assert t["snn_bytes"] * 8 == h["snn_bits"]
    assert t["bnn_dot9"] == h["bnn_dot9"] and t["snn_dot9"] == h["snn_dot9"]
    assert t["compression_bnn_over_snn"] == pytest.approx(h["bnn_bits"] / h["snn_bits"])
    assert t["dot9_reduction"] == pytest.approx(h["bnn_dot9"] / h["snn_dot9"])
    assert s["tau"] == tau and t["binary_layers"] == (18 if arch == "resnet20" else 16)


def test_resnet18_is_the_imagenet_model(resnet18_summary):
    model = models.resnet18("fp")
    # torchvision's resnet18 has 11,689,512 parameters (BN affine included)
    assert sum(p.data.size for p in model.parameters()) == 11_689_512
    s = resnet18_summary
    names = [r["name"] for r in s["layers"] if r["kind"] == "fp"]
    assert names == ["conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0",
                     "layer4.0.shortcut.0", "fc"]
    assert s["layers"][0]["output"] == [112, 112] and s["layers"][1]["input"] == [56, 56]
    assert s["totals"]["fp_macs"] == pytest.approx(1.81e9, rel=0.01)  # the known 1.8 GFLOPs


def test_imagenet_resnet_forward_backward_small():
    config = {"arch": "resnet18", "quant": "snn", "act": "binary", "tau": 2}
    model = models.ResNetImageNet(config, blocks=(1, 1, 1, 1), widths=(4, 8, 8, 16), num_classes=5)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (2, 5)
    assert model.backward(np.ones_like(out)).shape == x.shape


def test_model_and_tau_handling(tmp_path):
    snn = models.resnet20("snn", tau=4)
    assert summary.summarize(snn)["tau"] == 4
    with pytest.raises(ValueError, match="have tau=4, but tau=6 was asked"):
        summary.summarize(snn, tau=6)
    bnn = models.resnet20("bnn")
    s = summary.summarize(bnn, tau=6)
    assert s["tau"] == 6 and {r["kind"] for r in s["layers"]} == {"fp", "bnn"}
    assert summary.summarize(models.resnet20("fp"), tau=6)["totals"] == \
        summary.summarize("resnet20", tau=6)["totals"]
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        summary.summarize("vgg")


def test_table_is_aligned(resnet18_summary):
    text = summary.format_table(resnet18_summary)
    assert "layer4.1.conv2" in text and "conventions:" in text
    lines = text.splitlines()
    header = next(l for l in lines if l.startswith("layer "))
    row = next(l for l in lines if l.startswith("layer1.0.conv1"))
    assert len(row) == len(header)  # aligned columns


def test_cli_arch_checkpoint_and_json(tmp_path, capsys):
    summary.main(["resnet20", "--tau", "4"])
    assert "layer3.2.conv2" in capsys.readouterr().out
    model = models.resnet20("snn", tau=3)
    path = tmp_path / "snn.npz"
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"model": model.config})
    summary.main([str(path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["tau"] == 3 and data["arch"] == "resnet20"
    assert data["totals"] == summary.summarize(model)["totals"]
    with pytest.raises(SystemExit):
        summary.main(["nonexistent_arch"])
    assert "unknown architecture" in capsys.readouterr().err


def test_reactnet_models_count_the_same_binary_layers():
    """The ReActNet block runs its conv through a fused path; the accounting
    still sees every binary conv (forward hooks) with the basic block's shapes."""
    from minisnn import models
    basic = summary.summarize(models.resnet20("snn", "binary", tau=5))["totals"]
    react = summary.summarize(models.resnet20("snn", "binary", tau=5, block="reactnet"))["totals"]
    for key in ("binary_layers", "bnn_dot9", "snn_dot9", "binary_bnn_bits", "binary_snn_bits"):
        assert react[key] == basic[key], key
