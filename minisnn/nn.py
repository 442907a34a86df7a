"""Neural-network layers in plain numpy, CS231n style.

Every layer is a small class with ``forward(x)`` and ``backward(dout)``;
``forward`` keeps what ``backward`` needs in ``self.cache``. Parameters are
:class:`Parameter` objects holding ``data`` and ``grad`` side by side.
Arrays are float32 NCHW; weights are (C_out, C_in, kH, kW). Gradient checks
run the same code in float64: layers keep the dtype they are given.
"""

import numpy as np

from . import fastconv
from . import functional as F


class Parameter:
    """A trainable array with its gradient beside it.

    ``decay`` says whether the optimizer applies weight decay to it: conv
    and linear weights (latent weights of binary convs included) get it,
    biases, batch-norm affine parameters and sub-bit codebook parameters
    do not.
    """

    __slots__ = ("data", "_grad", "decay")

    def __init__(self, data, decay=False):
        self.data = data
        self._grad = None  # allocated on first use: inference and conversion never need it
        self.decay = decay

    @property
    def grad(self):
        if self._grad is None:
            self._grad = np.zeros_like(self.data)
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value


class Module:
    """Base class: tree of sub-modules, parameters, buffers and train/eval.

    Sub-modules and parameters are found among the instance attributes in
    assignment order (lists of modules too), so names are stable and match
    PyTorch's dotted style (``layer1.0.conv1.weight``). Buffers are arrays
    that are state but not trained (running statistics, codebook memory);
    a layer lists them with :meth:`register_buffer`.
    """

    training = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        """forward(x), then the forward hooks: parents call their children this way."""
        return self.run_forward_hooks(x, self.forward(x))

    # -- hooks --------------------------------------------------------------
    def register_forward_hook(self, hook):
        """Call ``hook(module, input, output)`` after every call of this module
        (as PyTorch's). Returns a handle whose ``remove()`` unregisters it."""
        hooks = self.__dict__.setdefault("_forward_hooks", {})
        key = max(hooks, default=-1) + 1
        hooks[key] = hook
        return _HookHandle(hooks, key)

    def has_forward_hooks(self):
        """Whether forward hooks are registered (a parent fuses this module into a
        pass of its own only when none are)."""
        return bool(self.__dict__.get("_forward_hooks"))

    def run_forward_hooks(self, x, out):
        """Run the forward hooks on (x, out) and return out; a parent that runs a
        child's computation through another method (a fused path) calls this."""
        for hook in list(self.__dict__.get("_forward_hooks", {}).values()):
            hook(self, x, out)
        return out

    # -- tree ---------------------------------------------------------------
    def register_buffer(self, name, value):
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)
        setattr(self, name, value)

    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}" if name != "layers" else str(i), item

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for mod_name, mod in self.named_modules(prefix):
            for name, value in vars(mod).items():
                if isinstance(value, Parameter):
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for mod_name, mod in self.named_modules(prefix):
            for name in mod.__dict__.get("_buffer_names", ()):
                yield (f"{mod_name}.{name}" if mod_name else name), getattr(mod, name)

    def state_dict(self, copy=True):
        """Named arrays of every parameter and buffer: copies, or with
        ``copy=False`` the arrays themselves (to write out at once)."""
        state = {name: p.data.copy() if copy else p.data for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=copy) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state, source="state dict", assign=False):
        """Copy arrays in, checking names, shapes and dtype kinds.

        With ``assign`` (as PyTorch's) the module takes the arrays
        themselves where their dtype and C order already fit, sharing them
        with ``state`` instead of holding a second copy (read-only arrays
        stay read-only). Raises ValueError naming ``source``, the array, and
        the expected vs found shape, for a missing, unexpected or misshapen
        array.
        """
        targets = {}
        for mod_name, mod in self.named_modules():
            for name, value in vars(mod).items():
                if isinstance(value, Parameter):
                    targets[f"{mod_name}.{name}" if mod_name else name] = (mod, name, True)
            for name in mod.__dict__.get("_buffer_names", ()):
                targets[f"{mod_name}.{name}" if mod_name else name] = (mod, name, False)
        missing = [k for k in targets if k not in state]
        if missing:
            raise ValueError(f"{source}: missing array {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        unexpected = [k for k in state if k not in targets]
        if unexpected:
            raise ValueError(f"{source}: unexpected array {unexpected[0]!r} not in the model")
        for key, (mod, name, is_param) in targets.items():
            current = getattr(mod, name)
            current = current.data if is_param else current
            value = np.asarray(state[key])
            if value.shape != current.shape:
                raise ValueError(f"{source}: array {key!r} has shape {value.shape}, "
                                 f"expected {current.shape}")
            if value.dtype.kind != current.dtype.kind:
                raise ValueError(f"{source}: array {key!r} has dtype {value.dtype}, "
                                 f"expected {current.dtype}")
            if not (assign and value.dtype == current.dtype and value.flags.c_contiguous):
                value = value.astype(current.dtype, copy=True)
            if is_param:
                getattr(mod, name).data = value
            else:
                setattr(mod, name, value)
        for mod_name, mod in self.named_modules():
            mod.after_load()

    def after_load(self):
        """Hook for layers whose derived state depends on loaded arrays."""

    def train(self, mode=True):
        for _, mod in self.named_modules():
            mod.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def astype(self, dtype):
        """Cast parameters and float buffers (float64 for gradient checks)."""
        for _, p in self.named_parameters():
            p.data = p.data.astype(dtype)
            p.grad = np.zeros_like(p.data)
        for mod_name, mod in self.named_modules():
            for name in mod.__dict__.get("_buffer_names", ()):
                value = getattr(mod, name)
                if value.dtype.kind == "f":
                    setattr(mod, name, value.astype(dtype))
        return self


class _HookHandle:
    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


class Sequential(Module):
    def __init__(self, *layers):
        self.layers = list(layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


_DRAW_CHUNK = 1 << 16  # values per draw: bounds the float64 temporaries of large layers


class SkipInit:
    """Stands in for the numpy Generator a model is built with when every
    array is loaded afterwards (``models.build_model(config, init=False)``).

    Weights drawn through :func:`draw` come back as read-only zeros that
    occupy no memory (a broadcast scalar) until loaded arrays replace them;
    their values are still drawn and dropped, so the generator advances as
    for a drawn model and the draws that are kept (a sub-bit codebook's
    seed) come out the same. Every other method is the generator's own.
    """

    def __init__(self, generator):
        self.generator = generator

    def __getattr__(self, name):
        return getattr(self.generator, name)


def draw(shape, rng, sample, dtype=np.float32):
    """An array of ``shape`` holding ``sample(n)`` (float64), drawn n values
    at a time: a numpy Generator draws value by value, so the values and the
    generator's state are those of one call for all of them. With a
    :class:`SkipInit` the values are drawn but not kept."""
    skip = isinstance(rng, SkipInit)
    size = int(np.prod(shape))
    out = None if skip else np.empty(size, dtype)
    for start in range(0, size, _DRAW_CHUNK):
        values = sample(min(_DRAW_CHUNK, size - start))
        if not skip:
            out[start:start + values.size] = values
    return np.broadcast_to(np.zeros((), dtype), shape) if skip else out.reshape(shape)


def kaiming_normal(shape, rng, dtype=np.float32):
    """He initialisation for ReLU nets: std = sqrt(2 / fan_in)."""
    std = np.sqrt(2.0 / int(np.prod(shape[1:])))
    return draw(shape, rng, lambda n: rng.standard_normal(n) * std, dtype)


def torch_uniform(shape, rng, dtype=np.float32):
    """PyTorch's default for nn.Conv2d and nn.Linear (kaiming_uniform with
    a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in),
    2.45x below He's. Under Adam, whose steps do not scale with the weights,
    the smaller start lets weights change 2.45x faster relative to their size."""
    bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
    return draw(shape, rng, lambda n: rng.uniform(-bound, bound, n), dtype)


# Conv weight initialisations by name (a model config's 'weight_init')
WEIGHT_INITS = {"kaiming_normal": kaiming_normal, "torch_uniform": torch_uniform}


class Conv2d(Module):
    """Full-precision 2-D convolution (cross-correlation).

    ``method`` picks the implementation (minisnn.fastconv.METHODS): 'auto',
    the numba kernels' faster path for the shapes; 'reference', the readable
    im2col + GEMM of functional.conv2d_forward_reference.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0,
                 bias=False, rng=None, method="auto", weight_init="kaiming_normal"):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.weight = Parameter(WEIGHT_INITS[weight_init](
            (out_channels, in_channels, kernel_size, kernel_size), rng), decay=True)
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None
        self.method = method
        self.cache = None

    def forward(self, x):
        out, self.cache = fastconv.conv2d_forward(x, self.weight.data, self.stride, self.padding,
                                                  self.method)
        if self.bias is not None:
            out += self.bias.data[:, None, None]
        return out

    def backward(self, dout):
        dx, dw = fastconv.conv2d_backward(dout, self.cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=(0, 2, 3))
        self.cache = None
        return dx


class BatchNorm2d(Module):
    """Batch norm over (N, H, W) per channel; running stats as in PyTorch
    (momentum 0.1, unbiased variance in the running estimate)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))
        self.cache = None

    def forward(self, x):
        scale, shift = self.scale_shift(x)
        out = np.empty_like(x)
        F.channel_affine(x, scale, shift, out)
        return out

    def forward_relu(self, x, residual=None):
        """relu(forward(x) + residual) (no add without a residual) in one pass:
        a block's batch norm, shortcut add and ReLU, rounded as the layers
        one after another round them."""
        scale, shift = self.scale_shift(x)
        out = np.empty_like(x)
        if residual is None:
            F.channel_affine_relu(x, scale, shift, out)
        else:
            F.channel_affine_add_relu(x, scale, shift, residual, out)
        return out

    def forward_add_hardtanh(self, x, residual):
        """(pre, clip(pre, -1, 1)) with pre = forward(x) + residual, in one pass:
        a Bi-Real block's batch norm, shortcut add and Hardtanh, rounded as the
        layers one after another round them."""
        scale, shift = self.scale_shift(x)
        pre = np.empty_like(x)
        out = np.empty_like(x)
        F.channel_affine_add_hardtanh(x, scale, shift, residual, pre, out)
        return pre, out

    def scale_shift(self, x):
        """Per-channel (scale, shift) in x's dtype: batch statistics (updating the
        running ones) in training, running statistics in eval; caches for backward.
        forward(x) is x * scale[c] + shift[c]; a parent that fuses that map into
        a pass of its own calls this instead of forward."""
        dtype = x.dtype
        if self.training:
            n, _, h, w = x.shape
            m = n * h * w
            mean, var = F.batch_stats(x)
            mom = self.momentum
            self.running_mean = ((1 - mom) * self.running_mean + mom * mean).astype(dtype)
            self.running_var = ((1 - mom) * self.running_var
                                + mom * var * m / max(m - 1, 1)).astype(dtype)
        else:
            mean, var = self.running_mean.astype(np.float64), self.running_var.astype(np.float64)
        scale, shift, inv_std = self._affine(mean, var)
        # x itself is kept (not xhat): the backward recomputes xhat on the fly
        self.cache = (x, mean, inv_std, self.training)
        return scale.astype(dtype), shift.astype(dtype)

    def _affine(self, mean, var):
        inv_std = 1.0 / np.sqrt(var + self.eps)
        scale = self.weight.data * inv_std
        return scale, self.bias.data - mean * scale, inv_std

    def eval_affine(self, dtype=np.float32):
        """(scale, shift) of the eval-mode map x * scale[c] + shift[c], computed as
        forward computes them (float64 statistics, cast last): the integer engine
        uses these very arrays, so both give the same outputs bit for bit."""
        scale, shift, _ = self._affine(self.running_mean.astype(np.float64),
                                       self.running_var.astype(np.float64))
        return scale.astype(dtype), shift.astype(dtype)

    def backward(self, dout):
        x, mean, inv_std, training = self.cache
        self.cache = None
        dout = np.ascontiguousarray(dout)
        dbeta, dgamma = F.bn_backward_sums(dout, x, mean, inv_std)
        self.weight.grad += dgamma.astype(dout.dtype)
        self.bias.grad += dbeta.astype(dout.dtype)
        gamma = self.weight.data.astype(np.float64)
        dx = np.empty_like(dout)
        if not training:  # eval mode: a fixed affine map
            k = gamma * inv_std
            F.channel_affine(dout, k.astype(dout.dtype), np.zeros_like(k, dout.dtype), dx)
            return dx
        F.bn_backward_dx(dout, x, mean, inv_std, gamma, dbeta, dgamma, dx)
        return dx


class ReLU(Module):
    def forward(self, x):
        return self.keep(F.relu(x))

    def keep(self, out):
        """Keep ``out`` for the backward: the output of a ReLU a parent computed
        fused with the layers before it."""
        self.cache = out
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self.cache)


class Hardtanh(Module):
    """clip(x, -1, 1); gradient 1 inside, 0 outside."""

    def forward(self, x):
        return F.hardtanh(self.keep(x))

    def keep(self, x):
        """Keep the input ``x`` for the backward: the input of a Hardtanh a
        parent computed fused with the layers before it."""
        self.cache = x
        return x

    def backward(self, dout):
        return F.clip_backward(dout, self.cache)


class Linear(Module):
    def __init__(self, in_features, out_features, rng=None):
        rng = rng if rng is not None else np.random.default_rng(0)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(draw((out_features, in_features), rng,
                                     lambda n: rng.uniform(-bound, bound, n)), decay=True)
        self.bias = Parameter(draw(out_features, rng, lambda n: rng.uniform(-bound, bound, n)))
        self.cache = None

    def forward(self, x):
        self.cache = x
        return x @ self.weight.data.T + self.bias.data

    def backward(self, dout):
        self.weight.grad += dout.T @ self.cache
        self.bias.grad += dout.sum(axis=0)
        dx = dout @ self.weight.data
        self.cache = None
        return dx


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): mean over space."""

    def forward(self, x):
        self.cache = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        n, c, h, w = self.cache
        return np.broadcast_to((dout / (h * w))[:, :, None, None], self.cache).copy()


class MaxPool2d(Module):
    """k x k max pooling; padding never wins (it counts as -inf), the gradient
    goes to the first maximum of each window."""

    def __init__(self, kernel_size=3, stride=2, padding=1):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        n, c, h, w = x.shape
        k, p = self.kernel_size, self.padding
        xp = np.pad(x.reshape(n * c, 1, h, w), ((0, 0), (0, 0), (p, p), (p, p)),
                    constant_values=-np.inf)
        cols, (ho, wo) = fastconv.im2col(xp, k, k, self.stride, 0)
        arg = cols.argmax(axis=0)
        self.cache = (x.shape, xp.shape, arg)
        return cols[arg, np.arange(cols.shape[1])].reshape(n, c, ho, wo)

    def backward(self, dout):
        x_shape, xp_shape, arg = self.cache
        k, p = self.kernel_size, self.padding
        dcols = np.zeros((k * k, arg.size), dtype=dout.dtype)
        dcols[arg, np.arange(arg.size)] = dout.reshape(-1)
        dxp = fastconv.col2im(dcols, xp_shape, k, k, self.stride, 0)
        h, w = x_shape[2:]
        return np.ascontiguousarray(dxp[:, 0, p:p + h, p:p + w]).reshape(x_shape)


class Flatten(Module):
    def forward(self, x):
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.cache)


class ShortcutA(Module):
    """He et al.'s option-A shortcut: stride-2 subsampling, then zero
    channels padded equally on both sides (no parameters)."""

    def __init__(self, in_planes, planes, stride):
        self.stride = stride
        self.pad_lo = (planes - in_planes) // 2
        self.pad_hi = planes - in_planes - self.pad_lo

    def forward(self, x):
        self.cache = x.shape
        sub = x[:, :, ::self.stride, ::self.stride]
        return np.pad(sub, ((0, 0), (self.pad_lo, self.pad_hi), (0, 0), (0, 0)))

    def backward(self, dout):
        dx = np.zeros(self.cache, dtype=dout.dtype)
        c = self.cache[1]
        dx[:, :, ::self.stride, ::self.stride] = dout[:, self.pad_lo:self.pad_lo + c]
        return dx


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class LearnableBias(Module):
    """A learnable per-channel shift, out = x + bias[c] (ReActNet's RSign
    threshold and RPReLU shifts). ``bias`` has PyTorch's shape (1, C, 1, 1),
    as in the authors' ``LearnableBias``, so their checkpoints load as is."""

    def __init__(self, num_channels):
        self.bias = Parameter(np.zeros((1, num_channels, 1, 1), np.float32))

    def forward(self, x):
        out = np.empty_like(x)
        b = self.bias.data.reshape(-1).astype(x.dtype)
        # x * 1 + b is exactly x + b: one parallel pass instead of numpy's broadcast add
        F.channel_affine(x, np.ones_like(b), b, out)
        return out

    def backward(self, dout):
        self.bias.grad += F.channel_sums(np.ascontiguousarray(dout)).reshape(
            self.bias.grad.shape).astype(dout.dtype)
        return dout


class PReLU(Module):
    """max(x, 0) + weight[c] * min(x, 0), one slope per channel (initially 0.25,
    as in PyTorch)."""

    def __init__(self, num_parameters, init=0.25):
        self.weight = Parameter(np.full(num_parameters, init, np.float32))
        self.cache = None

    def forward(self, x):
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        F.prelu(x, self.weight.data.astype(x.dtype), out)
        self.cache = x
        return out

    def backward(self, dout):
        x, self.cache = self.cache, None
        dx = np.empty_like(x)
        dslope = F.prelu_backward(np.ascontiguousarray(dout), x,
                                  self.weight.data.astype(x.dtype), dx)
        self.weight.grad += dslope.astype(dout.dtype)
        return dx


class AvgPool2d(Module):
    """Non-overlapping k x k average pooling (stride k, no padding); rows and
    columns past the last whole window are dropped, as PyTorch does."""

    def __init__(self, kernel_size=2):
        self.kernel_size = kernel_size
        self.cache = None

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.kernel_size
        ho, wo = h // k, w // k
        if ho == 0 or wo == 0:
            raise ValueError(f"AvgPool2d({k}): input {x.shape} is smaller than one window")
        self.cache = x.shape
        windows = x[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k)
        return windows.sum(axis=(3, 5), dtype=x.dtype) / x.dtype.type(k * k)

    def backward(self, dout):
        n, c, h, w = self.cache
        k = self.kernel_size
        share = dout / dout.dtype.type(k * k)
        dx = np.zeros(self.cache, dtype=dout.dtype)
        ho, wo = dout.shape[2:]
        dx[:, :, :ho * k, :wo * k] = np.repeat(np.repeat(share, k, axis=2), k, axis=3)
        return dx


class BasicBlock(Module):
    """CIFAR ResNet basic block (He et al. 2016), two 3x3 convs.

    ``conv(c_in, c_out, stride)`` builds each 3x3 conv (full precision,
    binary or sub-bit) and ``act()`` each activation, so quantized models
    reuse this block. With ``double_shortcut`` (used with binary
    activations, as in Bi-Real Net) each conv gets its own residual:
    h = act(bn1(conv1(x)) + shortcut(x)); out = act(bn2(conv2(h)) + h).
    Otherwise the standard block: out = act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x)).
    """

    def __init__(self, in_planes, planes, stride, conv, act, double_shortcut=False):
        self.conv1 = conv(in_planes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.act1 = act()
        self.conv2 = conv(planes, planes, 1)
        self.bn2 = BatchNorm2d(planes)
        self.act2 = act()
        self.shortcut = (ShortcutA(in_planes, planes, stride)
                         if stride != 1 or in_planes != planes else Identity())
        self.double_shortcut = double_shortcut

    def forward(self, x):
        if self._fuses_relu():
            h = self.act1.keep(self.bn1.forward_relu(self.conv1(x)))
            return self.act2.keep(self.bn2.forward_relu(self.conv2(h), self.shortcut(x)))
        if self._fuses_hardtanh():
            pre, h = self.bn1.forward_add_hardtanh(self.conv1(x), self.shortcut(x))
            self.act1.keep(pre)
            pre, out = self.bn2.forward_add_hardtanh(self.conv2(h), h)
            self.act2.keep(pre)
            return out
        out = self.bn1(self.conv1(x))
        if self.double_shortcut:
            F.add(out, self.shortcut(x), out)
        h = self.act1(out)
        out = self.bn2(self.conv2(h))
        F.add(out, h if self.double_shortcut else self.shortcut(x), out)
        return self.act2(out)

    def _fuses_relu(self):
        """ReLU blocks run batch norm, shortcut add and ReLU in one pass
        (BatchNorm2d.forward_relu) unless a hook needs the layers' own outputs."""
        return (isinstance(self.act1, ReLU) and isinstance(self.act2, ReLU)
                and not self.double_shortcut and not self._hooked())

    def _fuses_hardtanh(self):
        """Bi-Real blocks (Hardtanh, a shortcut per conv) likewise run each batch
        norm, shortcut add and Hardtanh in one pass (BatchNorm2d.forward_add_hardtanh)."""
        return (isinstance(self.act1, Hardtanh) and isinstance(self.act2, Hardtanh)
                and self.double_shortcut and not self._hooked())

    def _hooked(self):
        return any(m.has_forward_hooks() for m in (self.bn1, self.act1, self.bn2, self.act2))

    def backward(self, dout):
        dout = self.act2.backward(dout)
        dh = self.conv2.backward(self.bn2.backward(dout))
        if self.double_shortcut:
            F.add(dh, dout, dh)
        dmid = self.act1.backward(dh)
        dx = self.conv1.backward(self.bn1.backward(dmid))
        F.add(dx, self.shortcut.backward(dmid if self.double_shortcut else dout), dx)
        return dx


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) and its gradient w.r.t. logits."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), labels] -= 1
    return float(loss), dlogits / n


def distillation_loss(student_logits, teacher_logits):
    """Mean over the batch of -sum_c softmax(teacher)_c * log_softmax(student)_c
    (ReActNet's distribution loss) and its gradient w.r.t. the student's
    logits, (softmax(student) - softmax(teacher)) / N."""
    n = student_logits.shape[0]
    z = student_logits - student_logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    t = teacher_logits - teacher_logits.max(axis=1, keepdims=True)
    q = np.exp(t)
    q /= q.sum(axis=1, keepdims=True)
    loss = -(q * logp).sum(axis=1).mean()
    return float(loss), ((np.exp(logp) - q) / n).astype(student_logits.dtype)
