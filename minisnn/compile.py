"""Trained model -> integer inference engine (compiled binary layers).

The compiled model is plain data: export writes it out as ROMs, the
popcount kernels run it, the RTL harness checks Verilog against it.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class BinaryConvLayer:
    """One binary 3x3 conv (padding 1) with its folded batch norm.

    ``kernel_codes[o, i]`` is the 9-bit code of every kernel (for a sub-bit
    layer, ``codebook[idx[o, i]]``). The real output of conv + batch norm is
    ``scale[o] * s + shift[o]`` with ``s`` the integer sum; where a sign
    follows directly, the layer instead outputs bits ``s >= threshold[o]``
    (``s <= threshold[o]`` where ``flip[o]``).
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
    tau: Optional[int] = None  # None: plain BNN layer
    codebook: Optional[np.ndarray] = None  # uint16 (2**tau,)
    idx: Optional[np.ndarray] = None  # uint16 (c_out, c_in)
    threshold: Optional[np.ndarray] = None  # int32 (c_out,)
    flip: Optional[np.ndarray] = None  # bool (c_out,)

    @property
    def out_height(self):
        return (self.height - 1) // self.stride + 1

    @property
    def out_width(self):
        return (self.width - 1) // self.stride + 1
