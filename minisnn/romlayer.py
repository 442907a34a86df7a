"""The binary 3x3 layer record and the checks of its shapes and codes.

One record, :class:`BinaryConvLayer`, carries a layer from the integer
engine (minisnn.compile builds it) to the ROM files (minisnn.export writes
and reads it) and the Verilog engines (minisnn.rtlmodel, minisnn.rtlsim).
Its ``kind`` says what the weights are, never inferred from tau:

- ``"bnn"``: every kernel is a free 9-bit code (a BinaryConv2d);
- ``"subbit"``: every kernel is ``codebook[idx[o, i]]``, a codebook of
  2**tau distinct codes (a SubBitConv2d; at tau = 9 the codebook holds all
  512 kernels and the layer is still sub-bit).

Kernel codes: bit j = element (j // 3, j % 3), 1 = +1 (minisnn.subbit).
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .bitpack import STRIDES, check_codes
from .subbit import NUM_KERNELS

KINDS = ("bnn", "subbit")
TAU_RANGE = (1, 9)  # index bits of a sub-bit codebook: 2 .. 512 kernels


def check_kind(kind, tau, where):
    """ValueError naming ``where`` unless ``kind`` is one of KINDS and ``tau`` fits it:
    None for a bnn layer, an integer in 1..9 for a sub-bit one."""
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, found {kind!r}")
    if kind == "bnn" and tau is not None:
        raise ValueError(f"{where}: a bnn layer has no tau, found {tau!r}")
    low, high = TAU_RANGE
    if kind == "subbit" and not (isinstance(tau, (int, np.integer)) and not isinstance(tau, bool)
                                 and low <= tau <= high):
        raise ValueError(f"{where}: a subbit layer needs tau, an integer in {low}..{high}, "
                         f"found {tau!r}")


@dataclass
class BinaryConvLayer:
    """One binary 3x3 conv (padding 1) with its folded batch norm.

    ``kernel_codes[o, i]`` is the 9-bit code of every kernel (for a sub-bit
    layer, ``codebook[idx[o, i]]``). The real output of conv + batch norm is
    ``scale[o] * s + shift[o]`` with ``s`` the integer sum; where a sign
    follows directly, the layer instead outputs bits ``s >= threshold[o]``
    (``s <= threshold[o]`` where ``flip[o]``).

    Building a record checks its kind against tau, codebook and idx;
    :func:`check_layer` checks the arrays (export does, on writing and reading).
    """

    name: str
    c_in: int
    c_out: int
    height: int  # input height
    width: int  # input width
    stride: int
    kernel_codes: np.ndarray  # uint16 (c_out, c_in)
    scale: np.ndarray  # float32 (c_out,)
    shift: np.ndarray  # float32 (c_out,)
    kind: str  # "bnn" or "subbit" (KINDS)
    tau: Optional[int] = None  # sub-bit: codebook index bits
    codebook: Optional[np.ndarray] = None  # sub-bit: uint16 (2**tau,)
    idx: Optional[np.ndarray] = None  # sub-bit: uint16 (c_out, c_in)
    threshold: Optional[np.ndarray] = None  # int32 (c_out,)
    flip: Optional[np.ndarray] = None  # bool (c_out,)

    def __post_init__(self):
        check_kind(self.kind, self.tau, f"layer {self.name}")
        if self.kind == "bnn" and (self.codebook is not None or self.idx is not None):
            raise ValueError(f"layer {self.name}: a bnn layer has no codebook or idx")

    @property
    def out_height(self):
        return (self.height - 1) // self.stride + 1

    @property
    def out_width(self):
        return (self.width - 1) // self.stride + 1


def check_codebook(codebook, idx, c_in, c_out=None, where=None):
    """(codebook, idx) as arrays, or ValueError: ``codebook`` uint16 holding 2**tau
    distinct 9-bit codes (tau 1..9), ``idx`` an integer (C_out, c_in) array of
    indices into it (C_out = ``c_out`` when given). ``where`` prefixes messages."""
    at = f"{where}: " if where else ""
    try:
        codebook = check_codes(codebook, "codebook", 1)
    except ValueError as exc:
        raise ValueError(f"{at}{exc}") from None
    n_sub = codebook.shape[0]
    if n_sub < 2 or n_sub & (n_sub - 1) or n_sub > NUM_KERNELS:
        raise ValueError(f"{at}codebook must hold 2**tau codes (tau 1..9), found {n_sub}")
    values, counts = np.unique(codebook, return_counts=True)
    if values.size != n_sub:
        raise ValueError(f"{at}codebook must hold {n_sub} distinct codes, found duplicates "
                         f"{values[counts > 1].tolist()}")
    idx = np.asarray(idx)
    rows = "C_out" if c_out is None else c_out
    if (idx.dtype.kind not in "iu" or idx.ndim != 2 or idx.shape[1] != c_in or idx.shape[0] == 0
            or (c_out is not None and idx.shape[0] != c_out)):
        raise ValueError(f"{at}idx must be an integer ({rows}, {c_in}) array, found {idx.dtype} "
                         f"{idx.shape}")
    if idx.min() < 0 or idx.max() >= n_sub:
        raise ValueError(f"{at}idx must lie in [0, {n_sub}), found {idx.min()}..{idx.max()}")
    return codebook, idx


def check_layer(layer: BinaryConvLayer):
    """Shapes and ranges of a record's arrays, which the ROM format and the engines rely
    on; ValueError naming the layer."""
    name, shape = f"layer {layer.name}", (layer.c_out, layer.c_in)
    codes = np.asarray(layer.kernel_codes)
    if codes.shape != shape or codes.dtype.kind not in "iu":
        raise ValueError(f"{name}: kernel_codes must be integer codes of shape {shape}, found "
                         f"{codes.dtype} {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= NUM_KERNELS):
        raise ValueError(f"{name}: kernel_codes must lie in [0, {NUM_KERNELS - 1}], found "
                         f"{codes.min()}..{codes.max()}")
    if layer.stride not in STRIDES:
        raise ValueError(f"{name}: stride must be one of {STRIDES}, found {layer.stride}")
    if layer.kind == "subbit":
        if layer.codebook is None or layer.idx is None:
            raise ValueError(f"{name}: a subbit layer needs its codebook and idx")
        if np.shape(layer.codebook) != (2**layer.tau,):
            raise ValueError(f"{name}: codebook must have shape {(2**layer.tau,)} (tau "
                             f"{layer.tau}), found {np.shape(layer.codebook)}")
        codebook, idx = check_codebook(layer.codebook, layer.idx, layer.c_in, layer.c_out, name)
        if not np.array_equal(codebook[idx], codes):
            raise ValueError(f"{name}: kernel_codes differ from codebook[idx]")
    for field in ("scale", "shift", "threshold", "flip"):
        value = getattr(layer, field)
        if value is not None and np.shape(value) != (layer.c_out,):
            raise ValueError(f"{name}: {field} must have shape {(layer.c_out,)}, found "
                             f"{np.shape(value)}")
        if field in ("scale", "shift") and value is not None and np.isnan(value).any():
            raise ValueError(f"{name}: {field} holds NaN at output channel "
                             f"{int(np.flatnonzero(np.isnan(value))[0])}")
