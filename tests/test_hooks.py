"""Hooks: Tensor.register_hook, Tensor.retain_grad, Module.register_forward_pre_hook,
Module.register_forward_hook, Module.register_full_backward_pre_hook and
Module.register_full_backward_hook, against PyTorch where it has the same API; their errors; the
engine's own gradient arrays out of a hook's reach; and their refusal inside tinygrad_edu.jit."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_edu as tg
from tinygrad_edu import nn, optim
from test_jit import training_step

torch = pytest.importorskip("torch")

needs_c = pytest.mark.skipif("c" not in tg.backend.available(), reason="the C kernels are not built")


def leaves(lib, *arrays):
    return [lib.tensor(a.copy(), requires_grad=True) for a in arrays]


def reuse_graph(x, w):
    """A loss in which h and a are each used several times and x and w twice each: every hook
    below sees a gradient summed over several uses."""
    h = x @ w
    a = h.tanh()
    loss = (a * a + a * h).sum() + (h * 2.0).sum() + (x * x).sum() + w.sum()
    return h, a, loss


def numpy_of(t):
    return t.detach().numpy().copy()


def seen_by_hooks(lib, x_data, w_data, replace=None):
    """The gradients each hook saw (by tensor name, in call order), and the leaves' .grad.
    ``replace``: tensor name -> function making the replacement from the gradient."""
    x, w = leaves(lib, x_data, w_data)
    h, a, loss = reuse_graph(x, w)
    seen = {}
    for name, t in [("x", x), ("w", w), ("h", h), ("a", a), ("loss", loss)]:
        def hook(g, name=name):
            seen.setdefault(name, []).append(numpy_of(g))
            return replace[name](g) if replace and name in replace else None
        t.register_hook(hook)
    loss.backward()
    return seen, numpy_of(x.grad), numpy_of(w.grad)


def assert_same(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert len(ours[name]) == len(theirs[name]) == 1, name   # once per backward, each
        np.testing.assert_allclose(ours[name][0], theirs[name][0], rtol=1e-12, atol=1e-12, err_msg=name)


arrays = st.integers(1, 4).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, (n, 3), elements=st.floats(-2, 2)),
    hnp.arrays(np.float64, (3, 2), elements=st.floats(-2, 2))))


@settings(max_examples=30, deadline=None)
@given(arrays)
def test_hooks_see_the_gradients_pytorch_sees_on_reused_nodes_and_leaves(xw):
    ours, x_grad, w_grad = seen_by_hooks(tg, *xw)
    theirs, tx_grad, tw_grad = seen_by_hooks(torch, *xw)
    assert_same(ours, theirs)
    np.testing.assert_allclose(x_grad, tx_grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w_grad, tw_grad, rtol=1e-12, atol=1e-12)


REPLACEMENTS = {
    "inner node": {"h": lambda g: g * 3.0},
    "two inner nodes": {"a": lambda g: g * -1.0, "h": lambda g: g + 1.0},
    "leaf": {"w": lambda g: g * g},
    "root": {"loss": lambda g: g * 5.0},
}


@pytest.mark.parametrize("replace", REPLACEMENTS.values(), ids=REPLACEMENTS.keys())
def test_a_returned_tensor_replaces_the_gradient_as_in_pytorch(rng, replace):
    x_data, w_data = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    ours, x_grad, w_grad = seen_by_hooks(tg, x_data, w_data, replace)
    theirs, tx_grad, tw_grad = seen_by_hooks(torch, x_data, w_data, replace)
    assert_same(ours, theirs)
    np.testing.assert_allclose(x_grad, tx_grad, rtol=1e-12)
    np.testing.assert_allclose(w_grad, tw_grad, rtol=1e-12)


def test_a_leafs_hook_runs_once_with_the_sum_over_its_uses_before_grad_is_added():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x.grad = tg.tensor([100.0, 100.0, 100.0])   # left by an earlier step
    calls = []
    x.register_hook(lambda g: calls.append((numpy_of(g), numpy_of(x.grad))))
    (x * 2.0 + x * 3.0 + x.sum()).sum().backward()
    assert len(calls) == 1
    seen, grad_while_hooked = calls[0]
    np.testing.assert_array_equal(seen, [8.0, 8.0, 8.0])            # 2 + 3 + 3 uses of the sum
    np.testing.assert_array_equal(grad_while_hooked, [100.0, 100.0, 100.0])   # not yet added
    np.testing.assert_array_equal(x.grad.numpy(), [108.0, 108.0, 108.0])


def test_hooks_run_in_registration_order_each_seeing_the_one_before_its_result():
    x = tg.tensor([1.0, -2.0], requires_grad=True)
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: g * 2.0)
    y.register_hook(lambda g: seen.append(numpy_of(g)))
    y.register_hook(lambda g: g + 1.0)
    y.sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 2.0])
    np.testing.assert_array_equal(x.grad.numpy(), [9.0, 9.0])   # (1 * 2 + 1) * 3


def test_a_hook_on_a_leaf_that_is_the_root_runs_too():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g * 10.0)
    x.backward(tg.tensor([1.0, 0.5]))
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, 5.0])


def retained(lib, x_data, replace_a=False, backwards=1):
    x = lib.tensor(x_data.copy(), requires_grad=True)
    h = x * x
    a = h.tanh() * h
    h.retain_grad()
    a.retain_grad()
    if replace_a:   # registered after retain_grad: .grad still keeps the replaced gradient
        a.register_hook(lambda g: g * 4.0)
    loss = (a * a).sum() + a.sum()
    for _ in range(backwards):
        loss.backward(retain_graph=True)
    return numpy_of(h.grad), numpy_of(a.grad), numpy_of(x.grad), h.retains_grad, x.retains_grad


@pytest.mark.parametrize("replace_a", [False, True])
@pytest.mark.parametrize("backwards", [1, 2])
def test_retain_grad_keeps_inner_gradients_and_accumulates_as_in_pytorch(rng, replace_a, backwards):
    x_data = rng.standard_normal(5)
    ours = retained(tg, x_data, replace_a, backwards)
    theirs = retained(torch, x_data, replace_a, backwards)
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert ours[3:] == theirs[3:] == (True, False)


def test_inner_gradients_are_not_kept_without_retain_grad():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.sum().backward()
    assert h.grad is None and not h.retains_grad


# --- a hook cannot change the engine's arrays, nor the engine the hook's ----------------------
def test_a_hook_cannot_write_into_the_gradient_it_is_given():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0

    def vandal(g):
        g.data[...] = 0.0
    y.register_hook(vandal)
    with pytest.raises(ValueError, match="read-only"):
        y.sum().backward()


def test_gradients_a_hook_kept_or_returned_do_not_change_in_later_backwards():
    """The walk adds into a leaf's .grad in place: a gradient a hook kept, or a tensor it
    returned, must not become that .grad (Add hands its gradient on as it is, to both inputs)."""
    x, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([0.0, 0.0], requires_grad=True)
    kept = []
    s = b + x * 2.0                       # b's gradient is s's gradient, the same array
    s.register_hook(kept.append)
    for _ in range(3):
        s.sum().backward(retain_graph=True)
    np.testing.assert_array_equal(b.grad.numpy(), [3.0, 3.0])
    for t in kept:
        np.testing.assert_array_equal(t.numpy(), [1.0, 1.0])

    returned = []
    b.grad = None
    b.register_hook(lambda g: returned.append(g * 1.0) or returned[-1])
    for _ in range(3):
        s.sum().backward(retain_graph=True)
    np.testing.assert_array_equal(b.grad.numpy(), [3.0, 3.0])
    for t in returned:
        np.testing.assert_array_equal(t.numpy(), [1.0, 1.0])


# --- removal and errors ---------------------------------------------------------------------
def test_a_removed_hook_is_not_called_and_removing_twice_is_harmless():
    x = tg.tensor([1.0], requires_grad=True)
    calls = []
    first = x.register_hook(lambda g: calls.append("first"))
    x.register_hook(lambda g: calls.append("second"))
    with x.register_hook(lambda g: calls.append("scoped")):
        (x * 1.0).sum().backward()
    first.remove()
    first.remove()
    (x * 1.0).sum().backward()
    assert calls == ["first", "second", "scoped", "second"]


def test_a_hook_on_a_tensor_that_does_not_require_grad_is_refused_as_in_pytorch():
    for lib in (tg, torch):
        with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
            lib.tensor([1.0]).register_hook(lambda g: None)
    with pytest.raises(TypeError, match="callable"):
        tg.tensor([1.0], requires_grad=True).register_hook("not a function")


def double_the_wrong_shape(g):
    return tg.tensor([1.0, 2.0, 3.0])


def as_float32(g):
    return g.float()


def a_number(g):
    return 5


@pytest.mark.parametrize("hook, error, message", [
    (double_the_wrong_shape, RuntimeError, r"hook 'double_the_wrong_shape' returned a gradient of shape \(3,\)"),
    (as_float32, RuntimeError, "hook 'as_float32' returned a gradient of shape .* and dtype float32"),
    (a_number, TypeError, "hook 'a_number' returned int"),
])
def test_a_hook_returning_the_wrong_thing_is_named(hook, error, message):
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)   # float64
    y = x * 2.0
    y.register_hook(hook)
    with pytest.raises(error, match=message):
        y.sum().backward()


# --- module hooks ---------------------------------------------------------------------------
def linear_pair():
    ours, theirs = tg.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    return ours, theirs


def test_module_hooks_change_arguments_and_outputs_as_in_pytorch(rng):
    x_data = rng.standard_normal((4, 3))
    results = []
    for lib, layer in zip((tg, torch), linear_pair()):
        seen = []
        layer.register_forward_pre_hook(lambda m, args: args[0] * 2.0)   # one value: made a 1-tuple
        layer.register_forward_pre_hook(lambda m, args: (args[0] + 1.0,))
        layer.register_forward_hook(lambda m, args, out: seen.append((numpy_of(args[0]), numpy_of(out))))
        layer.register_forward_hook(lambda m, args, out: out.relu())
        out = layer(lib.tensor(x_data.copy()))
        results.append((numpy_of(out), *seen[0]))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(results[0][1], x_data * 2.0 + 1.0)   # the hook saw the new args


def test_a_forward_hook_sees_the_module_and_removed_module_hooks_stop():
    layer = tg.nn.ReLU()
    calls = []
    pre = layer.register_forward_pre_hook(lambda m, args: calls.append(("pre", m)))
    post = layer.register_forward_hook(lambda m, args, out: calls.append(("post", m)))
    layer(tg.tensor([1.0]))
    pre.remove()
    post.remove()
    np.testing.assert_array_equal(layer(tg.tensor([-1.0, 2.0])).numpy(), [0.0, 2.0])
    assert calls == [("pre", layer), ("post", layer)]
    other = tg.nn.ReLU()
    assert other._forward_hooks is None   # a hook on one module is not on another of its class


def test_forward_hooks_on_sub_modules_record_activations_during_backward_too(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    means = []
    model[1].register_forward_hook(lambda m, args, out: means.append(float(out.detach().numpy().mean())))
    x = tg.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    model(x).sum().backward()
    expected = np.maximum(x.numpy() @ model[0].weight.data.T + model[0].bias.data, 0).mean()
    assert means == [pytest.approx(expected, rel=1e-6)]
    assert model[0].weight.grad is not None


# --- a module's backward hooks ------------------------------------------------------------------
def twin_mlps():
    """The same float64 MLP on both libraries (PyTorch's initialisation, copied into ours)."""
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3),
                                 torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    ours = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        p.data[...] = q.detach().numpy()
    return ours, theirs


def gradients_seen(lib, model, x_data, x_needs_grad, add_hooks, backwards=1):
    """What each module's backward hooks saw, by module name: per call, (grad_input, grad_output)
    as arrays (None kept); then the parameters' .grad."""
    seen = {}
    add_hooks(model, seen)
    x = lib.tensor(x_data.copy(), requires_grad=x_needs_grad)
    loss = (model(x) ** 2).sum()
    for _ in range(backwards):
        loss.backward(retain_graph=True)
    return seen, [numpy_of(p.grad) for p in model.parameters()]


def record_in(seen, name, result=None):
    def hook(module, grad_input, grad_output):
        seen.setdefault(name, []).append(tuple(tuple(None if g is None else numpy_of(g) for g in grads)
                                               for grads in (grad_input, grad_output)))
        return result(grad_input) if result else None
    return hook


def assert_seen_alike(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert len(ours[name]) == len(theirs[name]), name
        for call_ours, call_theirs in zip(ours[name], theirs[name]):
            for grads_ours, grads_theirs in zip(call_ours, call_theirs):
                assert [g is None for g in grads_ours] == [g is None for g in grads_theirs], name
                for g, h in zip(grads_ours, grads_theirs):
                    if g is not None:
                        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("x_needs_grad", [False, True])
@pytest.mark.parametrize("backwards", [1, 2])
def test_backward_hooks_see_the_gradients_pytorch_sees_layer_by_layer(rng, x_needs_grad, backwards):
    """Each Linear, a Tanh and the whole Sequential: grad_input and grad_output as PyTorch gives
    them, once per backward (a retained graph walked twice calls them twice), and (None,) as
    grad_input where the input needs no gradient."""
    def add_hooks(model, seen):
        for name in ("0", "1", "2", "4"):
            model[int(name)].register_full_backward_hook(record_in(seen, name))
        model.register_full_backward_hook(record_in(seen, "model"))
    x_data = rng.standard_normal((6, 5))
    (ours, theirs) = twin_mlps()
    with pytest.warns(UserWarning) if not x_needs_grad else contextlib.nullcontext():   # PyTorch's
        seen_theirs, grads_theirs = gradients_seen(torch, theirs, x_data, x_needs_grad, add_hooks, backwards)
    seen_ours, grads_ours = gradients_seen(tg, ours, x_data, x_needs_grad, add_hooks, backwards)
    assert_seen_alike(seen_ours, seen_theirs)
    assert (seen_ours["0"][0][0][0] is None) == (not x_needs_grad)
    for g, h in zip(grads_ours, grads_theirs):
        np.testing.assert_allclose(g, h, rtol=1e-12)


@pytest.mark.parametrize("kind", ["grad_input of a Linear", "grad_output of a Linear (pre-hook)"])
def test_a_backward_hook_that_returns_gradients_replaces_them_as_in_pytorch(rng, kind):
    def add_hooks(model, seen):
        if kind.startswith("grad_input"):
            model[2].register_full_backward_hook(record_in(seen, "2", lambda gi: (gi[0] * 3.0,)))
        else:
            model[2].register_full_backward_pre_hook(lambda m, go: (go[0] * 0.5,))
            model[2].register_full_backward_hook(record_in(seen, "2"))
    x_data = rng.standard_normal((6, 5))
    ours, theirs = twin_mlps()
    seen_theirs, grads_theirs = gradients_seen(torch, theirs, x_data, True, add_hooks)
    seen_ours, grads_ours = gradients_seen(tg, ours, x_data, True, add_hooks)
    assert_seen_alike(seen_ours, seen_theirs)
    _, plain = gradients_seen(tg, twin_mlps()[0], x_data, True, lambda model, seen: None)
    assert not np.allclose(grads_ours[0], plain[0])   # the layers below took the new gradient
    for g, h in zip(grads_ours, grads_theirs):
        np.testing.assert_allclose(g, h, rtol=1e-12)


class Bilinear(nn.Module):
    """Two tensor arguments and a number: (a * b).sum(1) * scale."""

    def forward(self, a, b, scale):
        return (a * b).sum(1) * scale


def test_a_module_of_several_arguments_gets_one_entry_each_as_in_pytorch(rng):
    a_data, b_data = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    seen = {}
    results = []
    for lib, module in ((tg, Bilinear()), (torch, torch.nn.Module())):
        if lib is torch:
            module.forward = Bilinear.forward.__get__(module)
        module.register_full_backward_hook(record_in(seen.setdefault(lib.__name__, {}), "m"))
        a, b = leaves(lib, a_data, b_data)
        (module(a, b, 2.0) ** 2).sum().backward()
        results.append((numpy_of(a.grad), numpy_of(b.grad)))
    assert_seen_alike(seen["tinygrad_edu"], seen["torch"])
    assert seen["tinygrad_edu"]["m"][0][0][2] is None   # the number's entry
    for g, h in zip(*results):
        np.testing.assert_allclose(g, h, rtol=1e-12)


def test_backward_hooks_name_what_they_cannot_take(rng):
    a, b = leaves(tg, rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))
    module = Bilinear()
    module.register_full_backward_hook(lambda m, gi, go: (gi[0] * 2.0, gi[1], None))
    with pytest.raises(RuntimeError, match="one argument that needs a gradient, and this call has 2"):
        module(a, b, 1.0).sum().backward()
    layer = nn.Linear(3, 2)
    layer.register_full_backward_hook(lambda m, gi, go: gi[0])
    with pytest.raises(TypeError, match="returned Tensor; it returns None or a tuple of 1"):
        layer(tg.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)).sum().backward()
    pairs = nn.Module()
    pairs.forward = lambda x: (x, x * 2.0)
    pairs.register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(TypeError, match="need it to return one Tensor, but it returned tuple"):
        pairs(tg.ones(2, requires_grad=True))


def test_a_removed_backward_hook_is_not_called_and_no_grad_calls_none():
    layer = nn.Linear(3, 2)
    calls = []
    handle = layer.register_full_backward_hook(lambda m, gi, go: calls.append(m))
    pre = layer.register_full_backward_pre_hook(lambda m, go: calls.append("pre"))
    layer(tg.ones(1, 3)).sum().backward()
    assert calls == ["pre", layer]
    with tg.no_grad():
        layer(tg.ones(1, 3))
    handle.remove()
    pre.remove()
    layer(tg.ones(1, 3)).sum().backward()
    assert calls == ["pre", layer]


# --- tinygrad_edu.jit refuses hooks it would skip --------------------------------------------
def jitted_mlp_step(rng):
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    step = tg.jit(training_step(model, optim.SGD(model.parameters(), lr=0.1)))
    x = tg.tensor(rng.standard_normal((4, 6)).astype(np.float32))
    y = tg.tensor(rng.integers(0, 3, 4))
    return model, step, (x, y)


HOOKS = {
    "tensor hook on a weight": lambda model: model[0].weight.register_hook(lambda g: None),
    "forward hook": lambda model: model[1].register_forward_hook(lambda m, args, out: None),
    "forward pre-hook": lambda model: model[2].register_forward_pre_hook(lambda m, args: None),
    "backward hook": lambda model: model[0].register_full_backward_hook(lambda m, gi, go: None),
    "backward pre-hook": lambda model: model[2].register_full_backward_pre_hook(lambda m, go: None),
}


@needs_c
@pytest.mark.parametrize("add_hook", HOOKS.values(), ids=HOOKS.keys())
def test_a_hook_inside_a_jitted_step_raises_instead_of_silently_not_running(rng, add_hook):
    with tg.backend.use("c"):
        model, step, batch = jitted_mlp_step(rng)
        add_hook(model)
        with pytest.raises(RuntimeError, match="hooks do not run inside tinygrad_edu.jit"):
            for _ in range(3):   # the first call runs eagerly; the next ones capture
                step(*batch)


@needs_c
def test_a_jitted_step_runs_once_its_hooks_are_removed(rng):
    with tg.backend.use("c"):
        model, step, batch = jitted_mlp_step(rng)
        handles = [add_hook(model) for add_hook in HOOKS.values()]
        for handle in handles:
            handle.remove()
        losses = [step(*batch).item() for _ in range(4)]
        assert losses[-1] < losses[0]


@needs_c
@pytest.mark.parametrize("add_hook", HOOKS.values(), ids=HOOKS.keys())
def test_a_hook_added_after_the_capture_is_not_skipped_by_the_replays(rng, add_hook):
    """A replay runs kernels, not Python: a hook added once the step was captured makes the jit
    capture it again, which refuses it, rather than replay without it."""
    with tg.backend.use("c"):
        model, step, batch = jitted_mlp_step(rng)
        for _ in range(4):
            step(*batch)
        assert step.program is not None   # captured, checked, replayed
        add_hook(model)
        with pytest.raises(RuntimeError, match="hooks do not run inside tinygrad_edu.jit"):
            for _ in range(3):
                step(*batch)
