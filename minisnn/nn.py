"""Neural-network layers in plain numpy, CS231n style.

Every layer is a small class with ``forward(x)`` and ``backward(dout)``;
``forward`` keeps what ``backward`` needs in ``self.cache``. Parameters are
:class:`Parameter` objects holding ``data`` and ``grad`` side by side.
Arrays are float32 NCHW; weights are (C_out, C_in, kH, kW). Gradient checks
run the same code in float64: layers keep the dtype they are given.
"""

import numpy as np

from . import functional as F


class Parameter:
    """A trainable array with its gradient beside it.

    ``decay`` says whether the optimizer applies weight decay to it: conv
    and linear weights (latent weights of binary convs included) get it,
    biases, batch-norm affine parameters and sub-bit codebook parameters
    do not.
    """

    __slots__ = ("data", "grad", "decay")

    def __init__(self, data, decay=False):
        self.data = data
        self.grad = np.zeros_like(data)
        self.decay = decay


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
        return self.forward(x)

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

    def state_dict(self):
        """Named arrays of every parameter and buffer (copies)."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state, source="state dict"):
        """Copy arrays in, checking names, shapes and dtype kinds.

        Raises ValueError naming ``source``, the array, and the expected vs
        found shape, for a missing, unexpected or misshapen array.
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


class Sequential(Module):
    def __init__(self, *layers):
        self.layers = list(layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout
