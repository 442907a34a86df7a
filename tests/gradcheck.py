"""Finite-difference gradient checking in float64, and byte-for-byte module
comparison, shared by the tests."""

import numpy as np


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() w.r.t. the array x (in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad


def assert_close(analytic, numeric, name, rtol=1e-5, atol=1e-7):
    err = np.abs(analytic - numeric).max() if analytic.size else 0.0
    scale = max(np.abs(numeric).max() if numeric.size else 0.0, 1e-8)
    assert np.allclose(analytic, numeric, rtol=rtol, atol=atol), \
        f"{name}: max abs error {err:.3g} (max |grad| {scale:.3g})"


def check_module(module, x, rng, params=True, atol=1e-7, rtol=1e-5):
    """Check backward of ``module`` (float64) against finite differences of
    sum(forward(x) * r): input gradient and every parameter's gradient."""
    module.astype(np.float64)
    x = x.astype(np.float64)
    out = module.forward(x)
    r = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(module.forward(x) * r))

    module.zero_grad()
    module.forward(x)
    dx = module.backward(r)
    analytic = {name: p.grad.copy() for name, p in module.named_parameters()}
    assert_close(dx, numerical_grad(loss, x), "input", rtol, atol)
    if params:
        for name, p in module.named_parameters():
            assert_close(analytic[name], numerical_grad(loss, p.data), name, rtol, atol)


def assert_same_bytes(modules, x, dout):
    """Two modules built alike (e.g. a fused path and its layer-by-layer twin)
    give the same outputs, input and parameter gradients and buffers, bit for bit."""
    outs = [m.forward(x) for m in modules]
    assert outs[0].tobytes() == outs[1].tobytes()
    dxs = [m.backward(dout) for m in modules]
    assert dxs[0].tobytes() == dxs[1].tobytes()
    for (name, p), (_, q) in zip(modules[0].named_parameters(), modules[1].named_parameters()):
        assert p.grad.tobytes() == q.grad.tobytes(), name
    for (name, a), (_, b) in zip(modules[0].named_buffers(), modules[1].named_buffers()):
        assert a.tobytes() == b.tobytes(), name


def signed_zero_pair(rng, shape, dtype, x_scale=1.0):
    """An input and a shortcut for the fused element-wise kernels' byte tests:
    normal values with exact zeros and negative zeros sprinkled in, so a kernel
    that reorders an add or drops a sign of zero shows up."""
    x = (rng.standard_normal(shape) * x_scale).astype(dtype)
    residual = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::4] = 0.0
    x.reshape(-1)[1::5] = -0.0
    residual.reshape(-1)[::3] = -0.0
    return x, residual
