import numpy as np
import pytest

from minisnn.nn import Parameter
from minisnn.optim import SGD, Adam, AdamW, ParamGroups, decay_authors, lr_at, make_optimizer


def _params():
    return [("w", Parameter(np.array([1.0, -2.0]), decay=True)),
            ("b", Parameter(np.array([0.5]), decay=False))]


def _grads(t):
    return {"w": np.array([0.1 * t, -0.3]), "b": np.array([0.2 + t])}


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference_recursion(nesterov):
    params = _params()
    opt = SGD(params, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    w, b = params[0][1].data.copy(), params[1][1].data.copy()
    vw = vb = None
    for t in range(5):
        g = _grads(t)
        for name, p in params:
            p.grad = g[name].copy()
        opt.step()
        gw = g["w"] + 0.01 * w  # decay on w only
        gb = g["b"]
        vw = gw if vw is None else 0.9 * vw + gw
        vb = gb if vb is None else 0.9 * vb + gb
        w = w - 0.1 * (gw + 0.9 * vw if nesterov else vw)
        b = b - 0.1 * (gb + 0.9 * vb if nesterov else vb)
        np.testing.assert_allclose(params[0][1].data, w, rtol=1e-12)
        np.testing.assert_allclose(params[1][1].data, b, rtol=1e-12)


def test_adamw_matches_reference():
    params = _params()
    opt = AdamW(params, lr=0.01, weight_decay=0.1)
    w = params[0][1].data.copy()
    m = v = np.zeros(2)
    for t in range(1, 4):
        g = _grads(t)
        for name, p in params:
            p.grad = g[name].copy()
        opt.step()
        m = 0.9 * m + 0.1 * g["w"]
        v = 0.999 * v + 0.001 * g["w"] ** 2
        w = w - 0.01 * 0.1 * w
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(params[0][1].data, w, rtol=1e-12)


def test_adam_is_pytorchs_l2_adam():
    """torch.optim.Adam: g += wd * w before the moments (the authors' optimizer)."""
    params = _params()
    opt = make_optimizer("adam", params, lr=0.01, weight_decay=0.1)
    assert type(opt) is Adam
    w = params[0][1].data.copy()
    m = v = np.zeros(2)
    for t in range(1, 4):
        g = _grads(t)
        for name, p in params:
            p.grad = g[name].copy()
        opt.step()
        gw = g["w"] + 0.1 * w
        m = 0.9 * m + 0.1 * gw
        v = 0.999 * v + 0.001 * gw ** 2
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(params[0][1].data, w, rtol=1e-12)


def test_authors_decay_rule_picks_4d_and_conv_parameters():
    from minisnn import models
    m = models.resnet20("snn", "binary", tau=5, block="reactnet")
    named = dict(m.named_parameters())
    picked = {n for n, p in named.items() if decay_authors(n, p)}
    assert "layer1.0.move0.bias" in picked and "layer1.0.binary_conv.weight" in picked
    assert "layer1.0.binary_conv.codebook.weight" in picked  # 'conv' in the name, as theirs
    assert "layer2.0.downsample.1.weight" in picked and "conv1.weight" in picked
    assert not {"fc.weight", "fc.bias", "layer1.0.prelu.weight", "bn1.weight"} & picked
    opt = make_optimizer("adam", m.named_parameters(), 1e-3, weight_decay=1e-5, decay=decay_authors)
    assert {n for n, d in opt.decays.items() if d} == picked


def test_linear_schedule_decays_to_zero_after_warmup():
    lrs = [lr_at(s, 10, 1.0, "linear", warmup_steps=2) for s in range(10)]
    np.testing.assert_allclose(lrs, [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lr_at(0, 4, 2e-3, "linear") == 2e-3 and lr_at(3, 4, 2e-3, "linear") == pytest.approx(5e-4)


def test_optimizer_state_round_trip_continues_identically():
    def run(split):
        params = _params()
        opt = make_optimizer("adam", params, 0.01, weight_decay=0.1)
        for t in range(6):
            if t == split:
                state = opt.state_dict()
                params = [(n, Parameter(p.data.copy(), p.decay)) for n, p in params]
                opt = make_optimizer("adam", params, 0.01, weight_decay=0.1)
                opt.load_state_dict(state)
            for name, p in params:
                p.grad = _grads(t)[name].copy()
            opt.step()
        return params[0][1].data
    np.testing.assert_array_equal(run(split=3), run(split=99))


def test_optimizer_state_errors_name_the_array():
    opt = SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match=r"'w.momentum' has shape \(3,\), expected \(2,\)"):
        opt.load_state_dict({"w.momentum": np.zeros(3)}, source="x.npz")
    with pytest.raises(ValueError, match="'q.momentum' matches no parameter"):
        opt.load_state_dict({"q.momentum": np.zeros(3)}, source="x.npz")


def _groups(params):
    # w by SGD at the scheduled lr, b by Adam at a tenth of it
    return ParamGroups([(SGD(params[:1], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), 1.0),
                        (Adam(params[1:], lr=0.01), 0.1)])


def test_param_groups_step_each_group_as_its_optimizer_alone():
    params, alone = _params(), _params()
    groups = _groups(params)
    sgd = SGD(alone[:1], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    adam = Adam(alone[1:], lr=0.01)
    for t in range(5):
        groups.lr, sgd.lr, adam.lr = 0.1 / (t + 1), 0.1 / (t + 1), 0.01 / (t + 1)
        for (name, p), (_, q) in zip(params, alone):
            p.grad, q.grad = _grads(t)[name].copy(), _grads(t)[name].copy()
        groups.step()
        sgd.step()
        adam.step()
        for (_, p), (_, q) in zip(params, alone):
            np.testing.assert_array_equal(p.data, q.data)
    assert groups.lr == 0.1 / 5
    groups.zero_grad()
    assert all(not p.grad.any() for _, p in params)


def test_param_groups_state_round_trip_continues_identically():
    def run(split):
        params = _params()
        opt = _groups(params)
        for t in range(6):
            if t == split:
                state = opt.state_dict()
                params = [(n, Parameter(p.data.copy(), p.decay)) for n, p in params]
                opt = _groups(params)
                opt.load_state_dict(state, source="x.npz")
            for name, p in params:
                p.grad = _grads(t)[name].copy()
            opt.step()
        return [p.data for _, p in params]
    for a, b in zip(run(split=3), run(split=99)):
        np.testing.assert_array_equal(a, b)


def test_param_groups_refuse_shared_parameters_and_foreign_state():
    params = _params()
    with pytest.raises(ValueError, match="'w' is in two parameter groups"):
        ParamGroups([(SGD(params, lr=0.1), 1.0), (Adam(params[:1]), 0.1)])
    opt = _groups(params)
    with pytest.raises(ValueError, match=r"x\.npz: optimizer array 'w.momentum' belongs to no group"):
        opt.load_state_dict({"w.momentum": np.zeros(2)}, source="x.npz")
    with pytest.raises(ValueError, match=r"x\.npz, group 1: optimizer array 'w.m' matches no parameter"):
        opt.load_state_dict({"g1/w.m": np.zeros(2)}, source="x.npz")


def test_schedules():
    assert lr_at(0, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, "cosine") == pytest.approx(0.0)
    assert lr_at(49, 100, 1.0, "step") == 1.0
    assert lr_at(50, 100, 1.0, "step") == pytest.approx(0.1)
    assert lr_at(80, 100, 1.0, "step") == pytest.approx(0.01)
    assert lr_at(70, 100, 0.3, "constant") == 0.3
    with pytest.raises(ValueError, match="unknown schedule 'exponential'"):
        lr_at(0, 10, 1.0, "exponential")
