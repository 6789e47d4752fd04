"""The kernel interface: both backends agree with NumPy, bad input is refused before C sees it."""

import subprocess
import sys

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import backend

BACKENDS = backend.available()
needs_c = pytest.mark.skipif("c" not in BACKENDS, reason="C kernels not built")
SHAPES = [(0, 3, 4), (3, 0, 4), (3, 4, 0), (1, 1, 1), (7, 13, 5), (12, 784, 512), (784, 12, 512),
          (12, 512, 784), (31, 17, 97), (97, 61, 37), (64, 64, 64), (130, 70, 259),
          (37, 1, 70), (512, 1, 784),   # K = 1: batch-1 weight gradients, an outer product
          (5, 4500, 9), (7, 25, 2100)]  # depth in pieces (conv1's weight gradient); C in column blocks


@pytest.fixture(params=BACKENDS)
def each_backend(request, monkeypatch):
    if request.param == "c":   # test the C GEMM and cross-entropy at every size, even where NumPy would be used
        monkeypatch.setattr(backend.c_kernels, "NUMPY_FROM_LOGITS", 1 << 62)
        monkeypatch.setattr(backend.c_kernels, "numpy_is_faster", lambda m, n, k: False)
    with backend.use(request.param):
        yield request.param


@needs_c
def test_on_a_cpu_without_a_tuned_gemm_every_product_goes_to_numpy(monkeypatch):
    """As on ARM64, where only portable C is built (tge_isa() == 0): OpenBLAS does the products."""
    c = backend.c_kernels
    assert c.TUNED == (c.lib.tge_isa() > 0) and c.TUNED   # x86-64 runs the tests
    rng = np.random.default_rng(0)
    x, w, b = (rng.random(s).astype(np.float32) for s in ((12, 784), (512, 784), (512,)))
    with backend.use("c"):
        ours = backend.gemm(x, w, trans_b=True, bias=b)
        monkeypatch.setattr(c, "TUNED", False)
        assert c.numpy_is_faster(1, 1, 1)
        handed = backend.gemm(x, w, trans_b=True, bias=b)
        grads = backend.linear_backward(rng.random((12, 512)).astype(np.float32), x, w)
    assert np.array_equal(handed, np.matmul(x, w.T) + b)   # OpenBLAS's rounding, bit for bit
    assert np.allclose(handed, ours, rtol=1e-5) and grads[1].shape == (512, 784)


@needs_c
def test_products_thin_both_ways_go_to_numpy_once_they_are_more_than_tiny():
    """A few rows and a short depth (conv1 of the lecture's CNN: 20x25 @ 25x(N 24 24)) go to
    OpenBLAS, which is faster there; tiny ones (the last Linear's gradients) and thin products
    with a long depth or many rows (the MLP at batch 12) stay ours."""
    from tinygrad_edu.backend import c_kernels
    if not c_kernels.TUNED:
        pytest.skip("every product goes to NumPy on this CPU")
    assert c_kernels.numpy_is_faster(20, 576, 25) and c_kernels.numpy_is_faster(20, 12 * 576, 25)
    assert not c_kernels.numpy_is_faster(12, 64, 10)           # Linear(64, 10)'s dx at batch 12
    assert not c_kernels.numpy_is_faster(12, 512, 784)         # the MLP's forward at batch 12
    assert not c_kernels.numpy_is_faster(512, 784, 12)         # and its weight gradient


@needs_c
def test_products_that_are_not_thin_go_to_numpy_from_both_gemm_and_linear_backward():
    """One rule, c_kernels.numpy_is_faster, for every product the C backend makes: at batch 64
    nn.Linear's forward and both of its gradient products are OpenBLAS's, bit for bit (our GEMM
    adds in another order)."""
    from tinygrad_edu.backend import c_kernels, numpy_kernels
    rng = np.random.default_rng(0)
    g, x = rng.random((64, 256), dtype=np.float32), rng.random((64, 512), dtype=np.float32)
    w = rng.random((256, 512), dtype=np.float32)
    assert not c_kernels.numpy_is_faster(12, 256, 512) and c_kernels.numpy_is_faster(64, 256, 512)
    forward = c_kernels.gemm(x, w, False, True, 1.0, 0.0, np.empty((64, 256), np.float32))
    expected = numpy_kernels.gemm(x, w, False, True, 1.0, 0.0, np.empty((64, 256), np.float32))
    assert np.array_equal(forward, expected)
    dx, dw, _ = c_kernels.linear_backward(g, x, w, True, True, True)
    expected_dx, expected_dw, _ = numpy_kernels.linear_backward(g, x, w, True, True, True)
    assert np.array_equal(dx, expected_dx) and np.array_equal(dw, expected_dw)


def test_the_c_backend_is_built_where_ci_requires_it():
    import os
    if not os.environ.get("TINYGRAD_EDU_REQUIRE_C"):
        pytest.skip("checked where TINYGRAD_EDU_REQUIRE_C=1 (CI): there the C kernels must be built")
    assert "c" in BACKENDS
    assert backend.name() == os.environ.get("TINYGRAD_EDU_BACKEND", "c")


def _operands(rng, m, k, n, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def _reference(a, b, trans_a, trans_b):
    return (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)


def _assert_matches(result, expected, k, dtype):
    # float rounding grows with the reduction length k: compare after scaling by it
    eps = np.finfo(dtype).eps
    scale = max(np.abs(expected).max(initial=0.0), 1.0) * max(k, 1)
    assert np.abs(result - expected).max(initial=0.0) <= 10 * eps * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)], ids=str)
@pytest.mark.parametrize("m, k, n", SHAPES, ids=str)
def test_gemm_matches_numpy(each_backend, m, k, n, trans, dtype):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = _operands(rng, m, k, n, *trans, dtype)
    out = backend.gemm(a, b, *trans)
    assert out.shape == (m, n) and out.dtype == dtype
    _assert_matches(out, _reference(a, b, *trans), k, dtype)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0), (-1.0, 0.0), (2.0, -0.5)])
def test_gemm_alpha_beta_accumulate(each_backend, alpha, beta):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 12, 50, 33, False, True, np.float32)
    c0 = rng.standard_normal((12, 33)).astype(np.float32)
    out = c0.copy()
    backend.gemm(a, b, trans_b=True, alpha=alpha, beta=beta, out=out)
    _assert_matches(out, alpha * _reference(a, b, False, True) + beta * c0, 50, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)], ids=str)
@pytest.mark.parametrize("m, k, n", SHAPES + [(64, 300, 70), (12, 300, 40)], ids=str)
def test_gemm_adds_a_bias_to_every_row_once(each_backend, m, k, n, trans, dtype):
    # K = 300 spans two K blocks of the packed and direct paths: the bias must be added once
    rng = np.random.default_rng(m * 1000 + k * 10 + n + 7)
    a, b = _operands(rng, m, k, n, *trans, dtype)
    bias = rng.standard_normal(n).astype(dtype)
    _assert_matches(backend.gemm(a, b, *trans, bias=bias), _reference(a, b, *trans) + bias, k, dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    out = c0.copy()
    backend.gemm(a, b, *trans, alpha=0.5, beta=2.0, out=out, bias=bias[::-1].copy())
    _assert_matches(out, 0.5 * _reference(a, b, *trans) + 2.0 * c0 + bias[::-1], k, dtype)


def test_gemm_bias_views_and_bad_bias(each_backend):
    a, b = np.ones((12, 40), np.float32), np.ones((40, 33), np.float32)
    spaced = np.arange(66, dtype=np.float32)[::2]           # a strided bias is copied for C
    np.testing.assert_allclose(backend.gemm(a, b, bias=spaced), 40 + spaced[None, :].repeat(12, 0))
    with pytest.raises(ValueError, match=r"bias must have shape \(33,\)"):
        backend.gemm(a, b, bias=np.ones(32, np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        backend.gemm(a, b, bias=np.ones(33))
    out = np.zeros((12, 33), np.float32)
    with pytest.raises(ValueError, match="overlaps bias"):
        backend.gemm(a, b, out=out, bias=out[0])


def test_beta_zero_does_not_read_old_out(each_backend):
    out = np.full((3, 4), np.nan, np.float32)
    backend.gemm(np.ones((3, 2), np.float32), np.ones((2, 4), np.float32), out=out)
    assert np.array_equal(out, np.full((3, 4), 2.0))


def test_views_transposed_sliced_and_strided(each_backend):
    rng = np.random.default_rng(2)
    big = rng.standard_normal((40, 50)).astype(np.float32)
    cases = [(big[:12, :30], big[5:35, 10:27]),          # row slices with a leading dimension
             (big.T[:20, :13], big[:13, ::1].T.T),        # column-major views
             (big[::2, ::3][:10, :9], big[1::2, ::2][:9, :7]),   # general strides: copied
             (np.broadcast_to(big[0, :6], (4, 6)), big[:6, :5])]  # stride 0
    for a, b in cases:
        _assert_matches(backend.gemm(a, b), _reference(a, b, False, False), a.shape[1], np.float32)
        _assert_matches(backend.gemm(a.T, b.T, trans_a=True, trans_b=True), _reference(a, b, False, False), a.shape[1], np.float32)
    out_rows = np.zeros((12, 40), np.float32)[:, 3:20]    # out with a leading dimension
    backend.gemm(big[:12, :30], big[:30, :17], out=out_rows)
    _assert_matches(out_rows, _reference(big[:12, :30], big[:30, :17], False, False), 30, np.float32)


def test_nan_and_inf_propagate(each_backend):
    a = np.ones((13, 20), np.float32)
    b = np.ones((20, 35), np.float32)
    a[2, 3], b[4, 34] = np.nan, np.inf
    out = backend.gemm(a, b)
    expected = _reference(a, b, False, False)
    assert np.array_equal(np.isnan(out), np.isnan(expected)) and np.array_equal(np.isinf(out), np.isinf(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, n_in, n_out", [(12, 784, 512), (12, 64, 10), (1, 784, 512), (1, 1, 1),
                                            (128, 256, 128), (7, 13, 5), (0, 5, 3)], ids=str)
def test_linear_backward_is_the_two_products_and_the_sum(each_backend, n, n_in, n_out, dtype):
    rng = np.random.default_rng(n * 7 + n_in + n_out)
    grad, x = rng.standard_normal((n, n_out)).astype(dtype), rng.standard_normal((n, n_in)).astype(dtype)
    weight = rng.standard_normal((n_out, n_in)).astype(dtype)
    dx, dw, db = backend.linear_backward(grad, x, weight)
    want = {"dx": _reference(grad, weight, False, False), "dw": _reference(grad, x, True, False),
            "db": grad.astype(np.float64).sum(axis=0)}
    for name, got, k in (("dx", dx, n_out), ("dw", dw, n), ("db", db, n)):
        assert got.shape == want[name].shape and got.dtype == dtype, name
        _assert_matches(got, want[name], k, dtype)
    for need in [(False, True, True), (True, False, False), (False, False, True)]:
        got = backend.linear_backward(grad, x, weight, *need)
        for wanted, array, full in zip(need, got, (dx, dw, db)):
            assert array is None if not wanted else np.array_equal(array, full)


def test_linear_backward_takes_any_layout_and_refuses_bad_input(each_backend):
    rng = np.random.default_rng(3)
    grad, x = rng.standard_normal((12, 40)).astype(np.float32), rng.standard_normal((12, 70)).astype(np.float32)
    weight = rng.standard_normal((40, 70)).astype(np.float32)
    want = backend.linear_backward(grad, x, weight)
    views = (np.asfortranarray(grad), rng.standard_normal((24, 70)).astype(np.float32)[::2],
             np.ascontiguousarray(weight.T).T)   # column-major, rows spaced out, a transpose
    views[1][:] = x
    for got, expected in zip(backend.linear_backward(*views), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="share a dtype"):
        backend.linear_backward(grad, x.astype(np.float64), weight)
    with pytest.raises(ValueError, match=r"grad \(12, 40\), x \(11, 70\) and weight \(40, 70\) do not fit"):
        backend.linear_backward(grad, x[:11], weight)
    with pytest.raises(ValueError, match="do not fit"):
        backend.linear_backward(grad, x, weight.T.copy())
    with pytest.raises(ValueError, match="grad must be 2-D"):
        backend.linear_backward(grad[0], x, weight)
    with pytest.raises(TypeError, match="weight must be a numpy.ndarray"):
        backend.linear_backward(grad, x, weight.tolist())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n", [(0, 5), (1, 1), (7, 13), (512, 784), (97, 3)])
def test_ger_matches_numpy(each_backend, m, n, dtype):
    rng = np.random.default_rng(m + n)
    A = rng.standard_normal((m, n)).astype(dtype)
    x, y = rng.standard_normal(m).astype(dtype), rng.standard_normal(n).astype(dtype)
    expected = A + 0.5 * np.outer(x, y)
    assert backend.ger(A, x, y, alpha=0.5) is A
    assert np.allclose(A, expected, rtol=10 * np.finfo(dtype).eps, atol=10 * np.finfo(dtype).eps)


def test_ger_on_a_row_sliced_matrix_leaves_the_rest_alone(each_backend):
    big = np.zeros((6, 10), np.float32)
    x, y = np.ones(6, np.float32), np.arange(4, dtype=np.float32)
    backend.ger(big[:, 2:6], x, y)
    assert np.array_equal(big[:, 2:6], np.tile(y, (6, 1))) and big[:, :2].sum() == 0 and big[:, 6:].sum() == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta, with_bias", [(0.0, True), (1.0, True), (0.0, False)])
def test_shallow_product_at_every_alignment_of_c(each_backend, dtype, beta, with_bias):
    """Weight gradients (K = 12, long rows) at each start of C within a 64-byte line: with beta = 0
    the C kernel lets full tiles overlap so that stores line up; every column must come out right
    (beta = 1 would double-add an overlap) and nothing outside C may be touched. Without a bias
    (and with beta 0) the C kernel takes its copy of the sweep for the plain weight gradient."""
    rng = np.random.default_rng(7)
    per_line = 64 // np.dtype(dtype).itemsize
    dz, x = rng.standard_normal((12, 29)).astype(dtype), rng.standard_normal((12, 300)).astype(dtype)
    bias = rng.standard_normal(300).astype(dtype) if with_bias else None
    for offset in range(per_line):
        memory = np.full((29, 2 * per_line + 320), np.nan, dtype)   # rows 64-byte multiples apart
        out = memory[:, offset:offset + 300]
        start = rng.standard_normal(out.shape).astype(dtype)
        out[...] = start
        backend.gemm(dz, x, trans_a=True, beta=beta, out=out, bias=bias)
        _assert_matches(out, _reference(dz, x, True, False) + beta * start + (0 if bias is None else bias), 12, dtype)
        assert np.isnan(memory[:, :offset]).all() and np.isnan(memory[:, offset + 300:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_deep_small_batch_product_at_every_alignment_of_b(each_backend, dtype, beta):
    """An input's gradient g W (a batch of 12, K = 300 > the shallow path's 32, long rows) with
    W starting at each element of a 64-byte line: with beta = 0 the C kernel lets full tiles
    overlap so its loads of W line up; every column must come out right (beta = 1 would
    double-add an overlap, also across K blocks) and nothing outside C may be touched."""
    rng = np.random.default_rng(10)
    per_line = 64 // np.dtype(dtype).itemsize
    g, bias = rng.standard_normal((12, 300)).astype(dtype), rng.standard_normal(290).astype(dtype)
    for m in (12, 5):
        for offset in range(per_line):
            memory = rng.standard_normal((300, 2 * per_line + 320)).astype(dtype)   # rows 64-byte multiples apart
            w = memory[:, offset:offset + 290]
            start = rng.standard_normal((m, 290)).astype(dtype)
            out_memory = np.full((m, 300), np.nan, dtype)
            out = out_memory[:, 3:293]
            out[...] = start
            backend.gemm(g[:m], w, beta=beta, out=out, bias=bias)
            _assert_matches(out, _reference(g[:m], w, False, False) + beta * start + bias, 300, dtype)
            assert np.isnan(out_memory[:, :3]).all() and np.isnan(out_memory[:, 293:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_product_gemm_at_every_alignment_of_b(each_backend, dtype):
    """x @ W.T at a small batch: the C kernel runs whole vectors from each row's start, then one
    masked vector for the rest. For every start of W within a 64-byte line (rows 64 bytes apart,
    so all alike), every depth from 1 to 20 and a few longer ones: each k counted once (beta,
    bias too), the same bits wherever W sits (the order of the sums must not depend on the
    address: the same model in another process would round differently), and an inf in W meets
    a finite x in the tail (masked on one side only, it would meet a 0 there and give NaN)."""
    rng = np.random.default_rng(9)
    per_line = 64 // np.dtype(dtype).itemsize
    for k in list(range(1, 21)) + [37, 64, 130, 600]:
        width = -(-(k + per_line) // per_line) * per_line   # W's rows a whole number of lines apart
        values, bias = rng.standard_normal((7, k)).astype(dtype), rng.standard_normal(7).astype(dtype)
        xs = {m: (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((m, 7)).astype(dtype))
              for m in (1, 5, 12)}
        first = {}
        for offset in range(per_line):
            memory = np.full((7, width), np.nan, dtype)
            memory[:, offset:offset + k] = values
            w = memory[:, offset:offset + k]
            for m, (x, start) in xs.items():
                out = start.copy()
                backend.gemm(x, w, trans_b=True, beta=0.5, out=out, bias=bias)
                _assert_matches(out, _reference(x, w, False, True) + 0.5 * start + bias, k, dtype)
                if each_backend == "c":
                    assert np.array_equal(out, first.setdefault(m, out)), (k, offset, m)
            x = np.abs(rng.standard_normal((5, k))).astype(dtype) + 1
            for p in range(k) if k < 200 else list(range(20)) + list(range(k - 20, k)):
                w_inf = values.copy()
                w_inf[3, p] = np.inf
                memory[:, offset:offset + k] = w_inf
                got = backend.gemm(x, w, trans_b=True)
                assert np.isposinf(got[:, 3]).all() and np.isfinite(np.delete(got, 3, axis=1)).all(), (k, offset, p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_at_every_alignment_of_y(each_backend, dtype):
    rng = np.random.default_rng(8)
    for offset in range(64 // np.dtype(dtype).itemsize):
        for n in (1, 3, 40, 1000):
            memory = np.full(n + 32, np.nan, dtype)
            y, x = memory[offset:offset + n], rng.standard_normal(n).astype(dtype)
            y[...] = 1.0
            backend.axpy_many(-0.5, [x], [y])
            assert np.allclose(y, 1.0 - 0.5 * x)
            assert np.isnan(memory[:offset]).all() and np.isnan(memory[offset + n:]).all()


# --- layouts C cannot take as they are -------------------------------------------------------------
def _awkward_layouts(rng, m, n, dtype):
    """(label, view) pairs: an m x n matrix of random values in layouts C cannot read as rows of
    unit stride (each must be copied first): odd byte strides, unaligned, negative, zero."""
    dtype = np.dtype(dtype)
    values = rng.standard_normal((m, n)).astype(dtype)
    padded = np.zeros(m, [("v", dtype, (n,)), ("pad", "u1")])   # rows n * itemsize + 1 bytes apart
    padded["v"] = values
    padded_t = np.zeros(n, [("v", dtype, (m,)), ("pad", "u1")])  # columns that far apart
    padded_t["v"] = values.T
    unaligned = np.zeros(values.nbytes + 1, np.uint8)[1:].view(dtype).reshape(m, n)
    unaligned[...] = values
    return [("structured field", padded["v"]), ("structured field, transposed", padded_t["v"].T),
            ("unaligned", unaligned), ("unaligned, transposed", unaligned.T.copy().T),
            ("rows reversed", values[::-1].copy()[::-1]), ("columns reversed", values[:, ::-1].copy()[:, ::-1]),
            ("both reversed", values[::-1, ::-1]), ("column-major, reversed", np.asfortranarray(values)[::-1]),
            ("one row repeated", np.broadcast_to(values[0], (m, n))),
            ("one column repeated", np.broadcast_to(values[:, :1], (m, n))),
            ("one value repeated", np.broadcast_to(values[0, 0], (m, n)))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_reads_operands_of_every_layout(each_backend, dtype):
    rng = np.random.default_rng(11)
    m, k, n = 7, 13, 5
    for trans_a in (False, True):
        for trans_b in (False, True):
            for label_a, a in _awkward_layouts(rng, *((k, m) if trans_a else (m, k)), dtype):
                for label_b, b in _awkward_layouts(rng, *((n, k) if trans_b else (k, n)), dtype):
                    expected = _reference(a.copy(), b.copy(), trans_a, trans_b)
                    _assert_matches(backend.gemm(a, b, trans_a, trans_b), expected, k, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_kernels_read_inputs_of_every_layout(each_backend, dtype):
    rng = np.random.default_rng(12)
    for label, view in _awkward_layouts(rng, 6, 9, dtype):
        plain = view.copy()
        weight = rng.standard_normal((9, 9)).astype(dtype)
        got, want = backend.linear_backward(view, view, weight), backend.linear_backward(plain, plain, weight)
        for got_array, want_array in zip(got, want):
            np.testing.assert_array_equal(got_array, want_array, err_msg=label)
        A = rng.standard_normal((6, 9)).astype(dtype)
        expected = A + 0.5 * np.outer(plain[:, 0], plain[0])
        backend.ger(A, view[:, 0], view[0], alpha=0.5)
        np.testing.assert_allclose(A, expected, rtol=1e-6, err_msg=label)
        np.testing.assert_array_equal(backend.relu(view), np.maximum(plain, 0), err_msg=label)
        np.testing.assert_array_equal(backend.relu_backward(view, view), backend.relu_backward(plain, plain),
                                      err_msg=label)
        labels = np.arange(6) % 9
        for got_array, want_array in zip(backend.cross_entropy(view, labels), backend.cross_entropy(plain, labels)):
            np.testing.assert_allclose(got_array, want_array, rtol=1e-6, err_msg=label)
        y = rng.standard_normal((6, 9)).astype(dtype)
        expected = y - 0.5 * plain
        backend.axpy_many(-0.5, [view], [y])
        np.testing.assert_allclose(y, expected, rtol=1e-6, err_msg=label)


def test_cross_entropy_reads_labels_of_every_layout(each_backend):
    rng = np.random.default_rng(13)
    logits = rng.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([3, 0, 2, 1, 3])
    unaligned = np.zeros(labels.nbytes + 1, np.uint8)[1:].view(np.int64)
    unaligned[...] = labels
    want = backend.cross_entropy(logits, labels)
    for view in (unaligned, labels[::-1].copy()[::-1], labels.repeat(2)[::2]):
        for got_array, want_array in zip(backend.cross_entropy(logits, view), want):
            np.testing.assert_allclose(got_array, want_array, rtol=1e-6)   # C or NumPy: 1 ulp apart


@pytest.mark.parametrize("dtype, row_bytes", [(np.float32, 13), (np.float64, 18)])
def test_out_whose_rows_are_not_whole_items_apart_is_refused_untouched(each_backend, dtype, row_bytes):
    """A field of a structured array: its rows are row_bytes apart, not a multiple of the item size,
    so C cannot address them (and its items are unaligned). Refused, with nothing written."""
    pad = row_bytes - 2 * np.dtype(dtype).itemsize
    records = np.zeros(4, [("v", dtype, (2,)), ("pad", "u1", (pad,))])
    out = records["v"]
    assert out.strides == (row_bytes, np.dtype(dtype).itemsize)
    a, b = np.ones((4, 3), dtype), np.ones((3, 2), dtype)
    strides = rf"strides \({row_bytes}, {np.dtype(dtype).itemsize}\)"
    with pytest.raises(ValueError, match=rf"out must have .*{strides}"):
        backend.gemm(a, b, out=out)
    with pytest.raises(ValueError, match=rf"A must have .*{strides}"):
        backend.ger(out, np.ones(4, dtype), np.ones(2, dtype))
    assert not records.tobytes().strip(b"\0")        # not one byte written
    row = records[:1]["v"]                              # a single row has no row stride to get wrong
    backend.gemm(a[:1], b, out=row)
    np.testing.assert_array_equal(row, [[3, 3]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_out_is_refused_and_spaced_rows_are_taken(each_backend, dtype):
    dtype = np.dtype(dtype)
    a, b = np.ones((4, 3), dtype), np.ones((3, 2), dtype)
    memory = np.zeros(8 * dtype.itemsize + 1, np.uint8)
    unaligned = memory[1:].view(dtype).reshape(4, 2)
    with pytest.raises(ValueError, match=f"out is not aligned.*{dtype.alignment} bytes"):
        backend.gemm(a, b, out=unaligned)
    with pytest.raises(ValueError, match="A is not aligned"):
        backend.ger(unaligned, np.ones(4, dtype), np.ones(2, dtype))
    assert not memory.any()
    records = np.zeros(4, [("v", dtype, (2,)), ("w", dtype)])   # rows 3 items apart: C takes them
    backend.gemm(a, b, out=records["v"])
    backend.ger(records["v"], np.ones(4, dtype), np.ones(2, dtype), alpha=2.0)
    np.testing.assert_array_equal(records["v"], np.full((4, 2), 5))
    assert not records["w"].any()
    column = np.zeros((2, 4), dtype).T[:, :1]                  # one column: its stride does not matter
    backend.gemm(a, b[:, :1], out=column)
    np.testing.assert_array_equal(column, np.full((4, 1), 3))


# --- bad input: Python exceptions naming the problem ------------------------------------------
def test_bad_input_is_refused(each_backend):
    f32 = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="same dtype"):
        backend.gemm(f32, np.ones((4, 2)))                       # float64 where float32 expected
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.gemm(f32.astype(np.int64), f32.T)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        backend.gemm([[1.0]], f32)
    with pytest.raises(ValueError, match="inner dimensions 4 and 3"):
        backend.gemm(f32, f32)
    with pytest.raises(ValueError, match="2-D"):
        backend.gemm(np.ones(3, np.float32), f32)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        backend.gemm(f32, f32.T.copy(), out=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        backend.gemm(f32, f32.T.copy(), out=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="contiguous rows"):
        backend.gemm(f32, f32.T.copy(), out=np.zeros((3, 3), np.float32).T)
    with pytest.raises(ValueError, match="read-only"):
        out = np.zeros((3, 3), np.float32)
        out.flags.writeable = False
        backend.gemm(f32, f32.T.copy(), out=out)
    square = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="out overlaps a"):
        backend.gemm(square, square.copy(), beta=1.0, out=square)
    with pytest.raises(ValueError, match="A must have shape"):
        backend.ger(np.zeros((3, 4), np.float32), np.ones(3, np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="overlaps x"):
        A = np.zeros((4, 4), np.float32)
        backend.ger(A, A[0], np.ones(4, np.float32))
    with pytest.raises(TypeError, match="share a dtype"):
        backend.ger(np.zeros((2, 2), np.float32), np.ones(2, np.float32), np.ones(2))


NOT_REAL_NUMBERS = ["2", None, 1 + 2j, np.complex64(2), True, np.bool_(True), [2.0], np.array([2.0]),
                    np.ones((1, 1))]   # a 1-element array is not a number: NumPy deprecates float() of it
REAL_NUMBERS = [2, 2.0, np.float32(2), np.float16(2), np.int64(2), np.uint8(2), np.array(2.0),
                np.array(2, np.int32)]   # 0-d arrays are NumPy's scalars (a 0-d Tensor's .data)


@pytest.mark.parametrize("bad", NOT_REAL_NUMBERS, ids=repr)
def test_alpha_and_beta_must_be_real_numbers(each_backend, bad):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    out = np.ones((3, 2), np.float32)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        backend.gemm(a, b, alpha=bad, out=out)
    with pytest.raises(TypeError, match="beta must be a real number"):
        backend.gemm(a, b, beta=bad, out=out)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        backend.ger(out, np.ones(3, np.float32), np.ones(2, np.float32), alpha=bad)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        backend.axpy_many(bad, [a], [a.copy()])
    assert (out == 1).all()


@pytest.mark.parametrize("number", REAL_NUMBERS, ids=repr)
def test_alpha_and_beta_take_any_real_number(each_backend, number):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    out = np.ones((3, 2), np.float32)
    backend.gemm(a, b, alpha=number, beta=number, out=out)        # 2 * 4 + 2 * 1
    backend.ger(out, np.ones(3, np.float32), np.ones(2, np.float32), alpha=number)
    y = np.zeros(5, np.float32)
    backend.axpy_many(number, [np.ones(5, np.float32)], [y])
    assert (out == 12).all() and out.dtype == np.float32 and (y == 2).all()


@pytest.mark.parametrize("bad", [1, 0, "yes", None, np.array(True), 1.0], ids=repr)
def test_trans_flags_must_be_bools(each_backend, bad):
    a = np.ones((3, 3), np.float32)
    with pytest.raises(TypeError, match="trans_a must be a bool"):
        backend.gemm(a, a, trans_a=bad)
    with pytest.raises(TypeError, match="trans_b must be a bool"):
        backend.gemm(a, a, trans_b=bad)
    assert (backend.gemm(a, a, np.True_, np.False_) == 3).all()


def test_use_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with backend.use("cuda"):
            pass


def test_environment_variable_forces_the_backend():
    # in the main thread, and in a thread started while the main thread has switched away
    code = ("import threading, tinygrad_edu as t\n"
            "print(t.backend.name())\n"
            "with t.backend.use('numpy'):\n"
            "    thread = threading.Thread(target=lambda: print(t.backend.name()))\n"
            "    thread.start()\n"
            "    thread.join()\n")
    for wanted in BACKENDS:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "TINYGRAD_EDU_BACKEND": wanted})
        assert out.stdout.split() == [wanted, wanted], out.stderr
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "TINYGRAD_EDU_BACKEND": "gpu"})
    assert bad.returncode != 0 and "unknown backend 'gpu'" in bad.stderr


def _import_with(variable, value, code="import tinygrad_edu"):
    env = {**__import__("os").environ, variable: value}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)   # a hang guard: the import takes about a second


_STEPS_THEN_FAULTS = """
import resource, numpy as np, tinygrad_edu as tg
from tinygrad_edu import nn
print(tg.backend.c_kernels.KEEPS_FREED_MEMORY)
tg.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 64, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 10))
optimizer, loss_fn = tg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), nn.CrossEntropyLoss()
x, y = tg.rand(64, 1, 28, 28), tg.tensor(np.arange(64) % 10)
faults = []
for step in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(float(np.median(faults[3:])))   # warm steps; the median, so one blip of the VM's does not count
"""


@needs_c
def test_a_training_step_reuses_the_memory_the_last_one_freed():
    """With the C kernels loaded, glibc's malloc keeps freed blocks: the CNN's training step at
    batch 64 faults in no new pages once warm (it took ~3,400 page faults a step before; warm
    steps now take 0-4, and a CI run once counted 56 a step over five steps, a blip of the VM's:
    hence the median step of nine)."""
    import os
    import platform
    if platform.libc_ver()[0] != "glibc" or "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("not glibc's malloc (another C library's, or AddressSanitizer's)")
    result = _import_with("TINYGRAD_EDU_BACKEND", "c", code=_STEPS_THEN_FAULTS)
    assert result.returncode == 0, result.stderr
    keeps, faults_per_step = result.stdout.split()
    assert keeps == "True" and float(faults_per_step) < 50


@needs_c
def test_the_users_own_malloc_setting_is_left_alone():
    result = _import_with("MALLOC_TRIM_THRESHOLD_", "131072",
                          code="import tinygrad_edu.backend.c_kernels as c; print(c.KEEPS_FREED_MEMORY)")
    assert result.stdout.split() == ["False"], result.stderr


@pytest.mark.parametrize("value", ["abc", "1e10", "2.5", "0", "-2", "65", "99999999999999999999"])
def test_a_bad_thread_count_is_refused_at_import(value):
    result = _import_with("TINYGRAD_EDU_NUM_THREADS", value)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ValueError: TINYGRAD_EDU_NUM_THREADS") and repr(value) in last_line
    assert "1 to 64" in last_line, last_line


@needs_c
@pytest.mark.parametrize("value, threads", [("1", 1), (" 3 ", 3), ("64", 64), ("", None)])
def test_a_good_thread_count_is_used(value, threads):
    code = "import os, tinygrad_edu.backend.c_kernels as c; print(c.THREADS, os.cpu_count())"
    result = _import_with("TINYGRAD_EDU_NUM_THREADS", value, code)
    got, cpus = map(int, result.stdout.split())
    assert got == (threads or min(cpus, 64)), result.stderr   # unset or empty: one per CPU


@needs_c
def test_the_thread_limit_is_the_pools():
    """c_kernels.MAX_THREADS is csrc/pool.h's TGE_MAX_JOBS: no kernel is cut into more pieces."""
    import re
    from pathlib import Path
    header = (Path(__file__).resolve().parent.parent / "csrc" / "pool.h").read_text()
    assert [str(backend.c_kernels.MAX_THREADS)] == re.findall(r"#define TGE_MAX_JOBS (\d+)", header)


@needs_c
def test_use_switches_the_backend_of_its_own_thread_only():
    """As no_grad: a switch holds in the thread that made it; the others keep theirs, and a new
    thread starts with the process's default (TINYGRAD_EDU_BACKEND, else the C kernels)."""
    import threading
    default = backend.name()
    other = "numpy" if default == "c" else "c"
    inside, checked, seen = threading.Event(), threading.Event(), {}

    def switch_and_wait():
        seen["new thread"] = backend.name()
        with backend.use(other):
            seen["switched"] = backend.name()
            inside.set()
            checked.wait(timeout=60)
        seen["after"] = backend.name()

    with backend.use(other):      # a switch here is not inherited by the new thread
        thread = threading.Thread(target=switch_and_wait)
        thread.start()
        assert inside.wait(timeout=60)
    seen["main while the thread is switched"] = backend.name()
    checked.set()
    thread.join(timeout=60)
    assert seen == {"new thread": default, "switched": other, "after": default,
                    "main while the thread is switched": default}


# --- the engine on both backends ----------------------------------------------------------------
def test_autograd_gradients_are_the_same_under_both_backends():
    grads = {}
    for name in BACKENDS:
        with backend.use(name):
            tg.manual_seed(0)
            model = tg.nn.Sequential(tg.nn.Linear(20, 16), tg.nn.ReLU(), tg.nn.Linear(16, 5))
            x = tg.tensor(np.random.default_rng(0).standard_normal((12, 20)).astype(np.float32))
            loss = tg.nn.CrossEntropyLoss()(model(x), tg.tensor(np.arange(12) % 5))
            loss.backward()
            u, v = tg.randn(7, requires_grad=True), tg.randn(9, requires_grad=True)
            (tg.outer(u, v) * tg.arange(63).reshape(7, 9).float()).sum().backward()
            grads[name] = [p.grad.numpy() for p in model.parameters()] + [u.grad.numpy(), v.grad.numpy()]
    for g_c, g_np in zip(*grads.values()):
        assert np.allclose(g_c, g_np, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif("c" not in BACKENDS, reason="C kernels not built")
@pytest.mark.parametrize("isa", [3, 2, 1])
def test_every_instruction_set_flavour_agrees(isa):
    from tinygrad_edu.backend import c_kernels
    lib = c_kernels.lib
    try:
        used = lib.tge_set_isa(isa)
        rng = np.random.default_rng(isa)
        with backend.use("c"):
            for m, k, n in [(12, 784, 512), (37, 19, 53), (100, 300, 70)]:
                for trans in [(False, False), (True, False), (False, True)]:
                    a, b = _operands(rng, m, k, n, *trans, np.float32)
                    _assert_matches(backend.gemm(a, b, *trans), _reference(a, b, *trans), k, np.float32)
            A = np.zeros((5, 37), np.float32)
            backend.ger(A, np.ones(5, np.float32), np.arange(37, dtype=np.float32))
            assert np.array_equal(A[4], np.arange(37))
            z, y = rng.standard_normal((12, 10)).astype(np.float32), np.arange(12) % 10
            np.testing.assert_allclose(backend.cross_entropy(z, y)[0], _cross_entropy_reference(z, y)[0], rtol=1e-5)
            grad, x, weight = (rng.standard_normal(shape).astype(np.float32) for shape in ((12, 37), (12, 53), (37, 53)))
            dx, dw, db = backend.linear_backward(grad, x, weight)
            _assert_matches(dx, _reference(grad, weight, False, False), 37, np.float32)
            _assert_matches(dw, _reference(grad, x, True, False), 12, np.float32)
            _assert_matches(db, grad.astype(np.float64).sum(axis=0), 12, np.float32)
        assert used <= isa
    finally:
        lib.tge_set_isa(-1)


# --- the C kernels' thread pool -------------------------------------------------------------------


@pytest.fixture
def c_threads(monkeypatch):
    """Set the C kernels' thread count (every product and update goes to C and may be split)."""
    from tinygrad_edu.backend import c_kernels
    for name in ("PARALLEL_MIN_FMAS", "PARALLEL_MIN_ELEMENTS"):
        monkeypatch.setattr(c_kernels, name, 0)
    monkeypatch.setattr(c_kernels, "numpy_is_faster", lambda m, n, k: False)
    with backend.use("c"):
        yield lambda n: monkeypatch.setattr(c_kernels, "THREADS", n)


@needs_c
@pytest.mark.parametrize("threads", [2, 3, 5])
def test_split_between_threads_gives_the_one_thread_result(c_threads, threads):
    """Each thread owns whole columns of C (and whole slices of the SGD update): the sums are
    the same ones in the same order, so the results are bit-identical."""
    rng = np.random.default_rng(threads)
    products = [(*_operands(rng, m, k, n, ta, tb, np.float32), ta, tb)
                for m, k, n, ta, tb in [(12, 784, 512, False, True), (512, 12, 784, True, False),
                                        (70, 300, 33, False, False)]]
    xs = [rng.standard_normal(n).astype(np.float32) for n in (37, 1000, 5, 4096, 17)]
    ys = [rng.standard_normal(x.size).astype(np.float32) for x in xs]
    linear = [rng.standard_normal(shape).astype(np.float32) for shape in ((12, 512), (12, 784), (512, 784))]
    results = {}
    for n in (1, threads):
        c_threads(n)
        updated = [y.copy() for y in ys]
        backend.axpy_many(-0.5, xs, updated)
        results[n] = ([backend.gemm(*product) for product in products] + updated
                      + list(backend.linear_backward(*linear)))
    for one, many in zip(results[1], results[threads]):
        assert np.array_equal(one, many)


@needs_c
def test_pool_wakes_sleeping_workers(c_threads):
    """Workers spin for 1 ms after a job, then sleep: a product after a pause must still run."""
    import time
    c_threads(2)
    a = np.ones((12, 300), np.float32)
    for _ in range(3):
        assert np.all(backend.gemm(a, a, trans_b=True) == 300)
        time.sleep(0.01)


@needs_c
@pytest.mark.slow
def test_products_from_several_python_threads_at_once(c_threads):
    """cffi releases the GIL: one caller holds the pool, the others run alone, all correct."""
    import concurrent.futures
    c_threads(2)
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((40, 200)).astype(np.float32),
              rng.standard_normal((200, 90)).astype(np.float32)) for _ in range(8)]

    def many_products(a, b):
        with backend.use("c"):   # the choice of backend is per thread
            return all(np.allclose(backend.gemm(a, b), a @ b, atol=1e-4) for _ in range(200))

    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        assert all(executor.map(lambda pair: many_products(*pair), pairs))


@needs_c
def test_gemm_in_a_forked_child_does_not_hang(c_threads):
    """The parent's pool workers do not exist in a fork()ed child: it must start its own."""
    import multiprocessing
    c_threads(2)
    big = np.ones((600, 600), np.float32)
    backend.gemm(big, big)  # the parent's pool is running now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_child_gemm).get(timeout=60)
    assert result == 600.0


def _child_gemm():
    big = np.ones((600, 600), np.float32)
    return float(backend.gemm(big, big)[0, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_matches_numpy_for_every_layout(each_backend, dtype):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((37, 11)).astype(dtype), rng.standard_normal((37, 11)).astype(dtype)
    for xs, ys in [(x, y.copy()), (x.T, y.T.copy()), (x[:, 1:5], y.copy()[:, 1:5]), (x[:0], y[:0].copy())]:
        expected = ys + dtype(-0.3) * xs
        backend.axpy_many(-0.3, [xs], [ys])
        assert np.allclose(ys, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="axpy"):
        backend.axpy_many(1.0, [x], [y[:, :3].copy()])
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.axpy_many(1.0, [x.astype(np.int64)], [y])



def _overlapping_updates(dtype):
    """(name, make) pairs: make() builds fresh (memory, xs, ys), where some y is another pair's y
    or x, whole or in part; memory lists every array the update may change."""
    def same_y():                       # optim.SGD([w, w]): one parameter listed twice
        w, g = np.linspace(-1, 1, 50_000).astype(dtype), np.ones(50_000, dtype)
        return [w], [g, g], [w, w]

    def y_is_a_later_x():               # pair 1 reads what pair 0 wrote; its y is a strided view
        w, g, v = np.ones(40_000, dtype), np.full(40_000, 2, dtype), np.zeros(80_000, dtype)
        return [w, v], [g, w], [w, v[::2]]

    def y_is_an_earlier_x():
        w, g, v = np.ones(40_000, dtype), np.full(40_000, 2, dtype), np.zeros(40_000, dtype)
        return [w, v], [w, g], [v, w]

    def overlapping_views():            # two slices of one buffer that share 20k elements
        base, g = np.arange(60_000, dtype=dtype), np.ones(40_000, dtype)
        return [base], [g, 2 * g], [base[:40_000], base[20_000:]]

    def view_of_a_y_as_x():             # x = a reversed view of another pair's y
        w, v = np.arange(30_000, dtype=dtype), np.zeros(30_000, dtype)
        return [w, v], [np.ones_like(w), w[::-1]], [w, v]

    def one_foreign_buffer_twice():     # two arrays over one bytearray: no NumPy array owns it
        memory = bytearray(30_000 * np.dtype(dtype).itemsize)
        w, also_w = np.frombuffer(memory, dtype), np.frombuffer(memory, dtype)
        w[...] = 1
        return [w], [np.ones_like(w), np.ones_like(w)], [w, also_w]

    return [(f.__name__, f) for f in (same_y, y_is_a_later_x, y_is_an_earlier_x, overlapping_views,
                                      view_of_a_y_as_x, one_foreign_buffer_twice)]


@pytest.fixture
def threads_for_every_update(monkeypatch):
    """On the C backend, split even small updates between two threads (where races show)."""
    if "c" in BACKENDS:
        monkeypatch.setattr(backend.c_kernels, "THREADS", 2)
        monkeypatch.setattr(backend.c_kernels, "PARALLEL_MIN_ELEMENTS", 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_many_on_overlapping_arrays_gives_the_in_order_result(each_backend, threads_for_every_update,
                                                                   dtype):
    """``for x, y in pairs: y += alpha * x``, in order, whatever memory the arrays share: C's
    threads must not race on a y listed twice, nor read an x before an earlier pair wrote it."""
    for name, make in _overlapping_updates(dtype):
        expected, xs, ys = make()
        for x, y in zip(xs, ys):
            y += dtype(-0.5) * x
        for _ in range(20):             # a race shows only now and then
            memory, xs, ys = make()
            backend.axpy_many(-0.5, xs, ys)
            for got, want in zip(memory, expected):
                np.testing.assert_array_equal(got, want, err_msg=name)


@needs_c
def test_axpy_many_hands_disjoint_arrays_to_c_at_once(monkeypatch):
    """The SGD step of a model: one C call, also for disjoint slices of one buffer; NumPy only
    when arrays overlap."""
    from tinygrad_edu.backend import c_kernels
    on_numpy = []
    monkeypatch.setattr(c_kernels.numpy_kernels, "axpy_many", lambda alpha, xs, ys: on_numpy.append(len(xs)))
    rng = np.random.default_rng(6)
    ws = [rng.standard_normal(shape).astype(np.float32) for shape in ((512, 784), (512,), (10, 64), (10,))]
    gs = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    base = np.zeros(100, np.float32)
    ws_after = [w - 0.1 * g for w, g in zip(ws, gs)]
    with backend.use("c"):
        backend.axpy_many(-0.1, gs + [gs[1][:50], gs[1][50:100]], ws + [base[:50], base[50:]])
        assert on_numpy == []
        backend.axpy_many(-0.1, [gs[0], gs[0]], [ws[0], ws[0]])
        assert on_numpy == [2]
    for got, want in zip(ws[1:], ws_after[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(base, -0.1 * gs[1][:100], rtol=1e-6)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_its_gradient_match_numpy_for_every_layout(each_backend, dtype):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((37, 19)).astype(dtype)
    z[0, :3] = [0.0, -0.0, np.nan]
    g = rng.standard_normal((37, 19)).astype(dtype)
    for zs, gs in [(z, g), (z.T, g.T), (z[:, 1:5], g[:, 1:5]), (z[:0], g[:0]), (z[5, 5], g[5, 5]), (z[5, 5, ...], g[5, 5, ...])]:
        y = backend.relu(zs)
        assert y.dtype == dtype and y.shape == np.shape(zs)
        np.testing.assert_array_equal(y, np.maximum(zs, 0))          # NaN stays NaN
        dz = backend.relu_backward(y, gs)
        np.testing.assert_array_equal(dz, _relu_gradient_rule(y, gs))
    assert not np.shares_memory(backend.relu(z), z)


def _relu_gradient_rule(y, grad):
    """PyTorch's (threshold_backward): grad where y > 0 or y is NaN, 0 where y <= 0, whatever
    grad is there (an infinite or NaN grad is not multiplied by 0)."""
    return np.where((y > 0) | np.isnan(y), grad, np.zeros((), grad.dtype))


def _special_values(dtype, repeat=1):
    """Every pair of (z, grad) from -inf, -1, -0, 0, 1, inf, NaN (and 2.5 for grad), C-contiguous;
    repeated so that the C kernel's vector loop sees them too."""
    special = [-np.inf, -1.0, -0.0, 0.0, 1.0, np.inf, np.nan]
    z, g = np.meshgrid(special, special + [2.5], indexing="ij")
    return np.tile(z, (repeat, 1)).astype(dtype), np.tile(g, (repeat, 1)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_with_nan_and_inf(each_backend, dtype):
    z, g = _special_values(dtype, repeat=5)
    y = backend.relu(z)
    np.testing.assert_array_equal(backend.relu_backward(y, g), _relu_gradient_rule(y, g))


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_is_the_same_on_both_backends(dtype):
    z, g = _special_values(dtype, repeat=5)
    results = []
    for name in ("c", "numpy"):
        with backend.use(name):
            results.append(backend.relu_backward(backend.relu(z), g))
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_its_gradient_match_pytorch_on_nan_and_inf(each_backend, dtype):
    torch = pytest.importorskip("torch")
    z, g = _special_values(dtype)
    z_torch = torch.tensor(z, requires_grad=True)
    y_torch = torch.nn.functional.relu(z_torch)
    y_torch.backward(torch.tensor(g))
    y = backend.relu(z)
    np.testing.assert_array_equal(y, y_torch.detach().numpy())
    np.testing.assert_array_equal(backend.relu_backward(y, g), z_torch.grad.numpy())


def test_relu_takes_integers_and_its_gradient_refuses_bad_input(each_backend):
    np.testing.assert_array_equal(backend.relu(np.array([-2, 0, 3])), [0, 0, 3])
    y = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="relu_backward: y has shape"):
        backend.relu_backward(y, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.relu_backward(y, np.ones((3, 4), np.int64))
    mixed = backend.relu_backward(y, np.ones((3, 4), np.float64))   # NumPy promotes, as before
    assert mixed.dtype == np.float64


def _cross_entropy_reference(z, y):
    z = z.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    dlogits = np.exp(logp)                 # softmax
    dlogits[np.arange(len(y)), y] -= 1     # - onehot
    return -logp[np.arange(len(y)), y], dlogits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c", [(1, 1), (1, 10), (12, 10), (7, 3), (128, 100)], ids=str)
def test_cross_entropy_losses_and_gradients_match_the_log_softmax_formula(each_backend, n, c, dtype):
    rng = np.random.default_rng(n * 100 + c)
    z = (rng.standard_normal((n, c)) * 5).astype(dtype)
    y = rng.integers(0, c, n)
    for logits in (z, np.asfortranarray(z), z * np.array(1e4, dtype)):   # contiguous, a copy path, huge
        losses, dlogits = backend.cross_entropy(logits, y)
        assert losses.shape == (n,) and dlogits.shape == (n, c)
        assert losses.dtype == dtype and dlogits.dtype == dtype
        want_losses, want_dlogits = _cross_entropy_reference(logits, y)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(losses, want_losses, rtol=tol, atol=tol * np.abs(logits).max())
        np.testing.assert_allclose(dlogits, want_dlogits, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 12, 1000])
def test_total_is_the_sum_over_the_divisor(each_backend, n, dtype):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    for divisor in (1, n or 1, 2.5):
        got = backend.total(x, divisor)
        assert got.shape == () and got.dtype == dtype
        np.testing.assert_allclose(got, x.astype(np.float64).sum() / divisor, rtol=1e-6, atol=1e-6)
    got = backend.total(x[::-1], 1)   # a reversed view: read as it is laid out
    np.testing.assert_allclose(got, x.astype(np.float64).sum(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_rows_multiplies_each_row_by_its_factor_over_the_divisor(each_backend, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3)).astype(dtype)
    one, per_row = np.asarray(2.0, dtype), rng.standard_normal(5).astype(dtype)
    assert np.array_equal(backend.scale_rows(x, one, 5), x * (one / dtype(5)))   # as NumPy, in x's dtype
    assert np.array_equal(backend.scale_rows(x, per_row), x * per_row[:, None])
    assert np.array_equal(backend.scale_rows(x.T.copy().T, per_row[::-1]), x * per_row[::-1, None])
    with pytest.raises(ValueError, match=r"g must be .* of shape \(\) or \(5,\)"):
        backend.scale_rows(x, per_row[:4])
    with pytest.raises(ValueError, match="g must be"):
        backend.scale_rows(x, per_row.astype(np.float32 if dtype == np.float64 else np.float64))
    with pytest.raises(TypeError, match="divisor must be a real number"):
        backend.scale_rows(x, one, "5")


def test_cross_entropy_nan_stays_in_its_row_and_labels_are_checked(each_backend):
    z = np.zeros((3, 4), np.float32)
    z[1, 2] = np.nan
    losses, dlogits = backend.cross_entropy(z, np.array([0, 1, 3]))
    assert np.isnan(losses[1]) and np.isnan(dlogits[1]).all()
    assert not np.isnan(dlogits[[0, 2]]).any()
    np.testing.assert_allclose(losses[[0, 2]], np.log(4), rtol=1e-6)
    for label in (4, -1, 2**40):
        with pytest.raises(IndexError, match=f"target {label} is out of range for 4 classes"):
            backend.cross_entropy(z, np.array([0, label, 1]))
    with pytest.raises(TypeError, match="int64"):
        backend.cross_entropy(z, np.array([0, 1, 1], np.int32))
    with pytest.raises(ValueError, match="need 3 labels"):
        backend.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.cross_entropy(np.zeros((3, 4), np.int64), np.array([0, 1, 1]))


def test_axpy_many_updates_every_pair_like_axpy(each_backend):
    rng = np.random.default_rng(5)
    base = rng.standard_normal(40)
    ys = [rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(3),   # two dtypes
          rng.standard_normal((6, 4)).astype(np.float32).T,                         # a view
          base[10:20], np.zeros(0, np.float32)]
    xs = [rng.standard_normal(y.shape).astype(y.dtype) for y in ys]
    xs[3] = base[15:25]                                   # overlaps its own y: NumPy's business
    expected = [y + y.dtype.type(-0.5) * x for x, y in zip(xs, ys)]
    backend.axpy_many(-0.5, xs, ys)
    for got, want in zip(ys, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="2 x arrays but 1 y arrays"):
        backend.axpy_many(1.0, xs[:2], ys[:1])
    with pytest.raises(ValueError, match="axpy_many: x is"):
        backend.axpy_many(1.0, [xs[0], xs[1]], [ys[0], ys[0]])


def test_axpby_many_is_the_momentum_update_of_every_pair(each_backend, threads_for_every_update):
    """ys[i] = alpha xs[i] + beta ys[i] (SGD's momentum buffers), on the same mix of arrays as
    axpy_many: C takes the contiguous ones, in two threads, NumPy the views and the overlapping pair."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal(40)
    ys = [rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(3),
          rng.standard_normal((6, 4)).astype(np.float32).T, base[10:20], np.zeros(0, np.float32),
          rng.standard_normal(5000).astype(np.float32)]                  # split between the threads
    xs = [rng.standard_normal(y.shape).astype(y.dtype) for y in ys]
    xs[3] = base[15:25]
    expected = [y.dtype.type(0.9) * y + y.dtype.type(0.75) * x for x, y in zip(xs, ys)]
    backend.axpby_many(0.75, xs, 0.9, ys)
    for got, want in zip(ys, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="axpby_many: 2 x arrays but 1 y arrays"):
        backend.axpby_many(1.0, xs[:2], 0.5, ys[:1])
    with pytest.raises(ValueError, match="axpby_many: y is read-only"):
        frozen = np.zeros(3)
        frozen.flags.writeable = False
        backend.axpby_many(1.0, [np.ones(3)], 0.5, [frozen])
    with pytest.raises(TypeError, match="beta"):
        backend.axpby_many(1.0, xs[:1], "0.5", ys[:1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_wide_shallow_product_into_rows_that_start_off_a_cache_line(each_backend, dtype):
    """K = 25 and 1040 columns, written into rows 1040 items apart that start 4 items past a
    64-byte boundary: the C sweep aligns its tiles after a first one of 4 columns, so its first
    block of columns is 4 + NC wide and the last is narrower than a tile, which then reaches back
    into the block before."""
    rng = np.random.default_rng(8)
    a, b = _operands(rng, 7, 25, 1040, False, False, dtype)
    item = np.dtype(dtype).itemsize
    memory = np.zeros(7 * 1040 + 64, dtype)
    start = (-memory.ctypes.data % 64) // item + 4
    out = memory[start:start + 7 * 1040].reshape(7, 1040)
    backend.gemm(a, b, out=out)
    _assert_matches(out, _reference(a, b, False, False), 25, dtype)
    assert not memory[:start].any() and not memory[start + 7 * 1040:].any()   # nothing written outside


def test_axpby_many_with_beta_one_is_axpy_many_bit_for_bit(each_backend):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1000).astype(np.float32)
    a = rng.standard_normal(1000).astype(np.float32)
    b = a.copy()
    backend.axpby_many(-0.1, [x], 1.0, [a])
    backend.axpy_many(-0.1, [x], [b])
    assert np.array_equal(a, b)


# --- windows: im2col, col2im, max pooling ------------------------------------------------------------
def _window_reference(x, kernel, stride, padding, dilation, fill):
    """Every window of x, element by element in plain Python loops: (N, C, OH, OW, kh, kw), with
    ``fill`` where a window reads the padding, and for each element its position in the plane
    (or -1 in the padding)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), ((top, bottom), (left, right)), (dh, dw) = kernel, stride, padding, dilation
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    values = np.full((n, c, oh, ow, kh, kw), fill, x.dtype)
    where = np.full((oh, ow, kh, kw), -1)
    for i in range(oh):
        for j in range(ow):
            for p in range(kh):
                for q in range(kw):
                    r, col = i * sh + p * dh - top, j * sw + q * dw - left
                    if 0 <= r < h and 0 <= col < w:
                        values[:, :, i, j, p, q] = x[:, :, r, col]
                        where[i, j, p, q] = r * w + col
    return values, where


WINDOW_CASES = [  # (x shape, kernel, stride, padding, dilation)
    ((2, 3, 7, 6), (3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((1, 1, 28, 28), (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),       # the lecture's first conv
    ((3, 20, 12, 12), (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),      # and its second
    ((2, 2, 9, 8), (3, 3), (2, 3), ((1, 2), (2, 0)), (1, 1)),
    ((1, 3, 10, 11), (3, 2), (2, 1), ((2, 1), (0, 3)), (2, 3)),
    ((2, 1, 4, 5), (4, 5), (1, 1), ((3, 3), (4, 4)), (1, 1)),         # mostly padding
    ((1, 2, 1, 1), (1, 1), (3, 3), ((0, 0), (0, 0)), (1, 1)),
    ((2, 3, 8, 7), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),         # pooling's usual 2x2 tiles
    ((2, 2, 5, 4), (2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)),         # rows of 3: shorter than a vector
    ((1, 2, 5, 601), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),       # 2x2 tiles, rows past one block of 256
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", WINDOW_CASES)
def test_im2col_and_col2im_match_the_loops(each_backend, case, dtype):
    """im2col lays each window out as a column; col2im adds the columns back where they were read
    (its adjoint: <im2col(x), g> = <x, col2im(g)>)."""
    shape, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    windows, where = _window_reference(x, kernel, stride, padding, dilation, 0)
    cols = backend.im2col(x, kernel, stride, padding, dilation)
    n, c = shape[:2]
    assert cols.shape == (c * kernel[0] * kernel[1], n) + windows.shape[2:4] and cols.dtype == dtype
    assert np.array_equal(cols, windows.transpose(1, 4, 5, 0, 2, 3).reshape(cols.shape))
    g = rng.standard_normal(cols.shape).astype(dtype)
    dx = backend.col2im(g, shape, kernel, stride, padding, dilation)
    expected = np.zeros((n, c, shape[2] * shape[3]))
    g_windows = g.reshape(c, *kernel, n, *cols.shape[2:]).transpose(3, 0, 4, 5, 1, 2)
    for (i, j, p, q), at in np.ndenumerate(where):
        if at >= 0:
            expected[:, :, at] += g_windows[:, :, i, j, p, q]
    assert dx.shape == shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, expected.reshape(shape), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [c for c in WINDOW_CASES if c[4] == (1, 1)
                                  and all(side < k for sides, k in zip(c[3], c[1]) for side in sides)])
def test_max_pool_matches_the_loops_with_ties_nan_and_inf(each_backend, case, dtype):
    """Each window's largest element and its position: the first of equal ones in row-major order,
    the first NaN over any number, the first element inside the plane for a window of -inf only;
    the backward adds each gradient at its window's position."""
    shape, kernel, stride, padding, _ = case
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, shape).astype(dtype)          # many ties
    x[rng.random(shape) < 0.1] = np.nan
    x[rng.random(shape) < 0.2] = -np.inf
    x[0, 0] = -np.inf                                    # a plane of -inf only
    windows, where = _window_reference(x, kernel, stride, padding, (1, 1), -np.inf)
    flat = windows.reshape(*windows.shape[:4], -1)
    real = (where.reshape(*where.shape[:2], -1) >= 0)
    # the first NaN, else the first largest, among the window's elements inside the plane
    key = np.where(np.isnan(flat), 2.0, np.where(flat == flat.max(axis=-1, initial=-np.inf, where=real,
                                                                keepdims=True) , 1.0, 0.0))
    key = np.where(real, key, -1.0)
    chosen = np.argmax(key, axis=-1)
    expected_at = np.take_along_axis(np.broadcast_to(where.reshape(*where.shape[:2], -1), flat.shape),
                                     chosen[..., None], axis=-1)[..., 0]
    y, argmax = backend.max_pool(x, kernel, stride, padding)
    assert argmax.dtype == np.int64 and y.dtype == dtype
    assert np.array_equal(argmax, expected_at)
    assert np.array_equal(y, np.take_along_axis(x.reshape(*shape[:2], -1), argmax.reshape(*shape[:2], -1),
                                                axis=-1).reshape(y.shape), equal_nan=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = backend.max_pool_backward(g, argmax, shape)
    expected = np.zeros((shape[0] * shape[1], shape[2] * shape[3]))
    for plane, (at, grad) in enumerate(zip(argmax.reshape(len(expected), -1), g.reshape(len(expected), -1))):
        np.add.at(expected[plane], at, grad)
    np.testing.assert_allclose(dx, expected.reshape(shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(20, 3, 24, 24), (3, 2, 5), (4, 1), (2, 5, 0, 3), (1, 1, 7)])
def test_batch_major_and_channel_major_swap_the_leading_axes(each_backend, shape, dtype):
    """batch_major: y[n, o] = rows[o, n] + bias[o]; channel_major, its adjoint: rows[o, n] =
    grad[n, o], and the sum of each channel (the bias gradient) in float64 accuracy."""
    rng = np.random.default_rng(4)
    rows = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[:1]).astype(dtype)
    expected = rows.swapaxes(0, 1) + bias.reshape((-1,) + (1,) * (len(shape) - 2))
    y = backend.batch_major(rows, bias)
    assert y.shape == expected.shape and y.dtype == dtype and y.flags.c_contiguous
    assert np.array_equal(y, expected)                       # one addition per element: exact
    assert np.array_equal(backend.batch_major(rows), rows.swapaxes(0, 1))
    grad = (rng.standard_normal(shape) + 100).astype(dtype)  # large sums: rounding shows
    back, sums = backend.channel_major(grad)
    assert back.shape == rows.swapaxes(0, 1).shape and back.flags.c_contiguous
    assert np.array_equal(back, grad.swapaxes(0, 1))
    exact = grad.astype(np.float64).swapaxes(0, 1).reshape(shape[1], -1).sum(1)
    assert sums.dtype == dtype
    np.testing.assert_allclose(sums, exact, rtol=1e-6 if dtype == np.float32 else 1e-13)
    assert backend.channel_major(grad, need_sums=False)[1] is None
    # strided inputs are read as the arrays they show
    assert np.array_equal(backend.batch_major(rows[:, ::-1], bias), expected[::-1])
    assert np.array_equal(backend.channel_major(grad[::-1])[0], grad[::-1].swapaxes(0, 1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(20, 3, 24, 24), (3, 2, 5), (64, 2, 8, 8)])
def test_the_c_layout_kernels_with_a_relu_fused_equal_the_two_calls_they_replace(shape, dtype):
    """tinygrad_edu.jit fuses a ReLU into the C layout kernels: batch_major with relu = 1 writes
    relu(batch_major(rows, bias)), channel_major with relu_y masks g as relu_backward(y, g) would
    first; both bit for bit, NaN, inf and -0.0 included (relu keeps NaN and -0.0, relu_backward
    zeroes where y <= 0, whatever g is)."""
    if "c" not in backend.available():
        pytest.skip("the C kernels are not built")
    ck = backend.c_kernels
    kernels, ffi = ck._KERNELS[np.dtype(dtype)], ck.ffi
    rng = np.random.default_rng(5)
    rows = rng.standard_normal(shape).astype(dtype)
    rows.flat[:4] = [np.nan, -0.0, np.inf, -np.inf]
    bias = rng.standard_normal(shape[:1]).astype(dtype)
    o, n, p = shape[0], shape[1], int(np.prod(shape[2:]))
    with backend.use("c"):
        expected = backend.relu(backend.batch_major(rows, bias))
        fused = np.empty(expected.shape, dtype)
        kernels.batch_major(o, n, p, ffi.from_buffer(kernels.array, rows), ffi.from_buffer(kernels.array, bias), 1,
                            ffi.from_buffer(kernels.array, fused), 2)
        assert fused.tobytes() == expected.tobytes()

        grad = rng.standard_normal(expected.shape).astype(dtype)
        grad.flat[:3] = [np.nan, np.inf, -0.0]
        want_rows, want_sums = backend.channel_major(backend.relu_backward(expected, grad))
        got_rows, got_sums = np.empty_like(want_rows), np.empty_like(want_sums)
        kernels.channel_major(n, o, p, ffi.from_buffer(kernels.array, grad), ffi.from_buffer(kernels.array, expected),
                              ffi.from_buffer(kernels.array, got_rows), ffi.from_buffer(kernels.array, got_sums), 2)
        assert got_rows.tobytes() == want_rows.tobytes() and got_sums.tobytes() == want_sums.tobytes()


def test_batch_major_and_channel_major_name_their_bad_arguments(each_backend):
    rows = np.zeros((3, 2, 4))
    with pytest.raises(ValueError, match="rows must have at least 2 dimensions"):
        backend.batch_major(np.zeros(3))
    with pytest.raises(TypeError, match="rows must be float32 or float64"):
        backend.batch_major(rows.astype(np.int32))
    with pytest.raises(ValueError, match=r"bias must be float64 of shape \(3,\)"):
        backend.batch_major(rows, np.zeros(2))
    with pytest.raises(ValueError, match=r"bias must be float64 of shape \(3,\)"):
        backend.batch_major(rows, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="grad must have at least 2 dimensions"):
        backend.channel_major(np.zeros(3))
    with pytest.raises(TypeError, match="need_sums must be a bool"):
        backend.channel_major(rows, need_sums=1)


def test_window_kernels_read_inputs_of_every_layout(each_backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 10))
    views = [x[:, :, ::2], x.transpose(0, 1, 3, 2), np.asfortranarray(x), x[:, ::-1]]
    for view in views:
        args = ((3, 2), (1, 2), ((1, 0), (0, 1)), (1, 1))
        assert np.array_equal(backend.im2col(view, *args), backend.im2col(view.copy(), *args))
        cols = rng.standard_normal(backend.im2col(view, *args).shape)
        assert np.array_equal(backend.col2im(cols[:, ::-1][:, ::-1], view.shape, *args),
                              backend.col2im(cols, view.shape, *args))
        y, argmax = backend.max_pool(view, (2, 2), (2, 2))
        y2, argmax2 = backend.max_pool(view.copy(), (2, 2), (2, 2))
        assert np.array_equal(y, y2) and np.array_equal(argmax, argmax2)
        g = rng.standard_normal(y.shape)[..., ::-1]
        assert np.array_equal(backend.max_pool_backward(g, argmax[..., ::-1], view.shape),
                              backend.max_pool_backward(g.copy(), argmax[..., ::-1].copy(), view.shape))


@needs_c
def test_window_kernels_split_between_threads_give_the_one_thread_result(c_threads):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 13, 11)).astype(np.float32)
    args = ((3, 3), (2, 1), ((1, 1), (2, 0)), (1, 2))
    cols = rng.standard_normal(backend.im2col(x, *args).shape).astype(np.float32)
    results = {}
    for n in (1, 3):
        c_threads(n)
        results[n] = [backend.im2col(x, *args), backend.col2im(cols, x.shape, *args),
                      *backend.max_pool(x, (3, 2), (2, 2), ((1, 1), (0, 1)))]
    for one, many in zip(results[1], results[3]):
        assert np.array_equal(one, many)


def test_window_kernels_refuse_bad_input(each_backend):
    x = np.zeros((2, 3, 8, 8))
    good = ((3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1))
    with pytest.raises(ValueError, match="x must be 4-D"):
        backend.im2col(np.zeros((3, 8, 8)), *good)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        backend.im2col(x.astype(np.int64), *good)
    with pytest.raises(ValueError, match="x must not be empty"):
        backend.im2col(np.zeros((0, 3, 8, 8)), *good)
    with pytest.raises(ValueError, match="kernel must be a pair of ints of at least 1"):
        backend.im2col(x, (0, 3), *good[1:])
    with pytest.raises(ValueError, match="stride must be a pair"):
        backend.im2col(x, (3, 3), 1, *good[2:])
    with pytest.raises(ValueError, match=r"padding\[1\] must be a pair of ints of at least 0"):
        backend.im2col(x, (3, 3), (1, 1), ((0, 0), (-1, 0)), (1, 1))
    with pytest.raises(ValueError, match="does not fit"):
        backend.im2col(x, (3, 9), *good[1:])
    with pytest.raises(ValueError, match=r"cols must have shape \(27, 2, 6, 6\)"):
        backend.col2im(np.zeros((27, 2, 6, 5)), x.shape, *good)
    with pytest.raises(ValueError, match="x_shape must be a tuple of 4 positive ints"):
        backend.col2im(np.zeros((27, 2, 6, 6)), (2, 3, 8), *good)
    with pytest.raises(ValueError, match="must be smaller than the kernel"):
        backend.max_pool(x, (2, 2), (2, 2), ((2, 0), (0, 0)))
    y, argmax = backend.max_pool(x, (2, 2), (2, 2))
    with pytest.raises(TypeError, match="argmax must be an int64"):
        backend.max_pool_backward(y, argmax.astype(np.int32), x.shape)
    with pytest.raises(ValueError, match="x_shape must be 4 positive ints"):
        backend.max_pool_backward(y, argmax, (2, 4, 8, 8))
    for bad in (-1, 64):            # C would write there: refused before it
        wrong = argmax.copy()
        wrong[1, 2, 3, 0] = bad
        with pytest.raises(IndexError, match="argmax holds positions outside"):
            backend.max_pool_backward(y, wrong, x.shape)
