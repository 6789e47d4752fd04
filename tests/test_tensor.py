"""The autograd core: every op's gradient by gradcheck in float64, the engine's bookkeeping."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_edu as tg
from tinygrad_edu.autograd import GradcheckError

from conftest import leaf

# --- gradcheck of every op --------------------------------------------------------------------
UNARY = {
    "neg": lambda x: -x,
    "pow3": lambda x: x ** 3,
    "pow_half": lambda x: x ** 0.5,
    "exp": lambda x: x.exp(),
    "log": lambda x: x.log(),
    "sqrt": lambda x: x.sqrt(),
    "relu": lambda x: x.relu(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "softmax0": lambda x: x.softmax(0),
    "softmax1": lambda x: x.softmax(1),
    "log_softmax1": lambda x: x.log_softmax(1),
    "log_softmax0": lambda x: x.log_softmax(-2),
    "sum": lambda x: x.sum(),
    "sum_dim": lambda x: x.sum(1),
    "sum_keepdim": lambda x: x.sum(0, keepdim=True),
    "mean": lambda x: x.mean(),
    "mean_dim": lambda x: x.mean(dim=1, keepdim=True),
    "max": lambda x: x.max(),
    "max_dim": lambda x: x.max(1).values,
    "max_dim_keep": lambda x: x.max(0, keepdim=True)[0],
    "reshape": lambda x: x.reshape(-1) * tg.arange(12).double(),
    "view": lambda x: x.view(4, 3) @ tg.ones(3, dtype=tg.float64),
    "transpose": lambda x: x.transpose(0, 1) * tg.arange(12).reshape(4, 3).double(),
    "T": lambda x: x.T @ tg.ones(3, 2, dtype=tg.float64),
    "flatten": lambda x: x.flatten() ** 2,
    "getitem_basic": lambda x: x[1:, ::2],
    "getitem_int": lambda x: x[1],
    "getitem_array": lambda x: x[[0, 2, 0]],          # row 0 picked twice: scatter-add
    "getitem_pairs": lambda x: x[np.array([0, 1, 2]), np.array([3, 3, 1])],
    "unsqueeze_squeeze": lambda x: x.unsqueeze(0).squeeze(0) * 2,
    "clone": lambda x: x.clone() * x,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradcheck(name, rng):
    positive = name in ("log", "sqrt", "pow_half")
    x = leaf(rng, 3, 4, positive=positive)
    assert tg.gradcheck(UNARY[name], [x])


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}
# broadcast pairs from the issue: scalar, row, column, (3,1) with (1,4), added leading axes
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), ()), ((), (3, 4)), ((3, 4), (4,)), ((3, 4), (3, 1)),
                    ((3, 1), (1, 4)), ((2, 3, 4), (3, 4)), ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1))]


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_broadcast_gradcheck(op, shapes, rng):
    a = leaf(rng, *shapes[0])
    b = leaf(rng, *shapes[1], positive=(op == "div"))
    assert tg.gradcheck(BINARY[op], [a, b])


@pytest.mark.parametrize("scalar", [2.5, 3, -1.0])
def test_python_scalar_and_reflected_forms(scalar, rng):
    x = leaf(rng, 2, 3, positive=True)
    for fn in (lambda x: x + scalar, lambda x: scalar + x, lambda x: scalar - x, lambda x: x - scalar,
               lambda x: scalar * x, lambda x: x / scalar, lambda x: scalar / x):
        assert tg.gradcheck(fn, [x])
        assert fn(x).dtype == tg.float64


def test_numpy_array_operands(rng):
    x = leaf(rng, 2, 3)
    arr = rng.standard_normal((2, 3))
    assert np.allclose((arr * x).data, arr * x.data)
    assert np.allclose((arr - x).data, arr - x.data)
    assert tg.gradcheck(lambda x: (arr / (x * x + 1)).sum() + (arr @ x.T).sum(), [x])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 2))], ids=str)
def test_matmul_gradcheck(shapes, rng):
    a, b = leaf(rng, *shapes[0]), leaf(rng, *shapes[1])
    assert np.allclose((a @ b).data, a.data @ b.data)
    assert tg.gradcheck(lambda a, b: a @ b, [a, b])


def test_linear_outer_cat_stack_gradcheck(rng):
    x, w, b = leaf(rng, 5, 3), leaf(rng, 4, 3), leaf(rng, 4)
    assert tg.gradcheck(tg.nn.functional.linear, [x, w, b])
    u, v = leaf(rng, 3), leaf(rng, 4)
    assert np.allclose(tg.outer(u, v).data, np.outer(u.data, v.data))
    assert tg.gradcheck(tg.outer, [u, v])
    p, q = leaf(rng, 2, 3), leaf(rng, 1, 3)
    assert tg.gradcheck(lambda p, q: tg.cat([p, q, p], dim=0), [p, q])
    assert tg.gradcheck(lambda p: tg.stack([p, p * 2], dim=1), [p])
    assert tg.stack([p, p], dim=1).shape == (2, 2, 3)


def test_gradcheck_reports_a_wrong_backward(rng):
    class BadSquare(tg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.x = x
            return x * x

        @staticmethod
        def backward(ctx, grad):
            return (grad * ctx.x,)  # should be 2 x

    x = leaf(rng, 2, 2)
    with pytest.raises(GradcheckError, match=r"input 0 element \(\d, \d\): analytical .* numerical"):
        tg.gradcheck(BadSquare.apply, [x])


# --- hypothesis: random small shapes ----------------------------------------------------------
floats = st.floats(-3, 3, allow_nan=False, width=64)


@st.composite
def broadcastable_pair(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    a_shape, b_shape = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, base_shape=shape,
                                                              max_dims=3, max_side=3)).input_shapes
    a = draw(hnp.arrays(np.float64, a_shape, elements=floats))
    b = draw(hnp.arrays(np.float64, b_shape, elements=floats))
    return a, b


@settings(max_examples=40, deadline=None)
@given(broadcastable_pair(), st.sampled_from(["add", "sub", "mul"]))
def test_broadcast_ops_match_numpy_and_gradcheck(pair, op):
    a, b = (tg.tensor(x, requires_grad=True) for x in pair)
    out = BINARY[op](a, b)
    assert np.allclose(out.data, {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](*pair))
    assert tg.gradcheck(BINARY[op], [a, b])


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), elements=floats),
       st.sampled_from(["tanh", "sigmoid", "exp", "softmax", "log_softmax", "sum_dim", "mean_dim"]))
def test_unary_ops_gradcheck_on_random_shapes(x, op):
    fn = {"tanh": lambda t: t.tanh(), "sigmoid": lambda t: t.sigmoid(), "exp": lambda t: t.exp(),
          "softmax": lambda t: t.softmax(-1), "log_softmax": lambda t: t.log_softmax(-1),
          "sum_dim": lambda t: t.sum(0), "mean_dim": lambda t: t.mean(-1, keepdim=True)}[op]
    assert tg.gradcheck(fn, [tg.tensor(x, requires_grad=True)])


# --- the engine -------------------------------------------------------------------------------
def test_diamond_graph_gets_both_contributions():
    x = tg.tensor(3.0, requires_grad=True)
    a, b = x * 2, x * x          # x is used by two paths that meet again
    (a * b).backward()           # d(2x * x^2)/dx = 6 x^2
    assert x.grad.item() == pytest.approx(54.0)


def test_same_tensor_twice_in_one_op():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_gradients_accumulate_until_zeroed():
    x = tg.tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    x.grad = None
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, -4.0]


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = tg.tensor(2.0, requires_grad=True)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_graph_is_freed_after_backward():
    import weakref
    x = tg.tensor(np.ones(3), requires_grad=True)
    h = x * 2
    y = h.exp().sum()
    ctx_ref = weakref.ref(h.grad_fn)
    y.backward()
    assert ctx_ref() is None  # the Function node and what it saved are gone
    assert "grad_fn" not in repr(h)


def test_chain_of_10000_ops_does_not_hit_the_recursion_limit():
    x = tg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000, rel=1e-3)


def test_backward_of_non_scalar_needs_a_gradient():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    (x * 2).backward(tg.tensor([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 20.0]
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(tg.ones(3))


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (tg.tensor([1.0]) * 2).sum().backward()


def test_requires_grad_only_on_floats():
    with pytest.raises(TypeError, match="floating"):
        tg.tensor([1, 2], requires_grad=True)
    assert tg.tensor([1, 2]).float().requires_grad_().requires_grad


def test_grad_has_shape_and_dtype_of_the_tensor():
    for dtype in (tg.float32, tg.float64):
        w = tg.ones(3, 1, dtype=dtype, requires_grad=True)
        (tg.ones(2, 3, dtype=dtype) @ w).sum().backward()
        assert w.grad.shape == (3, 1) and w.grad.dtype == dtype
        assert w.grad.grad_fn is None


def test_no_grad_context_and_decorator():
    x = tg.tensor([1.0], requires_grad=True)
    with tg.no_grad():
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad

    @tg.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and tg.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="detach"):
        (x * 2).numpy()


def test_inplace_on_graph_tensors_is_refused_but_allowed_under_no_grad():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w -= 1.0
    with tg.no_grad():
        w -= 1.0
    assert w.tolist() == [0.0, 1.0] and w.requires_grad


# --- dtypes, conversion, printing -------------------------------------------------------------
def test_dtype_rules():
    assert tg.tensor([1.0, 2.0]).dtype == tg.float32
    assert tg.tensor(np.zeros(2)).dtype == tg.float64
    assert tg.tensor([1, 2]).dtype == tg.int64
    assert tg.tensor([True]).dtype == tg.bool
    assert (tg.tensor([1.0]) * 0.1).dtype == tg.float32          # no accidental float64
    assert (tg.tensor([1, 2]) / 2).dtype == tg.float32            # int / int -> float32
    assert (tg.tensor([1.0]) / tg.tensor([2])).dtype == tg.float32


def test_comparisons_argmax_and_bool_sum():
    a = tg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    labels = tg.tensor([1, 2])
    pred = a.argmax(1)
    assert pred.tolist() == [1, 0]
    correct = (pred == labels).sum()
    assert correct.dtype == tg.int64 and correct.item() == 1
    assert (a > 1.5).tolist() == [[False, True, True], [True, False, True]]
    assert (a != 7).sum().item() == 4


def test_max_with_dim_returns_values_and_indices():
    a = tg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    values, indices = tg.max(a, 1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert tg.max(a).item() == 7.0


def test_scalar_conversions_and_format():
    loss = tg.tensor(1.23456)
    assert f"{loss:.3f}" == "1.235"
    assert float(tg.tensor(2.5)) == 2.5 and int(tg.tensor(7)) == 7
    assert (tg.tensor(9761) / 10000).item() == pytest.approx(0.9761)
    assert isinstance(tg.tensor(3).item(), int)


def test_repr_like_pytorch():
    assert repr(tg.tensor([1.0, 2.0], requires_grad=True)) == "tensor([1., 2.], requires_grad=True)"
    assert repr(tg.tensor([1, 2])) == "tensor([1, 2])"
    assert "dtype=float64" in repr(tg.tensor(np.zeros(1)))
    y = tg.tensor([1.0], requires_grad=True) * 2
    assert "grad_fn=<MulBackward>" in repr(y)


def test_shape_helpers():
    t = tg.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.size() == (2, 3, 4) and t.size(1) == 3
    assert len(t) == 2 and t.numel() == 24
    assert t.view(-1, 4).shape == (6, 4) and t.flatten(1).shape == (2, 12)
    assert t.permute(2, 0, 1).shape == (4, 2, 3) and t.T.shape == (4, 3, 2)
    assert tg.zeros(3).tolist() == [0.0, 0.0, 0.0]


def test_log_softmax_finite_for_huge_logits():
    z = tg.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    y = z.log_softmax(1)
    assert np.all(np.isfinite(y.data)) and y.data[0, 0] == 0.0
    y.sum().backward()
    assert np.all(np.isfinite(z.grad.data))
    assert np.allclose(z.softmax(1).data, [[1.0, 0.0, 0.0]])


def test_relu_gradient_is_zero_at_zero():
    x = tg.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    x.relu().sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_matmul_shape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        tg.zeros(2, 3) @ tg.zeros(4, 5)


def test_manual_seed_makes_sampling_reproducible():
    tg.manual_seed(5)
    a = tg.randn(3, 3)
    lin_a = tg.nn.Linear(4, 2).weight.data.copy()
    tg.manual_seed(5)
    b = tg.randn(3, 3)
    lin_b = tg.nn.Linear(4, 2).weight.data.copy()
    assert np.array_equal(a.data, b.data) and np.array_equal(lin_a, lin_b)
    assert not np.array_equal(tg.randn(3, 3).data, a.data)


def test_every_result_holds_an_ndarray_so_in_place_accumulation_works():
    # the lecture's accuracy cell: n_correct = 0, then n_correct += (labels == predicted).sum()
    labels, predicted = tg.tensor([1, 2, 3]), tg.tensor([1, 0, 3])
    n_correct = 0
    for _ in range(3):
        n_correct += (labels == predicted).sum()
    assert type(n_correct.data) is np.ndarray and n_correct.item() == 6
    scalar_sum = tg.tensor(1.0) + tg.tensor(2.0)          # NumPy gives a scalar for 0-d + 0-d
    assert type(scalar_sum.data) is np.ndarray and type((tg.tensor(1) == 1).data) is np.ndarray


def test_binary_cross_entropy_refuses_nan_input_as_pytorch_does():
    p = tg.tensor([0.5, float("nan")], requires_grad=True)
    with pytest.raises(ValueError, match=r"probability in \[0, 1\] \(NaN is not\)"):
        tg.nn.functional.binary_cross_entropy(p, tg.tensor([1.0, 0.0]))


def test_linear_on_a_0d_input_says_so():
    layer = tg.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="0-d tensor .* 3 features"):
        layer(tg.tensor(1.0))
