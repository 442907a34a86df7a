"""The layer record: its kind is stated and checked, its arrays checked in one place."""

import dataclasses

import numpy as np
import pytest

from minisnn.export import random_layer
from minisnn.romlayer import BinaryConvLayer, check_codebook, check_layer


def _bnn(**change):
    fields = dict(name="conv", c_in=2, c_out=3, height=4, width=4, stride=1,
                  kernel_codes=np.arange(6, dtype=np.uint16).reshape(3, 2),
                  scale=np.ones(3, np.float32), shift=np.zeros(3, np.float32), kind="bnn")
    fields.update(change)
    return BinaryConvLayer(**fields)


@pytest.mark.parametrize("change,message", [
    (dict(kind="binary"), r"layer conv: kind must be one of \('bnn', 'subbit'\), found 'binary'"),
    (dict(kind=None), r"kind must be one of"),
    (dict(tau=5), r"layer conv: a bnn layer has no tau, found 5"),
    (dict(codebook=np.arange(4, dtype=np.uint16)), r"a bnn layer has no codebook or idx"),
    (dict(kind="subbit"), r"a subbit layer needs tau, an integer in 1\.\.9, found None"),
    (dict(kind="subbit", tau=10), r"found 10"),
    (dict(kind="subbit", tau=True), r"found True"),
    (dict(kind="subbit", tau=2.0), r"found 2\.0"),
])
def test_a_record_whose_kind_disagrees_with_its_fields_cannot_be_built(change, message):
    with pytest.raises(ValueError, match=message):
        _bnn(**change)


def test_replace_checks_the_kind_again():
    layer = random_layer(np.random.default_rng(0), 2, 3, 2)
    with pytest.raises(ValueError, match="a bnn layer has no tau"):
        dataclasses.replace(layer, kind="bnn")
    bnn = dataclasses.replace(layer, kind="bnn", tau=None, codebook=None, idx=None)
    check_layer(bnn)


@pytest.mark.parametrize("edit,message", [
    (lambda l: dataclasses.replace(l, kernel_codes=l.kernel_codes[:, :1]), "kernel_codes must be"),
    (lambda l: dataclasses.replace(l, kernel_codes=l.kernel_codes.astype(np.float32)),
     "kernel_codes must be integer"),
    (lambda l: dataclasses.replace(l, stride=3), "stride must be one of"),
    (lambda l: dataclasses.replace(l, codebook=None), "a subbit layer needs its codebook and idx"),
    (lambda l: dataclasses.replace(l, codebook=l.codebook[:2]), r"codebook must have shape \(4,\)"),
    (lambda l: dataclasses.replace(l, idx=l.idx[:2]), r"idx must be an integer \(3, 2\) array"),
    (lambda l: dataclasses.replace(l, idx=l.idx + 4), r"idx must lie in \[0, 4\)"),
    (lambda l: dataclasses.replace(l, kernel_codes=(l.kernel_codes + 1) % 512),
     "kernel_codes differ from codebook\\[idx\\]"),
    (lambda l: dataclasses.replace(l, threshold=np.zeros(2, np.int32)), r"threshold must have shape"),
    (lambda l: dataclasses.replace(l, shift=np.full(3, np.nan, np.float32)), "shift holds NaN"),
])
def test_check_layer_names_the_layer_and_the_array(edit, message):
    layer = random_layer(np.random.default_rng(1), 2, 3, 2)
    check_layer(layer)
    with pytest.raises(ValueError, match=f"layer random: {message}"):
        check_layer(edit(layer))


def test_check_codebook_refuses_duplicates_sizes_and_stray_indices():
    idx = np.zeros((2, 3), np.uint16)
    with pytest.raises(ValueError, match=r"codebook must hold 4 distinct codes, found duplicates \[7\]"):
        check_codebook(np.array([7, 7, 1, 2], np.uint16), idx, 3)
    with pytest.raises(ValueError, match=r"codebook must hold 2\*\*tau codes \(tau 1\.\.9\), found 3"):
        check_codebook(np.array([1, 2, 3], np.uint16), idx, 3)
    with pytest.raises(ValueError, match="codebook must be uint16"):
        check_codebook(np.array([1, 2], np.int64), idx, 3)
    with pytest.raises(ValueError, match=r"idx must be an integer \(C_out, 4\) array"):
        check_codebook(np.array([1, 2], np.uint16), idx, 4)
    codebook, back = check_codebook(np.array([1, 2], np.uint16), idx, 3, 2)
    assert codebook.tolist() == [1, 2] and back is not None
