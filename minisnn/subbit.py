"""Sub-bit convolution: the space of 512 binary 3x3 kernels and its codes.

Kernel code convention (../shared/SNN-METHOD.md, used everywhere, RTL too):
code(k) = sum_j b_j 2^j with j = 3*row + col and b_j = 1 for +1, 0 for -1.
"""

import numpy as np

NUM_KERNELS = 512
_BIT_WEIGHTS = (1 << np.arange(9)).astype(np.int64)


def codes_to_kernels(codes, dtype=np.float32):
    """9-bit codes of any shape (...) -> kernels (..., 3, 3) of {-1, +1}."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= NUM_KERNELS):
        raise ValueError(f"kernel codes must lie in [0, 511], found {codes.min()}..{codes.max()}")
    bits = (codes[..., None].astype(np.int64) >> np.arange(9)) & 1
    return (2 * bits - 1).astype(dtype).reshape(codes.shape + (3, 3))


def kernels_to_codes(kernels):
    """Kernels (..., 3, 3) -> 9-bit codes (...) as uint16; sign(0) counts as +1."""
    kernels = np.asarray(kernels)
    if kernels.shape[-2:] != (3, 3):
        raise ValueError(f"kernels must end in (3, 3), found shape {kernels.shape}")
    bits = (kernels.reshape(kernels.shape[:-2] + (9,)) >= 0).astype(np.int64)
    return (bits @ _BIT_WEIGHTS).astype(np.uint16)


ALL_KERNELS = codes_to_kernels(np.arange(NUM_KERNELS))  # (512, 3, 3), row s has code s
