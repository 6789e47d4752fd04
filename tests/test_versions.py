"""In-place changes and version counters: backward raises instead of using a changed value.

Every scenario is written once against a library (``tinygrad_edu`` or ``torch``): where PyTorch
is installed, the same code must raise there too, so the rules are PyTorch's.
"""

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import nn, optim

MODIFIED = "modified by an inplace operation"


def changed_input_after_forward(lib):
    x = lib.tensor([1.0, 2.0])
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    x += 1                       # x is what d y / d w is made of
    y.backward()


def weight_scaled_under_no_grad(lib):
    h = lib.tensor([1.0, 2.0], requires_grad=True)
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    y = (h * w).sum()            # d y / d h = w
    with lib.no_grad():
        w *= 10
    y.backward()


def leaf_zeroed_under_no_grad(lib):
    x = lib.tensor([[1.0, 2.0]], requires_grad=True)
    w = lib.tensor([[3.0], [4.0]], requires_grad=True)
    y = (x @ w).sum()
    with lib.no_grad():
        w.zero_()
    y.backward()


def saved_output_changed(lib):
    x = lib.tensor([0.5, 1.0], requires_grad=True)
    y = x.exp()                  # d exp(x) / dx = exp(x): the output itself is saved
    with lib.no_grad():
        y *= 2
    y.sum().backward()


def changed_through_a_view(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = lib.tensor([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    y = (x * w).sum()
    view = x.reshape(4)
    view += 1                    # the same memory as x
    y.backward()


def changed_through_detach(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    d = y.detach()
    d += 1                       # detach() shares the data
    y.sum().backward()


def optimizer_step_between_two_backwards(lib):
    lib.manual_seed(0)
    torch_nn = lib.nn
    model = torch_nn.Sequential(torch_nn.Linear(3, 4), torch_nn.ReLU(), torch_nn.Linear(4, 2))
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1)
    loss = model(lib.ones(5, 3)).sum()
    loss.backward(retain_graph=True)
    optimizer.step()             # the second layer's weight, saved for the first's gradient, moved
    loss.backward()


SCENARIOS = [changed_input_after_forward, weight_scaled_under_no_grad, leaf_zeroed_under_no_grad,
             saved_output_changed, changed_through_a_view, changed_through_detach,
             optimizer_step_between_two_backwards]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_backward_raises_when_a_saved_tensor_was_changed_in_place(scenario):
    with pytest.raises(RuntimeError, match=MODIFIED) as error:
        scenario(tg)
    assert "is at version" in str(error.value) and "expected version" in str(error.value)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_pytorch_raises_in_the_same_places(scenario):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match=MODIFIED):
        scenario(torch)


def test_the_message_names_the_op_the_tensor_and_the_versions():
    with pytest.raises(RuntimeError) as error:
        changed_input_after_forward(tg)
    message = str(error.value)
    assert "input 0 of MulBackward" in message and "shape (2,)" in message
    assert "at version 1; expected version 0" in message


def changed_before_and_after_forward(lib):
    x = lib.tensor([1.0, 2.0])
    x += 1
    x *= 2                       # version 2 when the forward saves it
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    y = ((x * w) + 1).sum()      # only the product saves anything: the sum and + 1 do not
    view = x.reshape(2, 1)       # made after the forward, and a view: it shares x's counter
    view += 1
    y.backward()


def test_a_saved_tensor_is_checked_against_the_version_it_had_when_saved():
    # The forward notes versions only; backward reads the tensor's counter, which may have been
    # made after the forward (by a view) and may have counted changes before it.
    with pytest.raises(RuntimeError, match="input 0 of MulBackward .* at version 3; expected version 2"):
        changed_before_and_after_forward(tg)
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="is at version 3; expected version 2"):
        changed_before_and_after_forward(torch)


def test_nodes_that_saved_nothing_pass_a_change_on_to_the_nodes_that_did():
    # Sum, Add and Reshape save nothing, so the walk checks nothing at them; the Mul below them,
    # which saved its inputs, still raises; a graph of such nodes alone does not.
    x = tg.tensor([1.0, 2.0])
    w = tg.tensor([3.0, 4.0], requires_grad=True)
    unchecked = (x + w).reshape(2, 1).sum()
    checked = ((x * w) + 1).reshape(2, 1).sum()
    x += 1
    unchecked.backward()
    assert w.grad.tolist() == [1.0, 1.0]
    with pytest.raises(RuntimeError, match="input 0 of MulBackward"):
        checked.backward()


def test_adam_steps_count_as_in_place_changes_too():
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    optimizer = optim.Adam(model.parameters())
    loss = model(tg.ones(2, 3)).sum()
    loss.backward(retain_graph=True)
    optimizer.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_in_place_changes_count_versions():
    x = tg.tensor([1.0, 2.0])
    assert x._version == 0
    x += 1
    x *= 2
    x.zero_()
    assert x._version == 3 and x.reshape(2, 1)._version == 3 and x.detach()._version == 3
    copy = tg.tensor(x)          # a new tensor, a new counter
    x -= 1
    assert copy._version == 0 and x._version == 4


def test_a_change_backward_does_not_need_is_allowed():
    x = tg.tensor([1.0, 2.0])
    w = tg.tensor([3.0, 4.0], requires_grad=True)
    y = (x + w).sum()            # an addition saves nothing
    x += 1
    y.backward()
    assert w.grad.tolist() == [1.0, 1.0]


def test_a_new_forward_after_the_change_works():
    changed_x = tg.tensor([1.0, 2.0])
    w = tg.tensor([3.0, 4.0], requires_grad=True)
    changed_x += 1
    (changed_x * w).sum().backward()
    assert w.grad.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("scenario", ["leaf", "leaf zero_"])
def test_in_place_on_a_leaf_that_requires_grad_follows_pytorch(scenario):
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        if scenario == "leaf":
            w += 1
        else:
            w.zero_()
    with tg.no_grad():           # the way an optimizer updates weights
        w += 1
        w.zero_()
    assert w.tolist() == [0.0, 0.0] and w._version == 2


def test_in_place_on_a_graph_tensor_is_refused_not_silently_wrong():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    h = w * 2
    with pytest.raises(RuntimeError, match="not recorded"):
        h += 1
    x = tg.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="not recorded"):
        x += w


def test_an_index_changed_after_forward_does_not_change_the_gradient():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    index, positions = tg.tensor([0, 0, 2]), [0, 0, 2]
    y = x[index] * tg.tensor([1.0, 2.0, 3.0]) + x[positions]
    index += 1                   # the engine copied the index: the forward that ran is what counts
    positions[0] = 1
    y.sum().backward()
    assert x.grad.tolist() == [5.0, 0.0, 4.0]


def test_gradcheck_style_in_place_edits_of_data_are_not_tracked():
    # ``.data`` is the NumPy array itself: writing into it bypasses the counter, as PyTorch's
    # ``.data`` does; gradcheck relies on that to nudge inputs.
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    x.data[0] = 5.0
    assert x._version == 0
    assert np.array_equal(x.data, [5.0, 2.0])
