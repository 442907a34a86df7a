import json

import numpy as np
import pytest
from PIL import Image

from minisnn import kernels, models
from minisnn.checkpoint import save_checkpoint
from minisnn.subbit import kernels_to_codes


def test_histogram_counts_every_code():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 512, (7, 11))
    counts = kernels.kernel_histogram(codes)
    assert counts.shape == (512,) and counts.sum() == 77
    values, n = np.unique(codes, return_counts=True)
    np.testing.assert_array_equal(counts[values], n)
    assert np.count_nonzero(counts) == len(values)
    with pytest.raises(ValueError, match=r"\[0, 511\], found 0..512"):
        kernels.kernel_histogram([0, 512])


def test_coverage_by_hand():
    counts = np.zeros(512, int)
    counts[[3, 40, 41, 500]] = [10, 5, 3, 2]  # 20 kernels
    assert kernels.coverage(counts, 1) == pytest.approx(15 / 20)  # top 2: 10 + 5
    assert kernels.coverage(counts, 2) == 1.0
    counts[range(100, 120)] = 1  # 20 singletons, 40 kernels: top 2 unchanged, top 8 adds 4
    assert kernels.coverage(counts, 1) == pytest.approx(15 / 40)
    assert kernels.coverage(counts, 3) == pytest.approx(24 / 40)
    with pytest.raises(ValueError, match="empty histogram"):
        kernels.coverage(np.zeros(512), 4)
    with pytest.raises(ValueError, match=r"shape \(512,\), found \(9,\)"):
        kernels.coverage(np.ones(9), 4)


def test_layer_statistics_bnn_and_snn():
    bnn = models.resnet20("bnn")
    stats = kernels.layer_statistics(bnn, taus=(4, 5))
    assert len(stats) == 18
    w = bnn.layer2.layers[1].conv1.weight.data
    s = stats["layer2.1.conv1"]
    np.testing.assert_array_equal(s["counts"], np.bincount(kernels_to_codes(w).ravel(),
                                                           minlength=512))
    assert s["codebook"] is None and s["kernels"] == 32 * 32
    snn = models.resnet20("snn", tau=4)
    for name, s in kernels.layer_statistics(snn, taus=(4,)).items():
        assert s["distinct"] <= 16 and s["coverage"][4] == 1.0
        assert set(np.flatnonzero(s["counts"])) <= set(s["codebook"])
    with pytest.raises(ValueError, match="no binary 3x3 layer"):
        kernels.layer_statistics(models.resnet20("fp"))


def test_codebook_kernels_new_since_initialisation():
    # How far refinement moved a codebook: kernels not in the layer's initial random sample.
    snn = models.resnet20("snn", tau=4, seed=3)
    assert {s["codebook_new"] for s in kernels.layer_statistics(snn, taus=(4,)).values()} == {0}
    codebook = snn.layer2.layers[1].conv1.codebook
    codes = codebook.codes.copy()
    codes[[0, 5, 9]] = np.setdiff1d(np.arange(512), codes)[:3]
    codebook.set_codes(codes)
    stats = kernels.layer_statistics(snn, taus=(4,))
    assert stats["layer2.1.conv1"]["codebook_new"] == 3
    assert sum(s["codebook_new"] for s in stats.values()) == 3
    assert "3/16" in kernels.format_coverage(stats, taus=(4,))
    # 'frequent' codebooks start from a BNN the model does not know; a BNN has none
    frequent = models.resnet20("snn", tau=4, init="frequent")
    assert {s["codebook_new"] for s in kernels.layer_statistics(frequent, (4,)).values()} == {None}
    assert {s["codebook_new"] for s in kernels.layer_statistics(models.resnet20("bnn"), (4,)).values()} \
        == {None}


def test_cli_writes_png_and_json(tmp_path, capsys):
    paths = []
    for quant, tau in (("bnn", None), ("snn", 5)):
        model = models.resnet20(quant, tau=tau, seed=1)
        path = tmp_path / quant / "checkpoint.npz"  # same stem: names get the directory
        save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                        {"model": model.config})
        paths.append((path, model))
    out = tmp_path / "figs"
    kernels.main([str(p) for p, _ in paths] + ["--out", str(out)])
    text = capsys.readouterr().out
    assert "top 32 (tau=5)" in text and "layer3.2.conv2" in text
    for path, model in paths:
        name = f"{path.parent.name}_checkpoint"
        with Image.open(out / f"{name}_kernels.png") as im:
            assert im.width > 1000 and im.height > 1000  # 18 panels, 3 per row
        record = json.loads((out / f"{name}_coverage.json").read_text())
        direct = kernels.layer_statistics(model)
        for name, layer in record["layers"].items():
            assert layer["coverage"] == {str(t): c for t, c in direct[name]["coverage"].items()}
    assert record["layers"]["layer1.0.conv1"]["coverage"]["5"] == 1.0  # the SNN at tau = 5
    with pytest.raises(SystemExit):
        kernels.main([str(tmp_path / "missing.npz"), "--out", str(out)])
    assert "checkpoint file not found" in capsys.readouterr().err
