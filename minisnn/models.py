"""Models: CIFAR ResNet-20 and ImageNet ResNet-18, full precision, binary and sub-bit.

A model is described by a JSON-able config (``arch``, ``quant``, ``act``,
``tau``, ...) and :func:`build_model` rebuilds it from one, which is how
checkpoints are loaded. Quantization modes:

========  =======  ========  =============================================
quant     act      name      3x3 convs in the blocks
========  =======  ========  =============================================
fp        real     fp        full precision, ReLU (He et al. 2016)
bnn       real     1W/32A    binary weights, real activations (ReLU)
bnn       binary   1W/1A     binary weights and activations (Bi-Real block)
snn       real     W/32A     sub-bit weights (tau bits per kernel)
snn       binary   W/1A      sub-bit weights, binary activations
========  =======  ========  =============================================

The first conv, the classifier and ResNet-18's 1x1 projection shortcuts
stay full precision in every mode.

Blocks (config ``block``):

- ``basic`` (the default): He et al.'s basic block of two 3x3 convs; with
  binary activations each conv gets its own shortcut and Hardtanh (Bi-Real).
- ``reactnet``: the block of ReActNet and of the sub-bit authors' code, one
  binary 3x3 conv each: shift -> sign -> conv -> batch norm -> + shortcut ->
  shift -> PReLU -> shift, the shape-changing shortcut a 2x2 average pool, a
  full-precision 1x1 conv and a batch norm. Activations are binary; with
  ``quant`` 'fp' the weights stay real (step 1 of the two-step recipe). A
  stage holds twice as many of these blocks as basic blocks, so the 3x3
  convs are the same: ResNet-20 has 3 stages of 6, ResNet-18 4 of 4; the
  stem has no activation (conv, batch norm, and ResNet-18's max pool).
"""

import numpy as np

from . import functional as F
from .nn import (AvgPool2d, BasicBlock, BatchNorm2d, Conv2d, GlobalAvgPool2d, Hardtanh,
                 Identity, LearnableBias, Linear, MaxPool2d, Module, PReLU, ReLU, Sequential,
                 SkipInit, WEIGHT_INITS)
from .quant import BinaryConv2d, SignInputConv2d

QUANTS = ("fp", "bnn", "snn")
ACTS = ("real", "binary")
BLOCKS = ("basic", "reactnet")
DEFAULT_WEIGHT_INIT = "kaiming_normal"


def weight_init(config):
    """The conv weight initialisation of a model config (nn.WEIGHT_INITS): the
    config holds 'weight_init' only when it is not the default He init."""
    return config.get("weight_init", DEFAULT_WEIGHT_INIT)


def mode_name(quant, act, tau=None):
    """Human name of a quantization mode, as in the paper's tables ('32W/1A':
    real weights, binary activations, the two-step recipe's step 1)."""
    a = "32A" if act == "real" else "1A"
    if quant == "fp":
        return "fp" if act == "real" else f"32W/{a}"
    if quant == "bnn":
        return f"1W/{a}"
    return f"tau={tau} W/{a}"


def conv3x3_factory(quant, act, rng, tau=None, act_grad="approxsign", block="basic",
                    weight_init=DEFAULT_WEIGHT_INIT, **snn_options):
    """Return ``conv(c_in, c_out, stride)`` building the block convs of a mode,
    their weights drawn by ``weight_init`` (a key of nn.WEIGHT_INITS)."""
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}, expected one of "
                         f"{tuple(WEIGHT_INITS)}")
    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r}, expected one of {QUANTS}")
    if act not in ACTS:
        raise ValueError(f"unknown act {act!r}, expected one of {ACTS}")
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}, expected one of {BLOCKS}")
    if block == "reactnet" and act != "binary":
        raise ValueError("block 'reactnet' needs act 'binary' (its convs take sign inputs)")
    if quant == "fp":
        if act != "real":
            if block == "reactnet":  # step 1 of the two-step recipe
                return lambda c_in, c_out, stride: SignInputConv2d(
                    c_in, c_out, 3, stride, 1, binary_act=True, act_grad=act_grad, rng=rng,
                    weight_init=weight_init)
            raise ValueError("quant 'fp' with act 'binary' needs block 'reactnet' (step 1 of "
                             "the two-step recipe); the basic block needs binary weights")
        return lambda c_in, c_out, stride: Conv2d(c_in, c_out, 3, stride, 1, rng=rng,
                                                  weight_init=weight_init)
    binary_act = act == "binary"
    if quant == "bnn":
        return lambda c_in, c_out, stride: BinaryConv2d(
            c_in, c_out, 3, stride, 1, binary_act=binary_act, act_grad=act_grad, rng=rng,
            weight_init=weight_init)
    from .subbit import SubBitConv2d
    if tau is None:
        raise ValueError("quant 'snn' needs tau (bits per 3x3 kernel, 1..9)")
    return lambda c_in, c_out, stride: SubBitConv2d(
        c_in, c_out, stride=stride, tau=tau, binary_act=binary_act, act_grad=act_grad,
        rng=rng, weight_init=weight_init, **snn_options)


class ReActBlock(Module):
    """ReActNet's block around one binary 3x3 conv (names as in the authors' code):

        out = move2(prelu(move1(bn1(binary_conv(sign(move0(x)))) + shortcut(x))))

    The sign is ``binary_conv``'s input sign (``binary_act=True``, its
    ``grad`` the surrogate); the shortcut is the identity, or ``downsample`` =
    2x2 average pool, 1x1 full-precision conv, batch norm where the shape
    changes. ``move0`` and the sign, and ``bn1``, the shortcut add, ``move1``,
    ``prelu`` and ``move2``, hold the parameters but run fused, one pass each
    (the float operations of the layers one after another: tested equal to
    them); a hook on ``bn1`` makes it run as its own layer.
    """

    def __init__(self, in_planes, planes, stride, conv, rng=None, weight_init=DEFAULT_WEIGHT_INIT):
        self.move0 = LearnableBias(in_planes)
        self.binary_conv = conv(in_planes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.move1 = LearnableBias(planes)
        self.prelu = PReLU(planes)
        self.move2 = LearnableBias(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = Sequential(
                AvgPool2d(stride) if stride != 1 else Identity(),
                Conv2d(in_planes, planes, 1, 1, 0, rng=rng, weight_init=weight_init),
                BatchNorm2d(planes))

    def _rprelu_params(self, dtype):
        return [np.ascontiguousarray(m.data.reshape(-1), dtype=dtype) for m in
                (self.move1.bias, self.prelu.weight, self.move2.bias)]

    def forward(self, x):
        # move0 -> sign in one pass (functional.shifted_sign), then the conv proper
        shift = np.ascontiguousarray(self.move0.bias.data.reshape(-1), dtype=x.dtype)
        signs = np.empty_like(x)
        F.shifted_sign(x, shift, signs)
        conv = self.binary_conv.run_forward_hooks(signs, self.binary_conv.conv_forward(signs))
        rprelu = self._rprelu_params(conv.dtype)
        y = np.empty_like(conv)
        if self.bn1.has_forward_hooks():  # the hooks see bn1's own output
            out = self.bn1(conv)
            F.add(out, x if self.downsample is None else self.downsample(x), out)
            # move1 -> prelu -> move2 in one pass (functional.rprelu: the same operations)
            F.rprelu(out, *rprelu, y)
        else:  # bn1, the shortcut add and move1 -> prelu -> move2 in one pass
            scale, shift_bn = self.bn1.scale_shift(conv)
            out = np.empty_like(conv)
            residual = x if self.downsample is None else self.downsample(x)
            F.channel_affine_add_rprelu(conv, scale, shift_bn, residual, *rprelu, out, y)
        self.cache = (x, shift, out)
        return y

    def backward(self, dout):
        (x, shift, out), self.cache = self.cache, None
        shift_in, slope, _ = self._rprelu_params(out.dtype)
        d = np.empty_like(out)
        sums = F.rprelu_backward(np.ascontiguousarray(dout), out, shift_in, slope, d)
        for param, grad in zip((self.move1.bias, self.prelu.weight, self.move2.bias), sums):
            param.grad += grad.reshape(param.grad.shape).astype(param.grad.dtype)
        dout = d
        dsigns = np.ascontiguousarray(self.binary_conv.conv_backward(self.bn1.backward(dout)))
        dx = np.empty_like(x)
        approx = self.binary_conv.input_sign.grad == "approxsign"
        dshift = F.shifted_sign_backward(dsigns, np.ascontiguousarray(x), shift, approx, dx)
        self.move0.bias.grad += dshift.reshape(self.move0.bias.grad.shape).astype(dx.dtype)
        F.add(dx, dout if self.downsample is None else self.downsample.backward(dout), dx)
        return dx


def make_stages(config, widths, blocks, basic_block, rng):
    """The stages of a ResNet (``layer1``, ``layer2``, ...) as Sequentials.

    ``blocks[s]`` basic blocks in stage ``s`` (twice as many ReAct blocks);
    the first block of every stage but the first has stride 2.
    ``basic_block(in_planes, planes, stride, conv, act, double_shortcut)``
    builds a basic block (ResNet-20 and ResNet-18 differ in their shortcut).
    """
    block = config.get("block", "basic")
    init_w = weight_init(config)
    conv = conv3x3_factory(config["quant"], config["act"], rng, config.get("tau"),
                           config.get("act_grad", "approxsign"), block, init_w,
                           **config.get("snn_options", {}))
    binary_act = config["act"] == "binary"
    act = Hardtanh if binary_act else ReLU
    stages, in_planes = [], widths[0]
    for s, (n_blocks, planes) in enumerate(zip(blocks, widths)):
        stage = []
        for b in range(2 * n_blocks if block == "reactnet" else n_blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            if block == "reactnet":
                stage.append(ReActBlock(in_planes, planes, stride, conv, rng=rng,
                                        weight_init=init_w))
            else:
                stage.append(basic_block(in_planes, planes, stride, conv, act, binary_act))
            in_planes = planes
        stages.append(Sequential(*stage))
    return stages


class _ResNet(Module):
    """Stem, stages of basic blocks, global average pool, linear classifier."""

    def stem(self):
        return [self.conv1, self.bn1] + ([self.act1] if hasattr(self, "act1") else [])

    def forward(self, x):
        for layer in self.stem() + self.stages():
            x = layer(x)
        return self.fc(self.pool(x))

    def backward(self, dout):
        dout = self.pool.backward(self.fc.backward(dout))
        for layer in reversed(self.stem() + self.stages()):
            dout = layer.backward(dout)
        return dout


def _generator(config, init):
    """The random generator a model's layers draw from, in order; without
    ``init`` one that skips the weight values (nn.SkipInit)."""
    rng = np.random.default_rng(config.get("seed", 0))
    return rng if init else SkipInit(rng)


class ResNetCifar(_ResNet):
    """Stem conv, three stages of basic blocks, global pool, linear."""

    input_size = 32  # CIFAR images, 32x32

    def __init__(self, config, depth=20, widths=(16, 32, 64), num_classes=10, init=True):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.config = config
        rng = _generator(config, init)
        self.conv1 = Conv2d(3, widths[0], 3, 1, 1, rng=rng, weight_init=weight_init(config))
        self.bn1 = BatchNorm2d(widths[0])
        if config.get("block", "basic") == "basic":
            self.act1 = Hardtanh() if config["act"] == "binary" else ReLU()
        for s, stage in enumerate(make_stages(config, widths, [blocks] * len(widths),
                                              BasicBlock, rng)):
            setattr(self, f"layer{s + 1}", stage)
        in_planes = widths[-1]
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(in_planes, num_classes, rng=rng)

    def stages(self):
        return [self.layer1, self.layer2, self.layer3]


class ProjectionBlock(BasicBlock):
    """Basic block whose shape-changing shortcut is a full-precision 1x1 conv
    + batch norm (He et al.'s option B, as in ImageNet ResNet-18)."""

    def __init__(self, in_planes, planes, stride, conv, act, double_shortcut=False, rng=None,
                 weight_init=DEFAULT_WEIGHT_INIT):
        super().__init__(in_planes, planes, stride, conv, act, double_shortcut)
        if stride != 1 or in_planes != planes:
            self.shortcut = Sequential(Conv2d(in_planes, planes, 1, stride, 0, rng=rng,
                                              weight_init=weight_init),
                                       BatchNorm2d(planes))


class ResNetImageNet(_ResNet):
    """ImageNet ResNet: 7x7 stride-2 stem, 3x3 stride-2 max pool, four stages
    of basic blocks with projection shortcuts, global pool, linear."""

    input_size = 224

    def __init__(self, config, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=1000,
                 init=True):
        self.config = config
        rng = _generator(config, init)
        init_w = weight_init(config)
        self.conv1 = Conv2d(3, widths[0], 7, 2, 3, rng=rng, weight_init=init_w)
        self.bn1 = BatchNorm2d(widths[0])
        if config.get("block", "basic") == "basic":
            self.act1 = Hardtanh() if config["act"] == "binary" else ReLU()
        self.maxpool = MaxPool2d(3, 2, 1)

        def basic_block(in_planes, planes, stride, conv, act, double_shortcut):
            return ProjectionBlock(in_planes, planes, stride, conv, act, double_shortcut, rng=rng,
                                   weight_init=init_w)

        for s, stage in enumerate(make_stages(config, widths, blocks, basic_block, rng)):
            setattr(self, f"layer{s + 1}", stage)
        in_planes = widths[-1]
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(in_planes, num_classes, rng=rng)

    def stem(self):
        return super().stem() + [self.maxpool]

    def stages(self):
        return [self.layer1, self.layer2, self.layer3, self.layer4]


def model_config(arch, quant="fp", act="real", tau=None, seed=0, num_classes=10,
                 act_grad="approxsign", block="basic", weight_init=DEFAULT_WEIGHT_INIT,
                 **snn_options):
    """The JSON-able config that :func:`build_model` builds (and checkpoints
    store), checked: a bad mode, block, tau or weight_init is refused here,
    before anything is built or loaded. ``tau`` and ``snn_options`` (refine,
    period, init, assign) are kept for sub-bit models only, ``weight_init``
    (nn.WEIGHT_INITS) only when it is not the default."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}, expected one of {sorted(ARCHS)}")
    # validates the combination
    conv3x3_factory(quant, act, None, tau, act_grad, block, weight_init)
    if quant == "snn" and not (isinstance(tau, (int, np.integer)) and 1 <= tau <= 9):
        raise ValueError(f"tau must be an integer in 1..9 (bits per 3x3 kernel), found {tau!r}")
    config = {"arch": arch, "quant": quant, "act": act,
              "tau": int(tau) if quant == "snn" else None, "seed": seed,
              "num_classes": num_classes, "act_grad": act_grad, "block": block,
              "snn_options": snn_options if quant == "snn" else {}}
    if weight_init != DEFAULT_WEIGHT_INIT:
        config["weight_init"] = weight_init
    return config


def resnet20(quant="fp", act="real", tau=None, seed=0, num_classes=10,
             act_grad="approxsign", block="basic", **snn_options):
    """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 blocks, 16/32/64 channels
    (3 x 6 one-conv blocks with ``block='reactnet'``)."""
    return build_model(model_config("resnet20", quant, act, tau, seed, num_classes, act_grad,
                                    block, **snn_options))


def resnet18(quant="fp", act="real", tau=None, seed=0, num_classes=1000,
             act_grad="approxsign", block="basic", **snn_options):
    """ImageNet ResNet-18 (He et al. 2016): 2-2-2-2 basic blocks, 64/128/256/512 channels
    (4-4-4-4 one-conv blocks with ``block='reactnet'``: the authors' Bi-Real ResNet-18)."""
    return build_model(model_config("resnet18", quant, act, tau, seed, num_classes, act_grad,
                                    block, **snn_options))


ARCHS = {"resnet20": (ResNetCifar, dict(depth=20, widths=(16, 32, 64))),
         "resnet18": (ResNetImageNet, dict(blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)))}


def build_model(config, init=True):
    """Rebuild a model from its config (as stored in a checkpoint); a config's
    ``widths`` (channels per stage) replaces the architecture's.

    ``init=False`` is for a model whose every array is loaded next: its
    weights are zeros that take no memory until written, and its other
    random state (a sub-bit codebook's seed) is that of ``init=True``."""
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}, expected one of {sorted(ARCHS)}")
    cls, kwargs = ARCHS[arch]
    if config.get("widths") is not None:
        widths = tuple(int(w) for w in config["widths"])
        if len(widths) != len(kwargs["widths"]) or min(widths) < 1:
            raise ValueError(f"{arch} needs {len(kwargs['widths'])} positive stage widths, "
                             f"found {config['widths']}")
        kwargs = dict(kwargs, widths=widths)
    return cls(config, num_classes=config.get("num_classes", 10), init=init, **kwargs)
