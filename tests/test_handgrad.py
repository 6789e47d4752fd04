"""Hand-derived gradients against autograd and finite differences."""

import numpy as np
import pytest

from tinygrad_edu import backend, handgrad as hg


def _shallow_data(batch, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, n)), (rng.random(batch) > 0.5).astype(np.float64)


@pytest.mark.parametrize("form", ["gradients_loop", "gradients_outer", "gradients_batch"])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("backend_name", backend.available())
def test_shallow_hand_forms_match_autograd(form, batch, backend_name):
    X, Y = _shallow_data(batch)
    model = hg.ShallowNet(6, 5, seed=batch)
    with backend.use(backend_name):
        hand = getattr(model, form)(X, Y)
        auto = model.autograd_gradients(X, Y)
    hg.assert_agree(hand, auto, rtol=1e-10)


def test_shallow_hand_matches_finite_differences():
    X, Y = _shallow_data(32)
    model = hg.ShallowNet(6, 5)
    hg.assert_agree(model.gradients_batch(X, Y),
                    hg.numerical_gradients(lambda: model.cost(X, Y), model.params()), rtol=1e-6)


def test_module_shares_the_weight_arrays():
    model = hg.ShallowNet(3, 2)
    module = model.module()
    for p in module.parameters():
        p.data -= 1.0                 # an optimizer step on the module...
    assert np.allclose(model.W1, module[0].weight.data) and model.b2 == module[2].bias.data[0]


@pytest.mark.parametrize("layers", [2, 3, 4, 5])
@pytest.mark.parametrize("batch", [1, 32])
def test_deep_mlp_hand_backprop_matches_autograd_and_finite_differences(layers, batch):
    sizes = [7, 9, 8, 6, 5][:layers] + [4]
    rng = np.random.default_rng(layers)
    X, y = rng.standard_normal((batch, 7)), rng.integers(0, 4, batch)
    model = hg.DeepMLP(sizes, seed=layers)
    hand = model.gradients(X, y)
    assert list(hand) == [f"{k}{l}" for l in range(1, layers + 1) for k in "Wb"]
    hg.assert_agree(hand, model.autograd_gradients(X, y), rtol=1e-10)
    hg.assert_agree(hand, hg.numerical_gradients(lambda: model.cost(X, y), model.params()), rtol=1e-6)


def test_a_wrong_hand_gradient_is_caught_and_named():
    X, Y = _shallow_data(16)
    model = hg.ShallowNet(6, 5)
    A2, (Z1, A1, Z2, _) = model.predict(X)
    D1_without_tanh_factor = (A2 - Y)[:, None] * model.W2     # forgot (1 - a1^2)
    wrong = dict(model.gradients_batch(X, Y), b1=D1_without_tanh_factor.sum(0),
                 W1=D1_without_tanh_factor.T @ X)
    with pytest.raises(AssertionError, match=r"W1 \(max relative.*b1 \(max relative"):
        hg.assert_agree(wrong, model.autograd_gradients(X, Y), rtol=1e-10)


def test_float32_agrees_to_float32_precision():
    X, Y = _shallow_data(32)
    model = hg.ShallowNet(6, 5, dtype=np.float32)
    hand = model.gradients_batch(X.astype(np.float32), Y.astype(np.float32))
    auto = model.autograd_gradients(X.astype(np.float32), Y.astype(np.float32))
    assert all(g.dtype == np.float32 for g in auto.values())
    hg.assert_agree(hand, auto, rtol=1e-5)
