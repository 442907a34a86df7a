"""Every shipped pretrained model (walkthrough/models/) reproduces its manifest's figures."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from minisnn import compile as C
from minisnn import infer, train
from minisnn.checkpoint import load_checkpoint, load_model

MODELS = Path(__file__).resolve().parents[1] / "walkthrough" / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text()) if (MODELS / "manifest.json").is_file() else {}


def test_models_are_shipped_within_the_size_budget():
    assert MANIFEST, f"no pretrained model in {MODELS}: run walkthrough/publish.py"
    files = [MODELS / e["file"] for e in MANIFEST.values()]
    assert sum(f.stat().st_size for f in files) < 25 * 2 ** 20
    assert sorted(f.name for f in MODELS.glob("*.npz")) == sorted(f.name for f in files)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_shipped_model_reproduces_its_test_accuracy(name, cifar):
    entry = MANIFEST[name]
    path = MODELS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
    _, config = load_checkpoint(path)
    assert config["metrics"]["mode"] == entry["mode"]
    model = load_model(path)
    x, y = cifar["x_test"], cifar["y_test"]
    _, acc = train.evaluate(model, x, y)  # as training measured it: eval mode, batches of 500
    assert round(acc * len(y)) == entry["test_correct"], (name, acc)
    assert round(100 * acc, 2) == entry["test_accuracy"]
    if config["model"]["act"] == "binary" and config["model"]["quant"] != "fp":
        compiled = C.compile_model(model)
        np.testing.assert_array_equal(infer.logits_in_batches(compiled.predict, x),
                                      infer.logits_in_batches(model.eval().forward, x))
