"""Trained model -> integer inference engine (compiled binary layers).

The compiled model is plain data: its binary layers are
minisnn.romlayer.BinaryConvLayer records, which export writes out as ROMs
and the RTL harness checks Verilog against; the popcount kernels run it.

``compile_checkpoint(path)`` / ``compile_model(model)`` turn a ResNet with
binary activations (1W/1A or sub-bit W/1A; Bi-Real blocks in the CIFAR
ResNet, ReActNet blocks in the CIFAR or ImageNet ResNet) into a
CompiledModel whose ``predict`` returns the float eval-mode model's logits
bit for bit: each block conv runs as integer popcount sums
s = conv(sign(x + shift), B) on packed bits (sub-bit layers on their
decoded kernels codebook[idx]; ReActNet's learnable shift folds into the
sign test, else it is 0), and every float step around it (alpha multiply,
batch norm, shortcut add, Hardtanh or RPReLU, stem conv, pools,
classifier) computes the same float32 operations on the same arrays as the
float model. Each block runs fused, image by image (popcount.hardtanh_block,
popcount.rprelu_block). Where a batch norm feeds a sign
directly, conv + BN + sign fold into integer thresholds
(:func:`sign_thresholds`); the ResNet blocks add a shortcut first, so
there the records carry scale/shift only. CLI: ``python -m minisnn.infer``.
"""

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from numba import njit, prange

from . import bitpack, checkpoint, fastconv, popcount
from . import functional as F
from .models import ResNetCifar, ResNetImageNet
from .nn import AvgPool2d, Hardtanh, Identity, MaxPool2d, ShortcutA
from .quant import QuantConv2d
from .romlayer import BinaryConvLayer
from .subbit import SubBitConv2d, kernels_to_codes


# ------------------------------------------------------------------ float parts

@dataclass
class ChannelAffine:
    """An eval-mode batch norm as the float model applies it: x * scale[c] + shift[c]
    through minisnn.functional.channel_affine, with the same float32 arrays."""

    scale: np.ndarray  # float32 (C,)
    shift: np.ndarray  # float32 (C,)

    def __call__(self, x):
        out = np.empty_like(x)
        F.channel_affine(x, self.scale, self.shift, out)
        return out


def bn_affine(bn):
    """ChannelAffine of a BatchNorm2d in eval mode (BatchNorm2d.eval_affine)."""
    return ChannelAffine(*bn.eval_affine())


# ------------------------------------------------------------------ thresholds

def sign_thresholds(alpha, bn, c_in):
    """Fold sign(bn(alpha * s)) into integer thresholds, exactly.

    Every integer sum s in [-9 c_in, 9 c_in] is pushed through the same
    float32 arithmetic as the engine (alpha multiply, then ``bn``), so the
    thresholds agree with the float path on each of them, rounding
    included. Returns (threshold int32, flip bool): the bit is
    s >= threshold, or s <= threshold where flip (alpha * gamma < 0). A
    channel with a constant sign (gamma or alpha 0, or a dominant shift)
    gets a threshold outside the range.
    """
    alpha = np.asarray(alpha, np.float32)
    bound = 9 * int(c_in)
    s = np.arange(-bound, bound + 1, dtype=np.int32)
    y = s.astype(np.float32)[None, None, None, :] * alpha[None, :, None, None]
    bits = bn(np.ascontiguousarray(y))[0, :, 0] >= 0  # (C, 2 * bound + 1); sign(0) = +1
    flip = alpha * bn.scale < 0
    threshold = np.empty(alpha.shape, np.int32)
    for o in range(alpha.size):
        on = s[bits[o]]
        if flip[o]:
            threshold[o] = on.max() if on.size else -bound - 1
        else:
            threshold[o] = on.min() if on.size else bound + 1
        rule = s <= threshold[o] if flip[o] else s >= threshold[o]
        if not np.array_equal(rule, bits[o]):  # only NaN parameters break monotonicity
            raise ValueError(f"channel {o}: sign(bn(alpha * s)) is not monotone in s "
                             f"(alpha {alpha[o]}, scale {bn.scale[o]}, shift {bn.shift[o]})")
    return threshold, flip


# ------------------------------------------------------------------ sign + packing

# Fused sign + packing straight from the float activations, parallel over
# images: the same arrays as bitpack.pack_activations / bitpack.patch_codes
# (tested), which build them in several numpy passes and, at 32x32, cost
# about as much as the popcount convs themselves.

@njit(parallel=True, cache=True)
def _sign_pack(x, shift, words):
    n, c, h, w = x.shape
    out = np.zeros((n, h, w, words), dtype=np.uint64)
    for t in prange(n * h):
        b = t // h
        y = t % h
        for i in range(c):
            k = i // 64
            bit = np.uint64(1) << np.uint64(i % 64)
            d = shift[i]
            for z in range(w):
                # sign(x + shift) = +1 for x + shift >= 0, as functional.shifted_sign
                # computes it (x * 1 + shift; a zero shift leaves the test x >= 0)
                if x[b, i, y, z] * np.float32(1) + d >= 0:
                    out[b, y, z, k] |= bit
    return out


PLANES_PER_TASK = 16  # sign planes per parallel task: one scratch plane each


@njit(parallel=True, cache=True)
def _sign_patch_codes(x, shift, stride, ho, wo):
    n, c, h, w = x.shape
    planes = n * c
    xf = x.reshape(planes, h, w)
    out = np.empty((planes, ho, wo), dtype=np.uint16)
    one, zero = np.uint16(1), np.uint16(0)
    for task in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
        s = np.zeros((h + 2, w + 2), dtype=np.uint16)  # the zero-padding border stays bit 0
        for q in range(task * PLANES_PER_TASK, min(planes, (task + 1) * PLANES_PER_TASK)):
            d = shift[q % c]
            for y in range(h):
                for z in range(w):  # sign(x + shift) = +1 for x + shift >= 0
                    s[y + 1, z + 1] = one if xf[q, y, z] * np.float32(1) + d >= 0 else zero
            # code bit j = tap (j // 3, j % 3); stride 1 spelled out so the
            # row loop runs on contiguous loads and vectorizes
            for y in range(ho):
                y0 = y * stride
                if stride == 1:
                    for z in range(wo):
                        out[q, y, z] = (s[y0, z] | (s[y0, z + 1] << 1) | (s[y0, z + 2] << 2)
                                        | (s[y0 + 1, z] << 3) | (s[y0 + 1, z + 1] << 4)
                                        | (s[y0 + 1, z + 2] << 5) | (s[y0 + 2, z] << 6)
                                        | (s[y0 + 2, z + 1] << 7) | (s[y0 + 2, z + 2] << 8))
                else:
                    for z in range(wo):
                        z0 = z * stride
                        out[q, y, z] = (s[y0, z0] | (s[y0, z0 + 1] << 1) | (s[y0, z0 + 2] << 2)
                                        | (s[y0 + 1, z0] << 3) | (s[y0 + 1, z0 + 1] << 4)
                                        | (s[y0 + 1, z0 + 2] << 5) | (s[y0 + 2, z0] << 6)
                                        | (s[y0 + 2, z0 + 1] << 7) | (s[y0 + 2, z0 + 2] << 8))
    return out.reshape(n, c, ho, wo)


def _shift(x, shift):
    if shift is None:
        return np.zeros(x.shape[1], np.float32)
    return np.ascontiguousarray(shift, dtype=np.float32)


def sign_pack(x, shift=None):
    """bitpack.pack_activations(x + shift) of float32 x (N, C, H, W), fused;
    ``shift`` per channel (ReActNet's move0), None for none."""
    return _sign_pack(np.ascontiguousarray(x), _shift(x, shift), bitpack.num_words(x.shape[1]))


def sign_patch_codes(x, stride=1, shift=None):
    """bitpack.patch_codes(x + shift, stride) of float32 x (N, C, H, W), fused."""
    stride = bitpack.check_stride(stride)
    ho, wo = (bitpack.output_size(size, stride) for size in x.shape[2:])
    return _sign_patch_codes(np.ascontiguousarray(x), _shift(x, shift), stride, ho, wo)


# ------------------------------------------------------------------ binary convs

@dataclass
class CompiledConv:
    """A binary 3x3 conv with binary input and its batch norm.

    ``layer`` holds the integer part (kernel codes, codebook + idx) and the
    single-affine fold ``scale = alpha * bn.scale`` for hardware; the engine
    itself applies ``alpha`` and then ``bn`` as two float32 steps, as the
    float model does, so its outputs are bit-identical to it.
    """

    layer: BinaryConvLayer
    alpha: np.ndarray  # float32 (c_out,)
    bn: ChannelAffine
    packed: Optional[popcount.PackedConv] = None  # the kernels laid out for the popcount engine

    def check_input(self, x):
        layer = self.layer
        if x.shape[1:] != (layer.c_in, layer.height, layer.width):
            raise ValueError(f"layer {layer.name}: expects input (N, {layer.c_in}, {layer.height}, "
                             f"{layer.width}), found {x.shape}")

    @property
    def affine(self):
        """float32 (3, c_out): alpha, batch-norm scale, batch-norm shift."""
        return np.stack([self.alpha, self.bn.scale, self.bn.shift]).astype(np.float32)

    def sums(self, x, shift=None):
        """Integer sums int32 (N, c_out, Ho, Wo) of conv(sign(x + shift), B) by popcount."""
        self.check_input(x)
        return popcount.conv3x3_sums(x, self.packed, shift)

    def sign_bits(self, x):
        """uint8 bits (1 = +1) of sign(forward(x)) from the integer thresholds."""
        layer = self.with_thresholds()
        return popcount.apply_thresholds(self.sums(x), layer.threshold, layer.flip)

    def with_thresholds(self):
        """The layer record with the conv + BN + sign fold (for a sign right after the BN)."""
        if self.layer.threshold is not None:
            return self.layer
        threshold, flip = sign_thresholds(self.alpha, self.bn, self.layer.c_in)
        return replace(self.layer, threshold=threshold, flip=flip)


def _binary_conv_error(name, conv):
    if not isinstance(conv, QuantConv2d) or not conv.binary_weights:
        return (f"layer {name}: {type(conv).__name__} has full-precision weights; the integer "
                "engine needs binary or sub-bit weights with binary activations "
                "(train with --quant bnn/snn --act binary)")
    if not conv.binary_act:
        return (f"layer {name}: {type(conv).__name__} takes real activations (act 'real'); the "
                "integer engine needs binary activations (train with --act binary)")
    if (conv.kernel_size, conv.padding) != (3, 1) or conv.stride not in bitpack.STRIDES:
        return (f"layer {name}: the integer engine runs 3x3 convs with padding 1 and stride 1 "
                f"or 2, found kernel {conv.kernel_size}, padding {conv.padding}, "
                f"stride {conv.stride}")
    return None


def compile_conv(name, conv, bn, height, width, thresholds=False):
    """CompiledConv of a binary conv (BinaryConv2d or SubBitConv2d with binary
    activations) followed by ``bn``, for inputs of ``height`` x ``width``.
    ``thresholds`` adds the conv + BN + sign fold to the layer record."""
    error = _binary_conv_error(name, conv)
    if error:
        raise ValueError(error)
    b, alpha = conv.binary_weight()  # the very (B, alpha) the float forward uses
    codes = kernels_to_codes(b)
    kind, tau, codebook, idx = "bnn", None, None, None
    if isinstance(conv, SubBitConv2d):
        kind, tau = "subbit", conv.codebook.tau
        codebook = np.asarray(conv.codebook.codes, np.uint16)
        idx = np.asarray(conv.idx, np.uint16)
        if not np.array_equal(codebook[idx], codes):
            raise ValueError(f"layer {name}: codebook[idx] differs from the binary kernels")
    affine = bn_affine(bn)
    alpha = np.asarray(alpha, np.float32)
    layer = BinaryConvLayer(
        name=name, c_in=conv.in_channels, c_out=conv.out_channels, height=height, width=width,
        stride=conv.stride, kernel_codes=codes, scale=alpha * affine.scale, shift=affine.shift,
        kind=kind, tau=tau, codebook=codebook, idx=idx)
    # sub-bit layers run on their decoded kernels codebook[idx] too: on a CPU with a
    # vector popcount, XNOR-popcount over 3x3 x C bits beats the Dot9 table (bench kernels)
    compiled = CompiledConv(layer, alpha, affine, popcount.pack_conv(codes, height, width,
                                                                     conv.stride))
    if thresholds:
        compiled.layer = compiled.with_thresholds()
    return compiled


# ------------------------------------------------------------------ whole model

@dataclass
class CompiledBlock:
    """A double-shortcut basic block: h = hardtanh(bn1(conv1 x) + shortcut(x)),
    out = hardtanh(bn2(conv2 h) + h); the shortcut is option A (stride,
    channel offset pad_lo) or the identity (1, 0)."""

    conv1: CompiledConv
    conv2: CompiledConv
    stride: int
    pad_lo: int

    def forward(self, x):
        """Both convs and their float steps fused per image (popcount.hardtanh_block)."""
        self.conv1.check_input(x)
        if self.stride != self.conv1.layer.stride:
            raise ValueError(f"layer {self.conv1.layer.name}: the shortcut's stride {self.stride} "
                             f"differs from the conv's {self.conv1.layer.stride}")
        return popcount.hardtanh_block(x, self.conv1.packed, self.conv1.affine, self.conv2.packed,
                                       self.conv2.affine, self.pad_lo)

    @property
    def convs(self):
        return [self.conv1, self.conv2]


@dataclass
class Downsample:
    """ReActNet's shape-changing shortcut: k x k average pool (none when k is 1),
    a full-precision 1x1 conv and a batch norm, computed as the float model does."""

    pool: int
    weight: np.ndarray  # float32 (c_out, c_in, 1, 1)
    bn: ChannelAffine

    def __call__(self, x):
        if self.pool > 1:
            x = AvgPool2d(self.pool).forward(x)
        return self.bn(fastconv.conv2d_forward(x, self.weight, 1, 0)[0])


@dataclass
class CompiledReActBlock:
    """A ReActNet block: rprelu(bn(alpha * s) + shortcut(x)) with ``s`` the integer
    sums of conv(sign(x + shift), B); the shift (move0) folds into the sign
    test, the shortcut and RPReLU (move1, prelu, move2) stay float."""

    conv: CompiledConv
    shift: np.ndarray  # float32 (c_in,), move0
    rprelu: tuple  # float32 (c_out,) each: move1, PReLU slope, move2
    downsample: Optional[Downsample] = None

    @property
    def convs(self):
        return [self.conv]

    def forward(self, x):
        """The conv and its float steps fused per image (popcount.rprelu_block)."""
        self.conv.check_input(x)
        res = x if self.downsample is None else self.downsample(x)
        affine = np.concatenate([self.conv.affine, np.stack(self.rprelu)]).astype(np.float32)
        return popcount.rprelu_block(x, self.shift, self.conv.packed, affine, res)


@dataclass
class CompiledModel:
    """Integer-engine ResNet: float32 stem, binary blocks on popcount, float32 head."""

    config: dict
    stem_weight: np.ndarray  # float32 (C, 3, k, k)
    stem_stride: int
    stem_padding: int
    stem_bn: ChannelAffine
    blocks: list  # CompiledBlock or CompiledReActBlock
    fc_weight: np.ndarray  # float32 (classes, C)
    fc_bias: np.ndarray  # float32 (classes,)
    input_size: int = 32
    stem_hardtanh: bool = True  # the basic binary block's stem ends in Hardtanh
    stem_maxpool: bool = False  # ImageNet stems: 3x3 stride-2 max pool

    @property
    def layers(self):
        """Every binary 3x3 layer record in forward order (what export writes)."""
        return [conv.layer for block in self.blocks for conv in block.convs]

    def predict(self, x):
        """Logits float32 (N, classes) of normalized float32 images (N, 3, H, W)."""
        x = np.asarray(x)
        want = (3, self.input_size, self.input_size)
        if x.ndim != 4 or x.shape[1:] != want or x.dtype != np.float32:
            raise ValueError(f"predict expects float32 (N, {', '.join(map(str, want))}) images, "
                             f"found {x.dtype} {x.shape}")
        out = fastconv.conv2d_forward(x, self.stem_weight, self.stem_stride, self.stem_padding)[0]
        out = self.stem_bn(out)
        if self.stem_hardtanh:
            out = F.hardtanh(out)
        if self.stem_maxpool:
            out = MaxPool2d(3, 2, 1).forward(out)
        for block in self.blocks:
            out = block.forward(out)
        return out.mean(axis=(2, 3)) @ self.fc_weight.T + self.fc_bias


def _check_binary_convs(model):
    for name, module in model.named_modules():
        if name.endswith((".conv1", ".conv2", ".binary_conv")) and name.count(".") == 2:
            error = _binary_conv_error(name, module)
            if error:
                raise ValueError(error)


def _compile_basic_stages(model, size):
    blocks = []
    for s, stage in enumerate(model.stages()):
        for b, block in enumerate(stage):
            name = f"layer{s + 1}.{b}"
            if not (block.double_shortcut and isinstance(block.act1, Hardtanh)
                    and isinstance(block.act2, Hardtanh)):
                raise ValueError(f"layer {name}: the integer engine needs the binary-activation "
                                 "block (double shortcut, Hardtanh)")
            conv1 = compile_conv(f"{name}.conv1", block.conv1, block.bn1, size, size)
            size = conv1.layer.out_height
            conv2 = compile_conv(f"{name}.conv2", block.conv2, block.bn2, size, size)
            shortcut = block.shortcut
            if isinstance(shortcut, ShortcutA):
                blocks.append(CompiledBlock(conv1, conv2, shortcut.stride, shortcut.pad_lo))
            elif isinstance(shortcut, Identity):
                blocks.append(CompiledBlock(conv1, conv2, 1, 0))
            else:
                raise ValueError(f"layer {name}: the integer engine runs option-A or identity "
                                 f"shortcuts, found {type(shortcut).__name__}")
    return blocks


def _compile_reactnet_stages(model, size):
    blocks = []
    for s, stage in enumerate(model.stages()):
        for b, block in enumerate(stage):
            name = f"layer{s + 1}.{b}"
            conv = compile_conv(f"{name}.binary_conv", block.binary_conv, block.bn1, size, size)
            size = conv.layer.out_height
            downsample = None
            if block.downsample is not None:
                pool, conv1x1, bn = block.downsample.layers
                downsample = Downsample(pool.kernel_size if isinstance(pool, AvgPool2d) else 1,
                                        conv1x1.weight.data.copy(), bn_affine(bn))
            rprelu = tuple(np.ascontiguousarray(p.data.reshape(-1), dtype=np.float32) for p in
                           (block.move1.bias, block.prelu.weight, block.move2.bias))
            blocks.append(CompiledReActBlock(
                conv, block.move0.bias.data.reshape(-1).astype(np.float32), rprelu, downsample))
    return blocks


def compile_model(model, input_size=None):
    """Compile a ResNet with binary activations and binary or sub-bit weights
    (the CIFAR ResNet's Bi-Real blocks, or ReActNet blocks in the CIFAR or the
    ImageNet ResNet) into a CompiledModel computing its eval-mode function on
    images of ``input_size`` (default the model's: 32 CIFAR, 224 ImageNet).

    A model without binary weights and activations in every block conv is
    refused with a ValueError naming the first offending layer.
    """
    reactnet = model.config.get("block", "basic") == "reactnet"
    if not isinstance(model, ResNetCifar) and not reactnet:
        raise ValueError(f"the integer engine compiles CIFAR ResNets (ResNetCifar) or ReActNet "
                         f"blocks, found {type(model).__name__} with basic blocks")
    _check_binary_convs(model)
    if model.conv1.bias is not None:
        raise ValueError("layer conv1: the stem conv has a bias, which minisnn's ResNets never build")
    maxpool = isinstance(model, ResNetImageNet)
    input_size = model.input_size if input_size is None else int(input_size)
    if reactnet:
        size = F.conv_output_size(input_size, model.conv1.kernel_size, model.conv1.stride,
                                  model.conv1.padding)
        blocks = _compile_reactnet_stages(model, F.conv_output_size(size, 3, 2, 1) if maxpool
                                          else size)
    else:
        blocks = _compile_basic_stages(model, input_size)
    return CompiledModel(
        config=dict(model.config), stem_weight=model.conv1.weight.data.copy(),
        stem_stride=model.conv1.stride, stem_padding=model.conv1.padding,
        stem_bn=bn_affine(model.bn1), blocks=blocks, fc_weight=model.fc.weight.data.copy(),
        fc_bias=model.fc.bias.data.copy(), input_size=input_size,
        stem_hardtanh=not reactnet, stem_maxpool=maxpool)


def capture(model, name, x):
    """(input, output) of module ``name`` while ``model`` runs on ``x``: what a
    layer sees on real images, e.g. to drive the RTL with."""
    module = dict(model.named_modules()).get(name)
    if module is None:
        raise ValueError(f"the model has no module named {name!r}")
    seen = {}

    def record(module, inp, out):
        seen["in"], seen["out"] = inp, out

    handle = module.register_forward_hook(record)
    try:
        model(x)
    finally:
        handle.remove()
    return seen["in"], seen["out"]


def compile_checkpoint(path):
    """CompiledModel of a training checkpoint (see compile_model)."""
    model = checkpoint.load_model(path)
    try:
        return compile_model(model)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
