"""Binarization: sign with straight-through gradients, binary convolutions.

Conventions (../shared/SNN-METHOD.md):
- sign(x) = +1 for x >= 0, -1 otherwise (so a kernel code bit is 1 for x >= 0).
- Binary weights: Wq[o] = alpha[o] * sign(W[o]) with alpha[o] = mean|W[o]|,
  no gradient through alpha. The gradient with respect to the binarized
  weight B = sign(W) *includes* alpha (dL/dB = alpha * dL/dWq, alpha a
  constant), and passes to the latent W where |W| <= 1 (clip STE).
- Binary activations: sign forward; backward either ApproxSign
  (Bi-Real Net: 2 - 2|x| on |x| < 1) or the clip STE (1 on |x| <= 1).
"""

import numpy as np

from . import fastconv
from . import functional as F
from .nn import WEIGHT_INITS, Module, Parameter


sign = F.sign


# surrogate gradients of sign: fused dout * d/dx surrogate(x)
ACT_GRADS = {"approxsign": F.approx_sign_backward, "ste": F.clip_backward}


class SignActivation(Module):
    """Binary activation: sign forward, surrogate gradient backward."""

    def __init__(self, grad="approxsign"):
        if grad not in ACT_GRADS:
            raise ValueError(f"unknown activation gradient {grad!r}, expected one of {sorted(ACT_GRADS)}")
        self.grad = grad

    def forward(self, x):
        self.cache = x
        return sign(x)

    def backward(self, dout):
        return ACT_GRADS[self.grad](dout, self.cache)


class QuantConv2d(Module):
    """A conv with binary (+-1) weights B scaled per output channel by alpha.

    The conv runs on B and alpha multiplies its output, out = alpha[o] *
    conv(x, B)[o]: the same function as conv(x, alpha * B), but with binary
    activations conv(x, B) is an exact integer, so an integer engine that
    computes it by popcount and then multiplies by alpha reproduces this
    float model bit for bit. Subclasses define :meth:`binary_weight`
    (latent W -> (B, alpha)) and :meth:`binary_weight_backward` (dL/dB,
    which includes alpha, -> gradients of the latent parameters); alpha
    None means no scaling (:class:`SignInputConv2d`). With
    ``binary_act`` the input is passed through sign first.
    """

    binary_weights = True  # the forward uses +-1 kernels (False: SignInputConv2d)

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                 binary_act=False, act_grad="approxsign", rng=None, method="auto",
                 weight_init="kaiming_normal"):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.method = method  # as Conv2d's: 'reference' runs the readable conv
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.weight = Parameter(WEIGHT_INITS[weight_init](
            (out_channels, in_channels, kernel_size, kernel_size), rng), decay=True)
        self.input_sign = SignActivation(act_grad) if binary_act else None
        self.cache = None

    @property
    def binary_act(self):
        return self.input_sign is not None

    def binary_weight(self):
        raise NotImplementedError

    def binary_weight_backward(self, dB):
        raise NotImplementedError

    def forward(self, x):
        if self.input_sign is not None:
            x = self.input_sign(x)
        return self.conv_forward(x)

    def backward(self, dout):
        dx = self.conv_backward(dout)
        if self.input_sign is not None:
            dx = self.input_sign.backward(dx)
        return dx

    def conv_forward(self, x):
        """The conv alone, on an input already through the input sign (a block
        that fuses the sign with its own shift calls this instead of forward)."""
        b, alpha = self.binary_weight()
        out, conv_cache = fastconv.conv2d_forward(x, b.astype(x.dtype, copy=False), self.stride,
                                                  self.padding, self.method)
        if alpha is not None:
            alpha = alpha.astype(x.dtype)
            # numpy's broadcast multiply runs on one core; a zero shift adds nothing
            F.channel_affine(out, alpha, np.zeros_like(alpha), out)
        self.cache = (conv_cache, alpha)
        return out

    def conv_backward(self, dout):
        """Gradients of :meth:`conv_forward`; returns the gradient w.r.t. its input."""
        conv_cache, alpha = self.cache
        self.cache = None
        dx, dB = fastconv.conv2d_backward(dout, conv_cache, dout_scale=alpha)
        self.binary_weight_backward(dB)
        return dx


def weight_scale(w):
    """alpha[o] = mean |W[o]| over (C_in, kH, kW)."""
    return np.abs(w).reshape(w.shape[0], -1).mean(axis=1).astype(w.dtype)


class BinaryConv2d(QuantConv2d):
    """Binary weights alpha[o] * sign(W[o]) with the clip straight-through
    backward to the latent weights."""

    def binary_weight(self):
        w = self.weight.data
        return sign(w), weight_scale(w)

    def binary_weight_backward(self, dB):
        self.weight.grad += F.clip_backward(dB, self.weight.data)


class SignInputConv2d(QuantConv2d):
    """Real weights on binary (sign) input: step 1 of the two-step recipe
    (binary activations, real weights), whose trained weights become the
    latent weights of step 2's binary or sub-bit conv. Build it with
    ``binary_act=True``."""

    binary_weights = False

    def binary_weight(self):
        return self.weight.data, None

    def binary_weight_backward(self, dB):
        self.weight.grad += dB
