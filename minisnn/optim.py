"""Optimizers (SGD, Adam) and learning-rate schedules.

Weight decay applies to the parameters that ``decay(name, param)`` picks;
by default those created with ``decay=True``: conv and linear weights, the
latent real weights of binary and sub-bit convs included, while biases,
batch-norm scale/shift, shifts, PReLU slopes and sub-bit codebook
parameters get none. :data:`DECAY_RULES` names the choices. SGD and Adam
add it to the gradient (L2, as PyTorch's SGD and Adam); AdamW decouples it.
"""

import math

import numpy as np


def decay_flag(name, param):
    """minisnn's rule: the parameters created with ``decay=True``."""
    return param.decay


def decay_authors(name, param):
    """The sub-bit authors' rule (their train.py): 4-D parameters and any
    whose name contains 'conv', so the (1, C, 1, 1) shifts and the codebook
    patterns decay too and the classifier does not."""
    return param.data.ndim == 4 or "conv" in name


DECAY_RULES = {"minisnn": decay_flag, "authors": decay_authors}


class Optimizer:
    def __init__(self, named_params, lr, decay=decay_flag):
        self.params = list(named_params)
        names = [n for n, _ in self.params]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        self.lr = lr
        self.decays = {n: bool(decay(n, p)) for n, p in self.params}
        self.state = {}  # name -> array, e.g. "layer1.0.conv1.weight.momentum"

    def state_dict(self):
        return {k: v.copy() for k, v in self.state.items()}

    def load_state_dict(self, state, source="optimizer state"):
        for key, value in state.items():
            name = key.rsplit(".", 1)[0]
            shapes = {n: p.data.shape for n, p in self.params}
            if name not in shapes:
                raise ValueError(f"{source}: optimizer array {key!r} matches no parameter")
            if value.shape != shapes[name]:
                raise ValueError(f"{source}: optimizer array {key!r} has shape {value.shape}, "
                                 f"expected {shapes[name]}")
        self.state = {k: np.array(v) for k, v in state.items()}

    def zero_grad(self):
        for _, p in self.params:
            p.grad[...] = 0


class SGD(Optimizer):
    """SGD with (Nesterov) momentum, PyTorch's formulation:
    g += wd * w; v = mu * v + g; w -= lr * (g + mu * v if nesterov else v)."""

    def __init__(self, named_params, lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0,
                 decay=decay_flag):
        super().__init__(named_params, lr, decay)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def step(self):
        mu = self.momentum
        for name, p in self.params:
            g = p.grad
            if self.weight_decay and self.decays[name]:
                g = g + self.weight_decay * p.data
            if mu:
                key = name + ".momentum"
                v = self.state.get(key)
                if v is None:
                    v = self.state[key] = g.copy()
                else:
                    v *= mu
                    v += g
                g = g + mu * v if self.nesterov else v
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam as PyTorch's ``torch.optim.Adam``: weight decay is L2, added to
    the gradient before the moments (what the sub-bit authors train with)."""

    decoupled = False

    def __init__(self, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decay=decay_flag):
        super().__init__(named_params, lr, decay)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self):
        b1, b2 = self.betas
        t = int(self.state.get("__step__.t", np.zeros(())) + 1)
        self.state["__step__.t"] = np.array(t)
        for name, p in self.params:
            m = self.state.setdefault(name + ".m", np.zeros_like(p.data))
            v = self.state.setdefault(name + ".v", np.zeros_like(p.data))
            g = p.grad
            decays = self.weight_decay and self.decays[name]
            if decays and not self.decoupled:
                g = g + self.weight_decay * p.data
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            if decays and self.decoupled:
                p.data -= (self.lr * self.weight_decay * p.data).astype(p.data.dtype)
            p.data -= (self.lr * mhat / (np.sqrt(vhat) + self.eps)).astype(p.data.dtype)

    def load_state_dict(self, state, source="optimizer state"):
        rest = {k: v for k, v in state.items() if not k.startswith("__step__.")}
        super().load_state_dict(rest, source)
        self.state.update({k: np.array(v) for k, v in state.items() if k.startswith("__step__.")})


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter; PyTorch's AdamW)."""

    decoupled = True


class ParamGroups:
    """Disjoint parameter groups, each stepped by its own optimizer.

    ``groups`` is a list of ``(optimizer, lr_ratio)``. Setting ``lr`` (what
    the training loop schedules) gives each optimizer ``lr * lr_ratio``, so
    every group follows the one schedule at its own scale. The state of
    group i is kept under ``g<i>/`` (two Adams both count steps).
    """

    def __init__(self, groups):
        self.groups = [(opt, float(ratio)) for opt, ratio in groups]
        seen = set()
        for opt, _ in self.groups:
            for name, _ in opt.params:
                if name in seen:
                    raise ValueError(f"parameter {name!r} is in two parameter groups")
                seen.add(name)
        self._lr = self.groups[0][0].lr / self.groups[0][1]

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = value
        for opt, ratio in self.groups:
            opt.lr = value * ratio

    def step(self):
        for opt, _ in self.groups:
            opt.step()

    def zero_grad(self):
        for opt, _ in self.groups:
            opt.zero_grad()

    def state_dict(self):
        return {f"g{i}/{k}": v for i, (opt, _) in enumerate(self.groups)
                for k, v in opt.state_dict().items()}

    def load_state_dict(self, state, source="optimizer state"):
        parts = [{} for _ in self.groups]
        for key, value in state.items():
            group, sep, rest = key.partition("/")
            if not (sep and group[:1] == "g" and group[1:].isdigit()
                    and int(group[1:]) < len(self.groups)):
                raise ValueError(f"{source}: optimizer array {key!r} belongs to no group "
                                 f"(expected g0/ .. g{len(self.groups) - 1}/)")
            parts[int(group[1:])][rest] = value
        for i, ((opt, _), part) in enumerate(zip(self.groups, parts)):
            opt.load_state_dict(part, source=f"{source}, group {i}")


OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(name, named_params, lr, momentum=0.9, nesterov=True, weight_decay=0.0,
                   decay=decay_flag):
    if name == "sgd":
        return SGD(named_params, lr, momentum, nesterov, weight_decay, decay)
    if name in ("adam", "adamw"):
        return (Adam if name == "adam" else AdamW)(named_params, lr, weight_decay=weight_decay,
                                                   decay=decay)
    raise ValueError(f"unknown optimizer {name!r}, expected one of {OPTIMIZERS}")


SCHEDULES = ("cosine", "linear", "step", "constant")


def lr_at(step, total_steps, base_lr, schedule="cosine", warmup_steps=0,
          milestones=(0.5, 0.75), gamma=0.1, final_lr=0.0):
    """Learning rate at ``step`` (0-based) of ``total_steps``.

    Linear warm-up from base_lr/warmup_steps over ``warmup_steps``, then
    'cosine' (to final_lr at the end), 'linear' (straight down to final_lr,
    updated every step, reached one step after the last: the authors decay
    per epoch, base_lr * (1 - epoch / epochs)), 'step' (times gamma at each
    milestone, given as fractions of the run) or 'constant'.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}, expected one of {SCHEDULES}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        passed = sum(step >= m * total_steps for m in milestones)
        return base_lr * gamma ** passed
    span = max(total_steps - warmup_steps, 1)
    t = min((step - warmup_steps) / span, 1.0)
    if schedule == "linear":
        return final_lr + (base_lr - final_lr) * (1 - t)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * t))
