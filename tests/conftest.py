"""Fixtures shared by several test modules: real CIFAR-10 and briefly trained
binary models (trained once per session; the RTL and compile tests reuse them)."""

from minisnn import runtime

runtime.tune_process()  # as the command-line tools do, before numpy and numba load

import numpy as np  # noqa: E402
import pytest

from minisnn import data as D  # noqa: E402
from minisnn import train  # noqa: E402

@pytest.fixture(scope="session")
def cifar():
    """The whole CIFAR-10, found as the command-line tools find it (MINISNN_DATA,
    ../shared/data/, else the checksum-checked download of the official
    release; decoded once into the cache)."""
    d = D.load_cifar10(progress=False)
    assert d["x_test"].shape == (10000, 32, 32, 3)
    return d


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cifar):
    """A 1W/1A and a tau=5 W/1A ResNet-20 trained briefly (10 Adam steps) on real images."""
    root = tmp_path_factory.mktemp("compile")
    source = root / "cifar-small.npz"
    x_train, y_train = D.take_subset(cifar["x_train"], cifar["y_train"], 500)
    x_test, y_test = D.take_subset(cifar["x_test"], cifar["y_test"], 50)
    np.savez(source, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    paths = {}
    for quant in ("bnn", "snn"):
        out = root / quant
        assert train.main(["--quant", quant, "--act", "binary", "--tau", "5", "--epochs", "1",
                           "--batch-size", "50", "--optimizer", "adam", "--lr", "0.005",
                           "--warmup-epochs", "0", "--data", str(source),
                           "--out", str(out), "--quiet"]) == 0
        paths[quant] = out / "checkpoint.npz"
    return paths
