"""Models: CIFAR ResNet-20 in full precision, binary and sub-bit variants.

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

The first conv and the classifier stay full precision in every mode.
"""

import numpy as np

from .nn import (BasicBlock, BatchNorm2d, Conv2d, GlobalAvgPool2d, Hardtanh, Linear, Module,
                 ReLU, Sequential)
from .quant import BinaryConv2d

QUANTS = ("fp", "bnn", "snn")
ACTS = ("real", "binary")


def mode_name(quant, act, tau=None):
    """Human name of a quantization mode, as in the paper's tables."""
    if quant == "fp":
        return "fp"
    a = "32A" if act == "real" else "1A"
    if quant == "bnn":
        return f"1W/{a}"
    return f"tau={tau} W/{a}"


def conv3x3_factory(quant, act, rng, tau=None, act_grad="approxsign", **snn_options):
    """Return ``conv(c_in, c_out, stride)`` building the block convs of a mode."""
    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r}, expected one of {QUANTS}")
    if act not in ACTS:
        raise ValueError(f"unknown act {act!r}, expected one of {ACTS}")
    if quant == "fp":
        if act != "real":
            raise ValueError("quant 'fp' needs act 'real' (binary activations need binary weights)")
        return lambda c_in, c_out, stride: Conv2d(c_in, c_out, 3, stride, 1, rng=rng)
    binary_act = act == "binary"
    if quant == "bnn":
        return lambda c_in, c_out, stride: BinaryConv2d(
            c_in, c_out, 3, stride, 1, binary_act=binary_act, act_grad=act_grad, rng=rng)
    from .subbit import SubBitConv2d
    if tau is None:
        raise ValueError("quant 'snn' needs tau (bits per 3x3 kernel, 1..9)")
    return lambda c_in, c_out, stride: SubBitConv2d(
        c_in, c_out, stride=stride, tau=tau, binary_act=binary_act, act_grad=act_grad,
        rng=rng, **snn_options)


class ResNetCifar(Module):
    """Stem conv, three stages of basic blocks, global pool, linear."""

    def __init__(self, config, depth=20, widths=(16, 32, 64), num_classes=10):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.config = config
        rng = np.random.default_rng(config.get("seed", 0))
        snn_options = config.get("snn_options", {})
        conv = conv3x3_factory(config["quant"], config["act"], rng, config.get("tau"),
                               config.get("act_grad", "approxsign"), **snn_options)
        binary_act = config["act"] == "binary"
        act = Hardtanh if binary_act else ReLU
        self.conv1 = Conv2d(3, widths[0], 3, 1, 1, rng=rng)
        self.bn1 = BatchNorm2d(widths[0])
        self.act1 = act()
        in_planes = widths[0]
        for s, planes in enumerate(widths):
            stage = []
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                stage.append(BasicBlock(in_planes, planes, stride, conv, act,
                                        double_shortcut=binary_act))
                in_planes = planes
            setattr(self, f"layer{s + 1}", Sequential(*stage))
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(in_planes, num_classes, rng=rng)

    def stages(self):
        return [self.layer1, self.layer2, self.layer3]

    def forward(self, x):
        x = self.act1.forward(self.bn1.forward(self.conv1.forward(x)))
        for stage in self.stages():
            x = stage.forward(x)
        return self.fc.forward(self.pool.forward(x))

    def backward(self, dout):
        dout = self.pool.backward(self.fc.backward(dout))
        for stage in reversed(self.stages()):
            dout = stage.backward(dout)
        return self.conv1.backward(self.bn1.backward(self.act1.backward(dout)))


def resnet20(quant="fp", act="real", tau=None, seed=0, num_classes=10,
             act_grad="approxsign", **snn_options):
    """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 blocks, 16/32/64 channels."""
    config = {"arch": "resnet20", "quant": quant, "act": act, "tau": tau, "seed": seed,
              "num_classes": num_classes, "act_grad": act_grad, "snn_options": snn_options}
    return build_model(config)


ARCHS = {"resnet20": dict(depth=20, widths=(16, 32, 64))}


def build_model(config):
    """Rebuild a model from its config (as stored in a checkpoint)."""
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}, expected one of {sorted(ARCHS)}")
    return ResNetCifar(config, num_classes=config.get("num_classes", 10), **ARCHS[arch])
