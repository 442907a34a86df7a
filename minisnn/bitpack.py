"""Packing of binary activations and kernels into bits, and 9-bit patch codes.

Bit orders (shared by the numba kernels, compile/export and the RTL):

- Activations, channel-packed: (N, C, H, W) of {-1, +1} -> uint64
  (N, H, W, ceil(C/64)); channel c is word c // 64, bit c % 64; 1 means +1;
  the unused high bits of the last word are 0.
- Weights, channel-packed: kernel codes (C_out, C_in) -> uint64
  (C_out, 3, 3, ceil(C_in/64)); tap (dy, dx) of kernel [o, i] is word
  i // 64, bit i % 64 at [o, dy, dx]; unused bits 0, so an XOR of
  activation and weight words is 0 there.
- Patch codes: (N, C, H, W) -> uint16 (N, C, Ho, Wo), the 9-bit code
  (minisnn.subbit convention, bit j = tap (j // 3, j % 3), 1 means +1) of
  each 3x3 window of a padding-1 conv; taps in the padding have bit 0.
  tap_masks gives per output position the 9-bit mask of in-bounds taps,
  so that dot(k, patch) = popcount(m) - 2 * popcount((k ^ patch) & m).
- Patch words (the integer engine's layout, :func:`patch_layout`): the
  3x3 x C bits of one window in a few uint32 words, so that a 16-channel
  layer fills each word, not 16 of 64 bits. Each tap's C channel bits form
  a field of ``field_bits`` bits (C rounded up to a power of two, or to
  whole words above 32); tap t, channel c lies in word
  (t // taps_per_word) * channel_words + c // 32 at bit
  (t % taps_per_word) * field_bits + c % 32. Unused bits are 0.
  :func:`pack_patch_weights` lays kernel codes out so; the engine builds
  the activation windows the same way (taps in the padding give 0).
"""

import numpy as np

from .functional import conv_output_size
from .subbit import NUM_KERNELS

WORD_BITS = 64
STRIDES = (1, 2)


def num_words(channels):
    """Number of uint64 words holding ``channels`` bits."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def check_stride(stride):
    if stride not in STRIDES:
        raise ValueError(f"stride must be one of {STRIDES}, found {stride!r}")
    return int(stride)


def check_nchw(a, name):
    a = np.asarray(a)
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), found shape {a.shape}")
    if min(a.shape) == 0:
        raise ValueError(f"{name} must not be empty, found shape {a.shape}")
    return a


def signs_to_bits(a, name="a"):
    """{-1, +1} int8 array, or real array by sign (x >= 0 -> +1) -> bool (1 = +1)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return a >= 0
    if a.dtype != np.int8:
        raise ValueError(f"{name} must be int8 in {{-1, +1}} or floating, found dtype {a.dtype}")
    if not np.all((a == 1) | (a == -1)):
        bad = np.unique(a[(a != 1) & (a != -1)])[:5]
        raise ValueError(f"{name} must hold only -1 and +1, found {bad.tolist()}")
    return a > 0


def check_codes(codes, name, ndim):
    """Validate an array of 9-bit codes: uint16, ``ndim`` dims, values < 512."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint16:
        raise ValueError(f"{name} must be uint16 9-bit codes, found dtype {codes.dtype}")
    if codes.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, found shape {codes.shape}")
    if codes.size and codes.max() >= NUM_KERNELS:
        raise ValueError(f"{name} must lie in [0, {NUM_KERNELS - 1}], found {codes.max()}")
    return codes


def _pack_last_axis(bits):
    """bool (..., C) -> uint64 (..., ceil(C/64)); bit c % 64 of word c // 64."""
    c = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (num_words(c) * WORD_BITS,), dtype=bool)
    padded[..., :c] = bits
    packed = np.packbits(padded, axis=-1, bitorder="little")
    # Byte k holds channels 8k..8k+7, so a little-endian view keeps bit c at c % 64.
    return packed.view("<u8").astype(np.uint64)


def _unpack_last_axis(words, c, name):
    """uint64 (..., words) -> bool (..., c); the unused high bits must be 0."""
    words = np.ascontiguousarray(words, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little").astype(bool)
    if bits[..., c:].any():
        raise ValueError(f"{name}: padding bits above channel {c} must be 0")
    return bits[..., :c]


def _check_packed(packed, name, ndim, channels):
    packed = np.asarray(packed)
    if packed.dtype != np.uint64 or packed.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D uint64, found {packed.ndim}-D {packed.dtype}")
    if packed.shape[-1] != num_words(channels):
        raise ValueError(f"{name} must have {num_words(channels)} words for {channels} channels, "
                         f"found {packed.shape[-1]}")
    return packed


def pack_activations(a):
    """(N, C, H, W) of {-1, +1} (int8) or real (by sign) -> uint64 (N, H, W, words)."""
    bits = signs_to_bits(check_nchw(a, "activations"), "activations")
    return _pack_last_axis(bits.transpose(0, 2, 3, 1))


def unpack_activations(packed, channels):
    """Inverse of :func:`pack_activations`: int8 {-1, +1} (N, C, H, W)."""
    packed = _check_packed(packed, "packed activations", 4, channels)
    bits = _unpack_last_axis(packed, channels, "packed activations")
    return (2 * bits.astype(np.int8) - 1).transpose(0, 3, 1, 2).copy()


def pack_weights(kernel_codes):
    """Kernel codes uint16 (C_out, C_in) -> uint64 (C_out, 3, 3, words)."""
    codes = check_codes(kernel_codes, "kernel_codes", 2)
    c_out, c_in = codes.shape
    bits = ((codes[..., None] >> np.arange(9, dtype=np.uint16)) & 1).astype(bool)
    return _pack_last_axis(bits.transpose(0, 2, 1).reshape(c_out, 3, 3, c_in))


PATCH_WORD_BITS = 32  # 16 positions per AVX-512 register, float epilogue included


def patch_layout(c_in):
    """(field_bits, taps_per_word, channel_words, words) of the patch-word layout
    for ``c_in`` channels (module docstring): 16 channels give (16, 2, 1, 5),
    32 give (32, 1, 1, 9), 70 give (96, 1, 3, 27)."""
    if c_in < 1:
        raise ValueError(f"c_in must be positive, found {c_in}")
    if c_in > PATCH_WORD_BITS:
        channel_words = -(-int(c_in) // PATCH_WORD_BITS)
        return PATCH_WORD_BITS * channel_words, 1, channel_words, 9 * channel_words
    field = 1 << (int(c_in) - 1).bit_length()
    taps = PATCH_WORD_BITS // field
    return field, taps, 1, -(-9 // taps)


def pack_patch_weights(kernel_codes):
    """Kernel codes uint16 (C_out, C_in) -> uint32 (C_out, words) in the
    patch-word layout of :func:`patch_layout`."""
    codes = check_codes(kernel_codes, "kernel_codes", 2)
    c_out, c_in = codes.shape
    field, taps, channel_words, words = patch_layout(c_in)
    packed = np.zeros((c_out, words), dtype=np.uint32)
    channels = np.arange(c_in)
    for t in range(9):
        bits = ((codes >> np.uint16(t)) & 1).astype(np.uint32)  # (C_out, C_in)
        word = (t // taps) * channel_words + channels // PATCH_WORD_BITS
        shift = ((t % taps) * field + channels % PATCH_WORD_BITS).astype(np.uint32)
        for w in np.unique(word):
            on = word == w
            packed[:, w] |= np.bitwise_or.reduce(bits[:, on] << shift[on], axis=1)
    return packed


def unpack_weights(packed, c_in):
    """Inverse of :func:`pack_weights`: uint16 kernel codes (C_out, C_in)."""
    packed = _check_packed(packed, "packed weights", 4, c_in)
    if packed.shape[1:3] != (3, 3):
        raise ValueError(f"packed weights must be (C_out, 3, 3, words), found {packed.shape}")
    bits = _unpack_last_axis(packed, c_in, "packed weights")  # (C_out, 3, 3, C_in)
    bits = bits.reshape(packed.shape[0], 9, c_in).astype(np.uint16)
    return (bits << np.arange(9, dtype=np.uint16)[:, None]).sum(axis=1, dtype=np.uint16)


def _windows(padded, ho, wo, stride):
    """The 9 tap views (row-major, tap j = (j // 3, j % 3)) of a padding-1 3x3 conv."""
    return [padded[..., dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]
            for dy in range(3) for dx in range(3)]


def _codes_from_bits(padded, ho, wo, stride):
    codes = np.zeros(padded.shape[:-2] + (ho, wo), dtype=np.uint16)
    for j, tap in enumerate(_windows(padded, ho, wo, stride)):
        codes |= tap.astype(np.uint16) << np.uint16(j)
    return codes


def output_size(size, stride):
    """Output height/width of a 3x3, padding 1 conv."""
    return conv_output_size(size, 3, check_stride(stride), 1)


def patch_codes(a, stride=1):
    """(N, C, H, W) of {-1, +1} (int8) or real (by sign) -> uint16 (N, C, Ho, Wo).

    Taps falling in the zero padding get bit 0; pair with :func:`tap_masks`.
    """
    bits = signs_to_bits(check_nchw(a, "activations"), "activations")
    n, c, h, w = bits.shape
    padded = np.zeros((n, c, h + 2, w + 2), dtype=bool)
    padded[:, :, 1:-1, 1:-1] = bits
    return _codes_from_bits(padded, output_size(h, stride), output_size(w, stride), stride)


def tap_masks(height, width, stride=1):
    """uint16 (Ho, Wo): bit j set where tap j of the window lies inside the input."""
    valid = np.zeros((height + 2, width + 2), dtype=bool)
    valid[1:-1, 1:-1] = True
    return _codes_from_bits(valid, output_size(height, stride), output_size(width, stride), stride)
