"""Optimizers: one step's values computed by hand, hyperparameter validation, state_dict."""

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import nn, optim


def _param_with_grad(values, grad):
    p = nn.Parameter(tg.tensor(np.array(values, dtype=np.float64)))
    p.grad = tg.tensor(np.array(grad, dtype=np.float64))
    return p


def test_plain_sgd_step():
    p = _param_with_grad([1.0, 2.0], [0.5, -1.0])
    optim.SGD([p], lr=0.1).step()
    assert np.allclose(p.data, [0.95, 2.1])


def test_sgd_momentum_dampening_weight_decay_nesterov_by_hand():
    p = _param_with_grad([1.0], [0.5])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
    g1 = 0.5 + 0.01 * 1.0       # weight decay is added to the gradient
    opt.step()                   # first step: buffer = g (no dampening on the first step)
    w1 = 1.0 - 0.1 * g1
    assert p.data[0] == pytest.approx(w1)
    g2 = 0.5 + 0.01 * w1
    buf = 0.9 * g1 + 0.9 * g2    # buf = momentum * buf + (1 - dampening) * g
    opt.step()
    assert p.data[0] == pytest.approx(w1 - 0.1 * buf)

    q = _param_with_grad([1.0], [0.5])
    nesterov = optim.SGD([q], lr=0.1, momentum=0.9, nesterov=True)
    nesterov.step()              # buf = g; update = g + momentum * buf
    assert q.data[0] == pytest.approx(1.0 - 0.1 * (0.5 + 0.9 * 0.5))


def test_adam_first_two_steps_by_hand():
    p = _param_with_grad([1.0], [0.2])
    opt = optim.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    opt.step()                   # m_hat = g, v_hat = g^2: the first step is lr * sign(g)
    assert p.data[0] == pytest.approx(1.0 - 0.01 * 0.2 / (0.2 + 1e-8))
    p.grad = tg.tensor(np.array([-0.4]))
    m = 0.9 * 0.1 * 0.2 + 0.1 * -0.4
    v = 0.999 * 0.001 * 0.04 + 0.001 * 0.16
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    expected = p.data[0] - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8)
    opt.step()
    assert p.data[0] == pytest.approx(expected)


def test_step_is_in_place_and_outside_the_graph():
    lin = nn.Linear(3, 2)
    weight_array = lin.weight.data
    lin(tg.ones(1, 3)).sum().backward()
    optim.SGD(lin.parameters(), lr=0.1, momentum=0.9).step()
    assert lin.weight.data is weight_array and lin.weight.is_leaf and lin.weight.dtype == tg.float32


def test_params_without_grad_are_skipped():
    p = _param_with_grad([1.0], [1.0])
    q = nn.Parameter(tg.tensor(np.array([3.0])))
    optim.Adam([p, q]).step()
    assert q.data[0] == 3.0 and p.data[0] != 1.0


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=-1), lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5),
    lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1),
    lambda ps: optim.SGD(ps, lr=0.1, nesterov=True),               # nesterov needs momentum
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True),
    lambda ps: optim.Adam(ps, lr=-1), lambda ps: optim.Adam(ps, betas=(1.0, 0.999)),
    lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), lambda ps: optim.Adam(ps, eps=-1e-8),
    lambda ps: optim.Adam(ps, weight_decay=-0.1)])
def test_invalid_hyperparameters_raise(make):
    with pytest.raises(ValueError):
        make([nn.Parameter(tg.zeros(1))])


def test_zero_grad_set_to_none_or_zero():
    p = _param_with_grad([1.0], [2.0])
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0]
    opt.zero_grad()
    assert p.grad is None


def test_param_groups_have_their_own_lr():
    a, b = _param_with_grad([1.0], [1.0]), _param_with_grad([1.0], [1.0])
    optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1).step()
    assert a.data[0] == pytest.approx(0.9) and b.data[0] == pytest.approx(0.5)


def test_optimizer_state_dict_round_trip_continues_identically():
    def run(opt_factory, reload):
        p = _param_with_grad([1.0, -1.0], [0.3, 0.1])
        opt = opt_factory([p])
        opt.step()
        if reload:
            saved = opt.state_dict()
            opt = opt_factory([p])
            opt.load_state_dict(saved)
        opt.step()
        return p.data.copy()

    for factory in (lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)):
        assert np.array_equal(run(factory, False), run(factory, True))


def test_optimizer_rejects_non_tensors():
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.zeros(2)], lr=0.1)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1)], ids=["sgd", "sgd-momentum", "adam"])
def test_a_parameter_listed_twice_warns_and_is_updated_once(make):
    """optim.SGD([w, w]): PyTorch warns (and would update w twice); here w is kept once."""
    once, twice = _param_with_grad([1.0, -2.0], [0.5, 0.25]), _param_with_grad([1.0, -2.0], [0.5, 0.25])
    reference = make([once])
    with pytest.warns(UserWarning, match="optimizer contains a parameter group with duplicate parameters"):
        opt = make([twice, twice])
    assert len(opt.param_groups[0]["params"]) == 1 and opt.param_groups[0]["params"][0] is twice
    for _ in range(3):
        reference.step()
        opt.step()
    np.testing.assert_array_equal(twice.data, once.data)


def test_a_parameter_in_two_groups_is_refused():
    a, b = _param_with_grad([1.0], [1.0]), _param_with_grad([1.0], [1.0])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.SGD([{"params": [a, b]}, {"params": [b], "lr": 0.5}], lr=0.1)
    opt = optim.SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": a})
    assert len(opt.param_groups) == 1
