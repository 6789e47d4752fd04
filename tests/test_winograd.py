"""Winograd's convolution (``fast.WinogradConv2d``) and the kernels under it: its matrices compute
the valid correlation exactly, the op equals ``ops.Conv2d`` (values and all three gradients), each
tile transform equals a loop written here and the C backend equals NumPy's, each backward kernel is
its forward's adjoint, bad arguments are refused by name, and ``nn.functional.conv2d`` sends a
convolution there only where ``winograd_pays`` says so.

Tests of the C kernels themselves skip where they are not built; the op and the kernels' other
checks run on every backend that is (the NumPy backend implements the same kernels)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_edu as tg
import tinygrad_edu.nn.functional as F
from tinygrad_edu import backend, fast, nn, ops, optim
from tinygrad_edu.autograd import gradcheck

BACKENDS = backend.available()
needs_c = pytest.mark.skipif("c" not in BACKENDS, reason="C kernels not built")
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
KERNELS = range(2, 8)           # r: every kernel size Winograd takes, m = 9 - r outputs a tile
TILE = 8
# relative to the largest magnitude of the reference (the op: ~1e-14 measured in float64, ~1e-5 in
# float32, where the transforms' larger intermediate numbers cost ~10x im2col's rounding error)
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}
NO_PADDING = ((0, 0), (0, 0))


def assert_close(got, expected, rtol):
    """Equal up to ``rtol`` times the largest magnitude of ``expected``, and the same shape."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(got.astype(np.float64) - expected).max(initial=0.0)
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol:g} x {scale:.3g}"


def output_size(x_shape, r, padding):
    return tuple(x_shape[2 + i] + sum(padding[i]) - r + 1 for i in (0, 1))


def tile_counts(oh, ow, m):
    return -(-oh // m), -(-ow // m)


# --- loop references for the four tile transforms (tile by tile, from the docstrings) --------------
def framed(x, r, m, padding):
    """x on a zero frame in which tile (ty, tx) is rows ty m.. ty m + 7, columns tx m.. tx m + 7,
    x's pixel (i, j) at (i + top, j + left); and the tile counts."""
    n, c, h, w = x.shape
    (top, _), (left, _) = padding
    th, tw = tile_counts(*output_size(x.shape, r, padding), m)
    frame = np.zeros((n, c, max(top + h, (th - 1) * m + TILE), max(left + w, (tw - 1) * m + TILE)),
                     x.dtype)
    frame[:, :, top:top + h, left:left + w] = x
    return frame, th, tw


def reference_input(x, BT, m, r, padding):
    frame, th, tw = framed(x, r, m, padding)
    n, c = x.shape[:2]
    v = np.zeros((TILE, TILE, c, n, th, tw))
    for ty in range(th):
        for tx in range(tw):
            d = frame[:, :, ty * m:ty * m + TILE, tx * m:tx * m + TILE].astype(np.float64)
            v[..., ty, tx] = np.einsum("ap,ncpq,bq->abcn", BT, d, BT)     # B^T d B per tile
    return v.reshape(TILE * TILE, c, n * th * tw)


def reference_input_backward(dv, BT, m, x_shape, r, padding):
    n, c, h, w = x_shape
    frame, th, tw = framed(np.zeros(x_shape), r, m, padding)
    dv = dv.astype(np.float64).reshape(TILE, TILE, c, n, th, tw)
    for ty in range(th):
        for tx in range(tw):                                             # B dV B^T, added back
            frame[:, :, ty * m:ty * m + TILE, tx * m:tx * m + TILE] += np.einsum(
                "ap,abcn,bq->ncpq", BT, dv[..., ty, tx], BT)
    (top, _), (left, _) = padding
    return frame[:, :, top:top + h, left:left + w]


def reference_output(M, AT, y_shape, bias=None):
    n, o, oh, ow = y_shape
    m = len(AT)
    th, tw = tile_counts(oh, ow, m)
    M = M.astype(np.float64).reshape(TILE, TILE, o, n, th, tw)
    y = np.zeros((n, o, th * m, tw * m))
    for ty in range(th):
        for tx in range(tw):                                             # A^T M A per tile
            y[:, :, ty * m:(ty + 1) * m, tx * m:(tx + 1) * m] = np.einsum(
                "ia,abon,jb->noij", AT, M[..., ty, tx], AT)
    y = y[:, :, :oh, :ow]
    return y if bias is None else y + bias[:, None, None]


def reference_output_backward(grad, AT):
    n, o, oh, ow = grad.shape
    m = len(AT)
    th, tw = tile_counts(oh, ow, m)
    g = np.zeros((n, o, th * m, tw * m))
    g[:, :, :oh, :ow] = grad
    dm = np.zeros((TILE, TILE, o, n, th, tw))
    for ty in range(th):
        for tx in range(tw):                                             # A g A^T per tile
            dm[..., ty, tx] = np.einsum("ia,noij,jb->abon", AT, g[:, :, ty * m:(ty + 1) * m,
                                                                   tx * m:(tx + 1) * m], AT)
    return dm.reshape(TILE * TILE, o, n * th * tw)


# --- 1. the matrices -------------------------------------------------------------------------------
@pytest.mark.parametrize("r", KERNELS)
def test_the_matrices_compute_the_valid_correlation_of_a_tile(r):
    """A^T [(G g G^T) * (B^T d B)] A = the m x m valid correlation of an 8 x 8 tile d with g."""
    AT, GG, BT = fast.winograd_matrices(r, np.float64)
    m = 9 - r
    assert (AT.shape, GG.shape, BT.shape) == ((m, TILE), (TILE * TILE, r * r), (TILE, TILE))
    assert AT.dtype == GG.dtype == BT.dtype == np.float64
    rng = np.random.default_rng(r)
    for _ in range(20):
        d, g = rng.standard_normal((TILE, TILE)), rng.standard_normal((r, r))
        y = AT @ ((GG @ g.ravel()).reshape(TILE, TILE) * (BT @ d @ BT.T)) @ AT.T
        expected = np.array([[np.sum(d[i:i + r, j:j + r] * g) for j in range(m)] for i in range(m)])
        assert_close(y, expected, 1e-12)


@pytest.mark.parametrize("r", KERNELS)
def test_the_matrices_give_every_product_of_a_pixel_and_a_weight_its_place(r):
    """The bilinear map the matrices make, written out on every pair of basis tile and filter:
    pixel (p, q) times weight (k, l) lands on output (p - k, q - l) and nowhere else. This is
    the identity of the test above for all inputs at once (a wrong entry anywhere shows)."""
    AT, GG, BT = fast.winograd_matrices(r, np.float64)
    m = 9 - r
    # T[i, j, p, q, k, l] = sum over a, b of AT[i, a] AT[j, b] GG[(a, b), (k, l)] BT[a, p] BT[b, q]
    T = np.einsum("ia,jb,abkl,ap,bq->ijpqkl", AT, AT, GG.reshape(TILE, TILE, r, r), BT, BT)
    i, j, p, q, k, l = np.indices(T.shape, sparse=True)
    expected = ((p == i + k) & (q == j + l)).astype(float)
    scale = np.einsum("ia,jb,abkl,ap,bq->ijpqkl", *map(np.abs, (AT, AT, GG.reshape(TILE, TILE, r, r),
                                                               BT, BT)))
    assert T.shape == (m, m, TILE, TILE, r, r)
    assert np.all(np.abs(T - expected) <= 3e-14 * scale)


@pytest.mark.parametrize("r", KERNELS)
def test_the_float32_matrices_are_the_float64_ones_rounded(r):
    wide, narrow = fast.winograd_matrices(r, np.float64), fast.winograd_matrices(r, np.float32)
    for a, b in zip(wide, narrow):
        assert b.dtype == np.float32
        assert np.array_equal(b, a.astype(np.float32))
    AT, _, BT = wide
    points = np.array([0, 1, -1, 2, -2, 0.5, -0.5])
    # A^T's columns: the powers of each point (and the point at infinity's unit column)
    assert np.array_equal(AT[:, :7], points[None, :] ** np.arange(9 - r)[:, None])
    assert np.array_equal(AT[:, 7], np.eye(9 - r)[-1])
    # B^T's rows p_j: the coefficients of prod_{l != j} (x - p_l), which vanish at every other point
    values = np.polynomial.polynomial.polyval(points, BT[:7].T)   # (row, point)
    assert np.allclose(values * (1 - np.eye(7)), 0, atol=1e-12)
    assert np.all(np.abs(np.diag(values)) > 1e-3)


# --- 2. the op equals ops.Conv2d ---------------------------------------------------------------------
def winograd_cases(r):
    """(n, c, o, (oh, ow), padding, bias) for kernel r: full tiles, partial ones, asymmetric and
    zero padding, an output smaller than a tile from a 1 x 1 image, batch 1 and several."""
    m = 9 - r
    return [(1, 2, 3, (2 * m, m), NO_PADDING, True),                        # whole tiles
            (3, 4, 5, (m + 1, 2 * m - 1), ((r - 1, 0), (1, r // 2)), False),  # partial, asymmetric
            (2, 3, 2, (1, 2), ((0, r - 1), (r - 1, 1)), True),             # a 1 x 1 image
            (2, 3, 2, (3 * m + 2, m + 3), ((r // 2, (r - 1) // 2),) * 2, True),  # "same"
            (1, 1, 1, (m - 1, 2 * m + 1), ((1, 2), (0, 0)), False)]


def images_for(n, c, r, out, padding):
    h, w = (out[i] + r - 1 - sum(padding[i]) for i in (0, 1))
    assert h >= 1 and w >= 1
    return (n, c, h, w)


def conv_value_and_grads(op, arrays, grad, needs=(True, True, True), **options):
    """y = op(x, w[, b]) and the gradients of the inputs that need one, for dL/dy = ``grad``."""
    inputs = [tg.tensor(a, requires_grad=need) for a, need in zip(arrays, needs)]
    y = op.apply(*inputs, **options)
    y.backward(grad.astype(y.dtype))
    return y.data, [t.grad.data if t.grad is not None else None for t in inputs]


def winograd_and_plain(arrays, padding, grad_seed=0, needs=(True, True, True)):
    """WinogradConv2d's and ops.Conv2d's outputs and gradients, for the same random dL/dy."""
    rng = np.random.default_rng(grad_seed)
    x, w = arrays[:2]
    grad = rng.standard_normal((x.shape[0], w.shape[0]) + output_size(x.shape, w.shape[2], padding))
    fused = conv_value_and_grads(fast.WinogradConv2d, arrays, grad, needs, padding=padding)
    plain = conv_value_and_grads(ops.Conv2d, arrays, grad, needs, stride=(1, 1), padding=padding,
                                 dilation=(1, 1), groups=1)
    return fused, plain


def assert_same_conv(fused, plain, rtol):
    (y, grads), (y_plain, grads_plain) = fused, plain
    assert y.dtype == y_plain.dtype
    assert_close(y, y_plain, rtol)
    for g, g_plain in zip(grads, grads_plain):
        assert (g is None) == (g_plain is None)
        if g is not None:
            assert g.dtype == g_plain.dtype
            assert_close(g, g_plain, rtol)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("r", KERNELS)
def test_winograd_conv2d_equals_the_plain_conv2d(backend_name, dtype, r):
    """Forward, dL/dx, dL/dw and dL/db, for every kernel size, each case of ``winograd_cases``."""
    rng = np.random.default_rng(r)
    for n, c, o, out, padding, bias in winograd_cases(r):
        x_shape = images_for(n, c, r, out, padding)
        arrays = [rng.standard_normal(s).astype(dtype) for s in (x_shape, (o, c, r, r))
                  + (((o,),) if bias else ())]
        with backend.use(backend_name):
            fused, plain = winograd_and_plain(arrays, padding, r)
        assert fused[0].shape == (n, o) + out
        assert_same_conv(fused, plain, TOLERANCE[dtype])


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True),
                                   (True, True, False)])
def test_winograd_conv2d_computes_only_the_gradients_asked_for(backend_name, needs):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in ((2, 3, 9, 11), (4, 3, 3, 3), (4,))]
    with backend.use(backend_name):
        fused, plain = winograd_and_plain(arrays, ((1, 0), (2, 1)), needs=needs)
    assert [g is not None for g in fused[1]] == list(needs)
    assert_same_conv(fused, plain, TOLERANCE[np.float64])


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(n=st.integers(1, 4), c=st.integers(1, 5), o=st.integers(1, 5), r=st.integers(2, 7),
       extra=st.tuples(st.integers(0, 9), st.integers(0, 9)),
       padding=st.tuples(st.tuples(st.integers(0, 8), st.integers(0, 8)),
                         st.tuples(st.integers(0, 8), st.integers(0, 8))),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_winograd_conv2d_equals_the_plain_conv2d_on_random_shapes(backend_name, dtype, n, c, o, r,
                                                                     extra, padding, bias, seed):
    """Any image the kernel fits into (padding included, larger than the kernel or not)."""
    rng = np.random.default_rng(seed)
    size = [max(1, r - sum(p)) + e for p, e in zip(padding, extra)]
    arrays = [rng.standard_normal(s).astype(dtype) for s in ((n, c, *size), (o, c, r, r))
              + (((o,),) if bias else ())]
    with backend.use(backend_name):
        fused, plain = winograd_and_plain(arrays, padding, seed)
    assert_same_conv(fused, plain, TOLERANCE[dtype])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_winograd_conv2d_passes_gradcheck(backend_name):
    rng = np.random.default_rng(2)
    x, w, b = (tg.tensor(rng.standard_normal(s), requires_grad=True)
               for s in ((2, 2, 5, 7), (2, 2, 3, 3), (2,)))
    with backend.use(backend_name):
        assert gradcheck(lambda *t: fast.WinogradConv2d.apply(*t, padding=((1, 0), (0, 2))), (x, w, b))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_winograd_conv2d_leaves_its_inputs_alone_and_backward_twice_adds_up(backend_name):
    """A retained graph run twice gives twice the gradients (backward makes new arrays, never
    hands out what it saved), and the inputs are unchanged."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s) for s in ((2, 8, 7, 6), (3, 8, 4, 4), (3,))]
    copies = [a.copy() for a in arrays]
    inputs = [tg.tensor(a, requires_grad=True) for a in arrays]
    with backend.use(backend_name):
        y = fast.WinogradConv2d.apply(*inputs, padding=((1, 2), (2, 1)))
        grad = rng.standard_normal(y.shape)
        y.backward(grad, retain_graph=True)
        first = [t.grad.data.copy() for t in inputs]
        y.backward(grad)
    for t, once, a, original in zip(inputs, first, arrays, copies):
        assert_close(t.grad.data, 2 * once, 1e-14)
        assert np.array_equal(a, original)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("images_a_chunk", [1, 2, 3])
def test_a_batch_taken_a_few_images_at_a_time_gives_the_whole_batchs_result(
        monkeypatch, backend_name, dtype, images_a_chunk):
    """WinogradConv2d takes a batch in chunks (WINOGRAD_CHUNK_BYTES of products each): chunks of
    1, 2 and 3 of 5 images (the last one short) give what the plain op gives, the bias gradient
    added up over the chunks."""
    n, c, o, r, padding = 5, 3, 4, 4, ((1, 2), (2, 0))
    out = output_size((n, c, 9, 8), r, padding)
    tiles = np.prod(tile_counts(*out, 9 - r))
    monkeypatch.setattr(fast, "WINOGRAD_CHUNK_BYTES",
                        images_a_chunk * 64 * o * tiles * np.dtype(dtype).itemsize)
    assert [len(range(n)[s]) for s in fast._winograd_chunks(n, tiles, o, dtype)][0] == images_a_chunk
    rng = np.random.default_rng(images_a_chunk)
    arrays = [rng.standard_normal(s).astype(dtype) for s in ((n, c, 9, 8), (o, c, r, r), (o,))]
    for needs in [(True, True, True), (True, False, False), (False, True, True), (False, False, True)]:
        with backend.use(backend_name):
            fused, plain = winograd_and_plain(arrays, padding, needs=needs)
        assert_same_conv(fused, plain, TOLERANCE[dtype])


# --- 3. the kernels: a loop reference, C = NumPy, adjoints -------------------------------------------
# (n, c, h, w, r, padding): tile counts 1, 8, 27, 10, 70, 17 and 8 (float32 kernels take 16 tiles
# a block, float64 8: whole blocks, a partial last one, blocks across images), a tile wholly in the
# padding, padding wider than the kernel, bottom and right padding the tiles overrun
KERNEL_CASES = [(1, 1, 5, 5, 5, NO_PADDING),
                (2, 3, 11, 9, 3, ((1, 2), (0, 1))),
                (3, 2, 13, 10, 4, ((2, 0), (1, 3))),
                (5, 4, 7, 9, 2, NO_PADDING),
                (1, 3, 20, 14, 7, ((0, 6), (6, 0))),
                (17, 2, 6, 6, 6, ((1, 1), (1, 1))),
                (2, 2, 4, 4, 3, ((9, 0), (0, 9)))]


def case_id(case):
    n, c, h, w, r, padding = case
    return f"{n}x{c}x{h}x{w}-r{r}-p{padding}".replace(" ", "")


def kernel_inputs(case, dtype, seed=0):
    """x, the matrices, m, and random dV (for x's tiles), M and dL/dy (for the output's tiles)."""
    n, c, h, w, r, padding = case
    rng = np.random.default_rng(seed)
    AT, _, BT = fast.winograd_matrices(r, dtype)
    m = 9 - r
    oh, ow = output_size((n, c, h, w), r, padding)
    th, tw = tile_counts(oh, ow, m)
    o = c + 1
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    dv = rng.standard_normal((TILE * TILE, c, n * th * tw)).astype(dtype)
    M = rng.standard_normal((TILE * TILE, o, n * th * tw)).astype(dtype)
    grad = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    return dict(x=x, AT=AT, BT=BT, m=m, r=r, padding=padding, dv=dv, M=M, grad=grad, bias=bias,
                y_shape=(n, o, oh, ow))


def all_four(k, with_bias=True):
    """The four kernels on the inputs of ``kernel_inputs``, on the backend in use."""
    kernel = (k["r"], k["r"])
    dm, sums = backend.winograd_output_backward(k["grad"], k["AT"])
    return dict(
        input=backend.winograd_input(k["x"], k["BT"], kernel, k["padding"]),
        input_backward=backend.winograd_input_backward(k["dv"], k["BT"], k["x"].shape, kernel,
                                                       k["padding"]),
        output=backend.winograd_output(k["M"], k["AT"], k["y_shape"], k["bias"] if with_bias else None),
        output_backward=dm, sums=sums)


def references(k, with_bias=True):
    wide = fast.winograd_matrices(k["r"], np.float64)   # the exact math, in float64
    AT, BT = wide[0], wide[2]
    return dict(
        input=reference_input(k["x"], BT, k["m"], k["r"], k["padding"]),
        input_backward=reference_input_backward(k["dv"], BT, k["m"], k["x"].shape, k["r"], k["padding"]),
        output=reference_output(k["M"], AT, k["y_shape"], k["bias"].astype(np.float64) if with_bias else None),
        output_backward=reference_output_backward(k["grad"].astype(np.float64), AT),
        sums=k["grad"].astype(np.float64).sum((0, 2, 3)))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_each_kernel_equals_its_loop_reference(backend_name, dtype, case):
    k = kernel_inputs(case, dtype)
    for with_bias in (True, False):
        with backend.use(backend_name):
            got = all_four(k, with_bias)
        for name, expected in references(k, with_bias).items():
            assert got[name].dtype == dtype, name
            assert got[name].flags.c_contiguous, name
            assert_close(got[name], expected, 1e-13 if dtype == np.float64 else 1e-5)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_the_c_kernels_equal_numpys(dtype, case):
    k = kernel_inputs(case, dtype, seed=1)
    for with_bias in (True, False):
        with backend.use("c"):
            ours = all_four(k, with_bias)
            ours_no_sums = backend.winograd_output_backward(k["grad"], k["AT"], need_sums=False)
        with backend.use("numpy"):
            theirs = all_four(k, with_bias)
            theirs_no_sums = backend.winograd_output_backward(k["grad"], k["AT"], need_sums=False)
        for name in ours:
            assert ours[name].shape == theirs[name].shape and ours[name].dtype == theirs[name].dtype
            assert_close(ours[name], theirs[name], 1e-13 if dtype == np.float64 else 1e-5)
        assert ours_no_sums[1] is None and theirs_no_sums[1] is None
        assert np.array_equal(ours_no_sums[0], ours["output_backward"])
        assert np.array_equal(theirs_no_sums[0], theirs["output_backward"])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_bias_gradient_of_more_channels_than_one_pass_takes(backend_name):
    """csrc/winograd_impl.h sums 256 channels a pass (on the stack): 600 channels, split between
    two threads or not, each summed once."""
    rng = np.random.default_rng(5)
    AT = fast.winograd_matrices(5, np.float64)[0]
    grad = rng.standard_normal((2, 600, 5, 6))
    with backend.use(backend_name):
        dm, sums = backend.winograd_output_backward(grad, AT)
        _, added = backend.winograd_output_backward(grad, AT, sums=sums.copy())
    assert_close(sums, grad.sum((0, 2, 3)), 1e-13)
    assert_close(added, 2 * grad.sum((0, 2, 3)), 1e-13)


@needs_c
@pytest.mark.parametrize("isa", [3, 2, 1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_instruction_set_flavour_equals_the_loops(isa, dtype):
    """The kernels are compiled once per instruction set (AVX-512, AVX2, SSE2): each flavour this
    CPU can run against the loop references, on every case."""
    from tinygrad_edu.backend import c_kernels
    try:
        used = c_kernels.lib.tge_set_isa(isa)
        for case in KERNEL_CASES:
            k = kernel_inputs(case, dtype, seed=isa)
            with backend.use("c"):
                got = all_four(k)
            for name, expected in references(k).items():
                assert_close(got[name], expected, 1e-13 if dtype == np.float64 else 1e-5)
        assert used <= isa
    finally:
        c_kernels.lib.tge_set_isa(-1)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_the_fused_relu_of_the_c_kernels_is_relu_and_relu_backward(dtype, case):
    """What tinygrad_edu.jit asks of the C kernels when it fuses a ReLU (their relu flag and
    relu_y mask, which no Python call sets): the output side's y is max(y, 0) of the unfused
    one, and the backward's masked dM is that of dL/dy zeroed where the ReLU's output is <= 0."""
    from tinygrad_edu.backend import c_kernels
    ffi, lib = c_kernels.ffi, c_kernels.lib
    k = kernel_inputs(case, dtype, seed=7)
    kernels = c_kernels._KERNELS[np.dtype(dtype)]
    with backend.use("c"):
        y = backend.winograd_output(k["M"], k["AT"], k["y_shape"], k["bias"])
        relu_y = np.maximum(y, 0)
        relu_y[..., 0] = 0   # exact zeros: masked too (relu_backward's rule is y <= 0)
        dm_masked, sums_masked = backend.winograd_output_backward(np.where(relu_y > 0, k["grad"], 0), k["AT"])
    fused = np.empty(k["y_shape"], dtype)
    arr = kernels.array
    window = c_kernels._window(c_kernels._output_window(k["y_shape"]))
    kernels.winograd_output(window, ffi.from_buffer(arr, k["AT"]), len(k["AT"]), ffi.from_buffer(arr, k["M"]),
                            ffi.from_buffer(arr, k["bias"]), 1, ffi.from_buffer(arr, fused), 1)
    assert np.array_equal(fused, np.maximum(y, 0))
    dm = np.empty(dm_masked.shape, dtype)
    sums = np.empty(k["y_shape"][1], dtype)
    kernels.winograd_output_backward(window, ffi.from_buffer(arr, k["AT"]), len(k["AT"]),
                                     ffi.from_buffer(arr, k["grad"]), ffi.from_buffer(arr, relu_y),
                                     ffi.from_buffer(arr, dm), ffi.from_buffer(arr, sums), 0, 1)
    assert np.array_equal(dm, dm_masked) and np.array_equal(sums, sums_masked)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_each_backward_kernel_is_its_forwards_adjoint(backend_name, case):
    """<V(x), dV> = <x, V^T(dV)> and <Y(M), G> = <M, Y^T(G)>: dot-product tests in float64."""
    k = kernel_inputs(case, np.float64, seed=2)
    kernel = (k["r"], k["r"])
    with backend.use(backend_name):
        v = backend.winograd_input(k["x"], k["BT"], kernel, k["padding"])
        dx = backend.winograd_input_backward(k["dv"], k["BT"], k["x"].shape, kernel, k["padding"])
        y = backend.winograd_output(k["M"], k["AT"], k["y_shape"])
        dm, _ = backend.winograd_output_backward(k["grad"], k["AT"], need_sums=False)
    # each side's rounding error is a few ulps of the sum of the magnitudes of its terms
    AT, BT = abs(k["AT"]), abs(k["BT"])
    for left, right, magnitudes in [
            (np.vdot(v, k["dv"]), np.vdot(k["x"], dx),
             np.vdot(reference_input(abs(k["x"]), BT, k["m"], k["r"], k["padding"]), abs(k["dv"]))),
            (np.vdot(y, k["grad"]), np.vdot(k["M"], dm),
             np.vdot(reference_output(abs(k["M"]), AT, k["y_shape"]), abs(k["grad"])))]:
        assert abs(left - right) <= 1e-13 * magnitudes


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_bias_is_added_once_and_the_sums_are_the_bias_gradient(backend_name, dtype):
    k = kernel_inputs(KERNEL_CASES[2], dtype, seed=3)
    with backend.use(backend_name):
        with_bias = backend.winograd_output(k["M"], k["AT"], k["y_shape"], k["bias"])
        without = backend.winograd_output(k["M"], k["AT"], k["y_shape"], None)
        dm, sums = backend.winograd_output_backward(k["grad"], k["AT"], need_sums=True)
    assert np.array_equal(with_bias, without + k["bias"][:, None, None])
    assert sums.shape == (k["y_shape"][1],) and sums.dtype == dtype
    assert_close(sums, k["grad"].astype(np.float64).sum((0, 2, 3)), 1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_kernels_write_into_out_and_add_to_sums(backend_name, dtype):
    """``out=`` takes the result (whatever it held before, even NaN), ``sums=`` adds the totals
    to what it holds (a batch taken a few images at a time)."""
    k = kernel_inputs(KERNEL_CASES[2], dtype, seed=13)
    kernel = (k["r"], k["r"])
    with backend.use(backend_name):
        expected = all_four(k)
        dx = np.full(k["x"].shape, np.nan, dtype)
        assert backend.winograd_input_backward(k["dv"], k["BT"], k["x"].shape, kernel,
                                               k["padding"], out=dx) is dx
        y = np.full(k["y_shape"], np.nan, dtype)
        assert backend.winograd_output(k["M"], k["AT"], k["y_shape"], k["bias"], out=y) is y
        dm = np.full(expected["output_backward"].shape, np.nan, dtype)
        start = np.arange(k["y_shape"][1], dtype=dtype)
        sums = start.copy()
        got_dm, got_sums = backend.winograd_output_backward(k["grad"], k["AT"], out=dm, sums=sums)
        assert got_dm is dm and got_sums is sums
        first, rest = k["grad"][:1], k["grad"][1:]     # a batch in two parts: their sums added up
        _, total = backend.winograd_output_backward(first, k["AT"])
        assert backend.winograd_output_backward(rest, k["AT"], sums=total)[1] is total
    assert np.array_equal(dx, expected["input_backward"])
    assert np.array_equal(y, expected["output"])
    assert np.array_equal(dm, expected["output_backward"])
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(sums, start + expected["sums"], rtol)
    assert_close(total, expected["sums"], rtol)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_kernels_refuse_a_bad_out_by_name(backend_name):
    k = kernel_inputs(KERNEL_CASES[2], np.float64, seed=14)
    kernel, AT, BT = (k["r"], k["r"]), k["AT"], k["BT"]
    dm_shape = k["M"].shape[:1] + (k["grad"].shape[1],) + k["M"].shape[2:]
    read_only = np.empty(k["y_shape"])
    read_only.flags.writeable = False
    bad = [
        (lambda: backend.winograd_input_backward(k["dv"], BT, k["x"].shape, kernel, k["padding"],
                                                 out=np.empty(k["x"].shape[:3] + (k["x"].shape[3] + 1,))),
         ValueError, "out must be"),
        (lambda: backend.winograd_input_backward(k["dv"], BT, k["x"].shape, kernel, k["padding"],
                                                 out=np.empty(k["x"].shape, np.float32)), ValueError, "out must be"),
        (lambda: backend.winograd_input_backward(k["dv"], BT, k["x"].shape, kernel, k["padding"],
                                                 out=np.empty(k["x"].shape[::-1]).T), ValueError, "C-contiguous"),
        (lambda: backend.winograd_output(k["M"], AT, k["y_shape"], out=np.empty(k["y_shape"][:3] + (1,))),
         ValueError, "out must be"),
        (lambda: backend.winograd_output(k["M"], AT, k["y_shape"], out=read_only), ValueError, "out is read-only"),
        (lambda: backend.winograd_output(k["M"], AT, k["y_shape"], out=k["M"].ravel()[:np.prod(k["y_shape"])]
                                         .reshape(k["y_shape"])), ValueError, "out overlaps M"),
        (lambda: backend.winograd_output(k["M"], AT, k["y_shape"], out=list(np.zeros(k["y_shape"]))),
         TypeError, "out must be a numpy.ndarray"),
        (lambda: backend.winograd_output_backward(k["grad"], AT, out=np.empty(dm_shape[:2] + (1,))),
         ValueError, "out must be"),
        (lambda: backend.winograd_output_backward(k["grad"], AT, sums=np.zeros(dm_shape[1] + 1)),
         ValueError, "sums must be"),
        (lambda: backend.winograd_output_backward(k["grad"], AT, sums=np.zeros(dm_shape[1], np.float32)),
         ValueError, "sums must be"),
        (lambda: backend.winograd_output_backward(k["grad"], AT, sums=k["grad"].ravel()[:dm_shape[1]]),
         ValueError, "sums overlaps grad"),
    ]
    with backend.use(backend_name):
        for call, error, message in bad:
            with pytest.raises(error, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", [KERNEL_CASES[3], KERNEL_CASES[5]], ids=case_id)
def test_every_kernel_returns_a_new_c_contiguous_array(backend_name, case):
    """As batch_major and channel_major do (tests/test_backend.py): what the next op reads."""
    k = kernel_inputs(case, np.float32)
    inputs = [k[name] for name in ("x", "AT", "BT", "dv", "M", "grad", "bias")]
    with backend.use(backend_name):
        for with_bias in (False, True):
            got = all_four(k, with_bias)
            for name in ("input", "input_backward", "output", "output_backward", "sums"):
                assert got[name].flags.c_contiguous, (name, with_bias)
                assert not any(np.may_share_memory(got[name], a) for a in inputs), (name, with_bias)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_kernels_read_inputs_of_every_layout(backend_name):
    """Transposed, sliced and Fortran-ordered inputs give what their contiguous copies give."""
    k = kernel_inputs(KERNEL_CASES[2], np.float64, seed=4)
    kernel = (k["r"], k["r"])

    def strange(a):   # the same values, not C-contiguous
        return [np.asfortranarray(a), np.ascontiguousarray(a.swapaxes(0, -1)).swapaxes(0, -1),
                np.repeat(a, 2, axis=-1)[..., ::2]]
    with backend.use(backend_name):
        expected = all_four(k)
        for x in strange(k["x"]):
            assert np.array_equal(backend.winograd_input(x, k["BT"], kernel, k["padding"]),
                                  expected["input"])
        for dv in strange(k["dv"]):
            assert np.array_equal(backend.winograd_input_backward(dv, k["BT"], k["x"].shape,
                                                                  kernel, k["padding"]),
                                  expected["input_backward"])
        for M, bias in zip(strange(k["M"]), strange(k["bias"])):
            assert np.array_equal(backend.winograd_output(M, k["AT"], k["y_shape"], bias), expected["output"])
        for grad in strange(k["grad"]):
            dm, sums = backend.winograd_output_backward(grad, k["AT"])
            assert np.array_equal(dm, expected["output_backward"])
            assert_close(sums, expected["sums"], 1e-14)
        for BT, AT in zip(strange(k["BT"]), strange(k["AT"])):
            assert np.array_equal(backend.winograd_input(k["x"], BT, kernel, k["padding"]),
                                  expected["input"])
            assert np.array_equal(backend.winograd_output(k["M"], AT, k["y_shape"], k["bias"]),
                                  expected["output"])


@pytest.fixture
def c_threads(monkeypatch):
    """Set the C kernels' thread count, every kernel split from the smallest size."""
    if "c" not in BACKENDS:
        pytest.skip("C kernels not built")
    monkeypatch.setattr(backend.c_kernels, "PARALLEL_MIN_ELEMENTS", 0)
    with backend.use("c"):
        yield lambda n: monkeypatch.setattr(backend.c_kernels, "THREADS", n)


@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_between_threads_gives_the_one_thread_result(c_threads, threads, dtype):
    """Each thread owns whole channels: the same sums in the same order, bit for bit."""
    k = kernel_inputs((3, 5, 13, 10, 4, ((2, 0), (1, 3))), dtype, seed=threads)
    results = {}
    for count in (1, threads):
        c_threads(count)
        results[count] = all_four(k)
    for name in results[1]:
        assert np.array_equal(results[1][name], results[threads][name]), name


# --- 4. batched_gemm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_batched_gemm_is_a_stack_of_products(backend_name, dtype, trans_a, trans_b):
    rng = np.random.default_rng(5)
    for count, m, k, n in [(64, 5, 7, 3), (1, 1, 1, 1), (3, 17, 1, 9), (64, 20, 64, 33)]:
        a = rng.standard_normal((count, k, m) if trans_a else (count, m, k)).astype(dtype)
        b = rng.standard_normal((count, n, k) if trans_b else (count, k, n)).astype(dtype)
        expected = np.matmul(a.astype(np.float64).swapaxes(1, 2) if trans_a else a.astype(np.float64),
                             b.astype(np.float64).swapaxes(1, 2) if trans_b else b.astype(np.float64))
        with backend.use(backend_name):
            new = backend.batched_gemm(a, b, trans_a, trans_b)
            out = np.full((count, m, n), np.nan, dtype)
            returned = backend.batched_gemm(a, b, trans_a=trans_a, trans_b=trans_b, out=out)
            views = backend.batched_gemm(np.asfortranarray(a), np.repeat(b, 2, axis=0)[::2], trans_a, trans_b)
        assert returned is out and new.shape == (count, m, n) and new.dtype == dtype
        for result in (new, out, views):
            assert_close(result, expected, 1e-13 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batched_gemm_accumulates_into_out(backend_name, dtype):
    rng = np.random.default_rng(12)
    a, b = (rng.standard_normal(s).astype(dtype) for s in ((64, 6, 5), (64, 7, 5)))
    start = rng.standard_normal((64, 6, 7)).astype(dtype)
    out = start.copy()
    with backend.use(backend_name):
        assert backend.batched_gemm(a, b, trans_b=True, out=out, accumulate=True) is out
        overwritten = backend.batched_gemm(a, b, trans_b=True, out=start.copy(), accumulate=False)
    product = np.matmul(a.astype(np.float64), b.astype(np.float64).swapaxes(1, 2))
    assert_close(out, start + product, TOLERANCE[dtype] / 10)
    assert_close(overwritten, product, TOLERANCE[dtype] / 10)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_batched_gemm_refuses_bad_arguments_by_name(backend_name):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 5, 2))
    good_out = np.empty((4, 3, 2))
    bad = [
        (dict(a=a[:, :, :4], b=b), ValueError, "inner dimensions must agree"),
        (dict(a=a, b=b[:3]), ValueError, "counts and inner dimensions"),
        (dict(a=a, b=b, trans_b=True), ValueError, "inner dimensions"),
        (dict(a=a, b=b.astype(np.float32)), TypeError, "same dtype"),
        (dict(a=a[0], b=b), ValueError, "a must be 3-D"),
        (dict(a=a, b=b.astype(np.int64)), TypeError, "b must be float32 or float64"),
        (dict(a=a.tolist(), b=b), TypeError, "a must be a numpy.ndarray"),
        (dict(a=a, b=b, trans_a=1), TypeError, "trans_a must be a bool"),
        (dict(a=a, b=b, trans_b="no"), TypeError, "trans_b must be a bool"),
        (dict(a=a, b=b, out=np.empty((4, 2, 3))), ValueError, "out must be a C-contiguous float64 array of shape"),
        (dict(a=a, b=b, out=np.empty((4, 3, 2), np.float32)), ValueError, "out must be a C-contiguous float64"),
        (dict(a=a, b=b, out=np.empty((4, 3, 4))[:, :, ::2]), ValueError, "out must be a C-contiguous"),
        (dict(a=a, b=b, out=np.empty((4, 2, 3)).swapaxes(1, 2)), ValueError, "out must be a C-contiguous"),
        (dict(a=a, b=b, out=np.empty((4, 3, 2), np.int64)), (TypeError, ValueError), "out must be"),
        (dict(a=a, b=b, out=good_out[0]), ValueError, "out must be"),
        (dict(a=a, b=b, accumulate=True), ValueError, "accumulate=True needs an out"),
        (dict(a=a, b=b, out=np.zeros((4, 3, 2)), accumulate=1), TypeError, "accumulate must be a bool"),
    ]
    overlapping = np.zeros((4, 3, 3))
    bad.append((dict(a=overlapping, b=np.eye(3)[None].repeat(4, 0), out=overlapping), ValueError,
                "out overlaps a"))
    b_and_out = np.zeros((4, 5, 2))
    bad.append((dict(a=rng.standard_normal((4, 5, 5)), b=b_and_out, out=b_and_out), ValueError,
                "out overlaps (a or )?b"))
    read_only = np.empty((4, 3, 2))
    read_only.flags.writeable = False
    bad.append((dict(a=a, b=b, out=read_only), ValueError, "out is read-only"))
    with backend.use(backend_name):
        for kwargs, error, message in bad:
            untouched = None if kwargs.get("out") is None else kwargs["out"].copy()
            with pytest.raises(error, match=message):
                backend.batched_gemm(**kwargs)
            if untouched is not None:
                assert np.array_equal(kwargs["out"], untouched, equal_nan=True)
        assert backend.batched_gemm(a, b, out=good_out) is good_out     # the good call still works


# --- 5. the winograd kernels' argument checks -------------------------------------------------------
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_winograd_kernels_refuse_bad_arguments_by_name(backend_name):
    rng = np.random.default_rng(7)
    AT, _, BT = fast.winograd_matrices(3, np.float64)                   # m = 6
    x = rng.standard_normal((2, 3, 9, 8))                               # -> 7 x 6 outputs, 2 x 1 tiles
    dv = rng.standard_normal((64, 3, 4))
    M, grad = rng.standard_normal((64, 5, 4)), rng.standard_normal((2, 5, 7, 6))
    y_shape = (2, 5, 7, 6)
    k3 = (3, 3)
    bad = [
        # winograd_input
        (lambda: backend.winograd_input(x, BT[:7], k3), ValueError, r"BT must be float64 of shape \(8, 8\)"),
        (lambda: backend.winograd_input(x, BT[:, :7], k3), ValueError, "BT must be"),
        (lambda: backend.winograd_input(x, BT.astype(np.float32), k3), ValueError, "BT must be float64"),
        (lambda: backend.winograd_input(x, BT[None], k3), ValueError, "BT must be 2-D"),
        (lambda: backend.winograd_input(x, BT.tolist(), k3), TypeError, "BT must be a numpy.ndarray"),
        (lambda: backend.winograd_input(x, BT, (3, 4)), ValueError, r"square kernel of 2 to 7, not \(3, 4\)"),
        (lambda: backend.winograd_input(x, BT, (8, 8)), ValueError, r"square kernel of 2 to 7, not \(8, 8\)"),
        (lambda: backend.winograd_input(x, BT, (1, 1)), ValueError, r"square kernel of 2 to 7, not \(1, 1\)"),
        (lambda: backend.winograd_input(x, BT, 3), ValueError, "kernel must be a pair"),
        (lambda: backend.winograd_input(x, BT, k3, ((1, 1),)), ValueError, "padding must be"),
        (lambda: backend.winograd_input(x, BT, k3, ((-1, 0), (0, 0))), ValueError, r"padding\[0\]"),
        (lambda: backend.winograd_input(x[:, :, :2], BT, k3), ValueError, "does not fit"),
        (lambda: backend.winograd_input(x[0], BT, k3), ValueError, "x must be 4-D"),
        (lambda: backend.winograd_input(x[:0], BT, k3), ValueError, "x must not be empty"),
        (lambda: backend.winograd_input(x.astype(np.int32), BT, k3), TypeError, "x must be float32 or float64"),
        # winograd_input_backward
        (lambda: backend.winograd_input_backward(dv[:, :, :3], BT, x.shape, k3), ValueError,
         r"dv must have shape \(64, 3, 4\)"),
        (lambda: backend.winograd_input_backward(dv[:, :2], BT, x.shape, k3), ValueError, "dv must have shape"),
        (lambda: backend.winograd_input_backward(dv[:63], BT, x.shape, k3), ValueError, "dv must have shape"),
        (lambda: backend.winograd_input_backward(dv[0], BT, x.shape, k3), ValueError, "dv must be 3-D"),
        (lambda: backend.winograd_input_backward(dv, BT[:, :7], x.shape, k3), ValueError, "BT must be"),
        (lambda: backend.winograd_input_backward(dv.astype(np.float32), BT, x.shape, k3), ValueError,
         "BT must be float32"),
        (lambda: backend.winograd_input_backward(dv, BT, list(x.shape), k3), ValueError, "x_shape must be"),
        (lambda: backend.winograd_input_backward(dv, BT, (2, 3, 9), k3), ValueError, "x_shape must be"),
        (lambda: backend.winograd_input_backward(dv, BT, (2, 3, 0, 8), k3), ValueError, "x_shape must be"),
        (lambda: backend.winograd_input_backward(dv, BT, x.shape, (3, 2)), ValueError, r"not \(3, 2\)"),
        # winograd_output
        (lambda: backend.winograd_output(M, AT[:, :7], y_shape), ValueError, "AT must be float64 of shape"),
        (lambda: backend.winograd_output(M, np.eye(8), y_shape), ValueError, "AT must be"),
        (lambda: backend.winograd_output(M, AT[:1], y_shape), ValueError, "AT must be"),
        (lambda: backend.winograd_output(M, AT.astype(np.float32), y_shape), ValueError, "AT must be float64"),
        (lambda: backend.winograd_output(M[:, :4], AT, y_shape), ValueError, r"M \(the tiles. products\) must have shape \(64, 5, 4\)"),
        (lambda: backend.winograd_output(M, AT, (2, 5, 13, 6)), ValueError, r"M \(the tiles. products\) must have shape \(64, 5, 6\)"),
        (lambda: backend.winograd_output(M[0], AT, y_shape), ValueError, "M must be 3-D"),
        (lambda: backend.winograd_output(M, AT, [2, 5, 7, 6]), ValueError, "y_shape must be"),
        (lambda: backend.winograd_output(M, AT, (2, 5, 7)), ValueError, "y_shape must be"),
        (lambda: backend.winograd_output(M, AT, (2, 5, 7, -6)), ValueError, "y_shape must be"),
        (lambda: backend.winograd_output(M, AT, y_shape, np.zeros(4)), ValueError,
         r"bias must be float64 of shape \(5,\)"),
        (lambda: backend.winograd_output(M, AT, y_shape, np.zeros(5, np.float32)), ValueError, "bias must be float64"),
        (lambda: backend.winograd_output(M, AT, y_shape, np.zeros((5, 1))), ValueError, "bias must be 1-D"),
        (lambda: backend.winograd_output(M, AT, y_shape, [0.0] * 5), TypeError, "bias must be a numpy.ndarray"),
        # winograd_output_backward
        (lambda: backend.winograd_output_backward(grad, AT[:, :7]), ValueError, "AT must be"),
        (lambda: backend.winograd_output_backward(grad, BT), ValueError, "AT must be"),
        (lambda: backend.winograd_output_backward(grad, AT.astype(np.float32)), ValueError, "AT must be float64"),
        (lambda: backend.winograd_output_backward(grad[0], AT), ValueError, "grad must be 4-D"),
        (lambda: backend.winograd_output_backward(grad.astype(np.int64), AT), TypeError, "grad must be float32"),
        (lambda: backend.winograd_output_backward(grad, AT, need_sums=1), TypeError, "need_sums must be a bool"),
    ]
    with backend.use(backend_name):
        for call, error, message in bad:
            with pytest.raises(error, match=message):
                call()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("kernel", [(1, 1), (8, 8), (11, 11), (4, 5)])
def test_the_input_kernels_take_a_square_kernel_of_2_to_7(backend_name, kernel):
    """m = 9 - r comes from the kernel: a 1 x 1 kernel would give m = 8, an 11 x 11 one m = -2,
    for which Python's tile count (floor division) and C's (truncating) differ (an earlier
    version, which took m beside the kernel, let that through: V was allocated for no tiles and
    C wrote one per image past its end)."""
    x = np.ones((1, 1, 12, 12))
    _, _, BT = fast.winograd_matrices(5, np.float64)
    with backend.use(backend_name):
        with pytest.raises(ValueError, match="square kernel of 2 to 7"):
            backend.winograd_input(x, BT, kernel)
        with pytest.raises(ValueError, match="square kernel of 2 to 7"):
            backend.winograd_input_backward(np.zeros((64, 1, 1)), BT, x.shape, kernel)
        v = backend.winograd_input(x, BT, (np.int64(5), 5))     # a NumPy int is an int
    assert v.shape == (64, 1, 4)


# --- 6. which convolutions go to Winograd ------------------------------------------------------------
@pytest.mark.parametrize("x_shape, w_shape, options, expected", [
    ((4, 20, 12, 12), (64, 20, 5, 5), {}, True),                          # 4 x 2 x 2 = 16 tiles
    ((3, 20, 12, 12), (64, 20, 5, 5), {}, False),                         # 12 tiles
    ((1, 20, 12, 12), (64, 20, 5, 5), {}, False),                         # 4 tiles
    ((1, 20, 12, 12), (64, 20, 5, 5), dict(padding=((2, 2), (2, 2))), False),   # 9 tiles
    ((2, 20, 12, 12), (64, 20, 5, 5), dict(padding=((2, 2), (2, 2))), True),    # 18 tiles
    ((4, 8, 12, 12), (16, 8, 5, 5), {}, True),                            # 8 channels
    ((4, 7, 12, 12), (16, 7, 5, 5), {}, False),                           # 7
    ((4, 1, 28, 28), (20, 1, 5, 5), {}, False),                           # the lecture's conv1
    ((4, 20, 12, 12), (64, 20, 5, 3), {}, False),                         # not square
    ((4, 20, 12, 12), (64, 20, 1, 1), {}, False),                         # r = 1
    ((4, 20, 12, 12), (64, 20, 8, 8), {}, False),                         # r = 8
    ((4, 20, 12, 12), (64, 20, 7, 7), {}, True),                          # r = 7: 4 x 3 x 3
    ((16, 8, 3, 3), (8, 8, 2, 2), {}, True),                              # r = 2: 16 x 1 tile
    ((4, 20, 12, 12), (64, 20, 5, 5), dict(stride=(2, 2)), False),
    ((4, 20, 12, 12), (64, 20, 5, 5), dict(stride=(1, 2)), False),
    ((4, 20, 12, 12), (64, 20, 5, 5), dict(dilation=(2, 2)), False),
    ((4, 20, 12, 12), (64, 10, 5, 5), dict(groups=2), False),
])
def test_winograd_pays_where_it_is_measured_faster(x_shape, w_shape, options, expected):
    args = dict(stride=(1, 1), padding=NO_PADDING, dilation=(1, 1), groups=1) | options
    assert fast.winograd_pays(x_shape, w_shape, **args) is expected


@pytest.fixture
def c_backend():
    if "c" not in BACKENDS:
        pytest.skip("C kernels not built")
    with backend.use("c"):
        yield


def conv_op(y):
    """The op that made a convolution's output (under the squeeze of an unbatched input's)."""
    op = y.grad_fn
    while type(op) is ops.Reshape:
        op = op.parents[0].grad_fn
    return op


def images(rng, *shape, dtype=np.float32):
    return tg.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


@pytest.mark.parametrize("layer, x_shape, winograd", [
    ((20, 64, 5), (4, 20, 12, 12), True),
    ((20, 64, 5, 1, 2), (2, 20, 12, 12), True),                # padding 2: 2 x 3 x 3 tiles
    ((20, 64, 5, 1, "same"), (20, 24, 24), True),              # unbatched: 5 x 5 tiles
    ((8, 16, 3), (16, 8, 6, 6), True),
    ((1, 20, 5), (4, 1, 12, 12), False),                       # one input channel
    ((20, 64, 5), (1, 20, 12, 12), False),                     # 4 tiles
    ((20, 64, 5), (3, 20, 12, 12), False),                     # 12 tiles
    ((20, 64, 5, 2), (4, 20, 12, 12), False),                  # stride 2
    ((20, 64, 5, 1, 0, 2), (4, 20, 12, 12), False),            # dilation 2
    ((20, 64, 5, 1, 0, 1, 2), (4, 20, 12, 12), False),         # 2 groups
    ((20, 64, (5, 3)), (4, 20, 12, 12), False),                # not square
])
def test_nn_conv2d_goes_to_winograd_only_where_it_pays(c_backend, layer, x_shape, winograd):
    """The op that made the output, and the same output and gradients as the plain path's."""
    rng = np.random.default_rng(8)
    tg.manual_seed(0)
    conv = nn.Conv2d(*layer)
    x = images(rng, *x_shape)
    y = conv(x)
    assert fast.enabled()
    assert type(conv_op(y)) is (fast.WinogradConv2d if winograd else fast.Conv2d)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(grad)
    got = [y.data] + [t.grad.data for t in (x, conv.weight, conv.bias)]
    for t in (x, conv.weight, conv.bias):
        t.grad = None
    with tg.set_fast(False):
        y_plain = conv(x)
        assert type(conv_op(y_plain)) is ops.Conv2d
        y_plain.backward(grad)
    expected = [y_plain.data] + [t.grad.data for t in (x, conv.weight, conv.bias)]
    for g, e in zip(got, expected):
        assert_close(g, e, TOLERANCE[np.float32])


def test_winograd_through_the_functional_form_in_float64_and_without_bias(c_backend):
    rng = np.random.default_rng(9)
    x, w = images(rng, 4, 8, 10, 9, dtype=np.float64), images(rng, 6, 8, 3, 3, dtype=np.float64)
    y = F.conv2d(x, w, padding=(1, 2))
    assert type(y.grad_fn) is fast.WinogradConv2d
    grad = rng.standard_normal(y.shape)
    y.backward(grad)
    got = [y.data, x.grad.data, w.grad.data]
    x.grad = w.grad = None
    with tg.set_fast(False):
        y_plain = F.conv2d(x, w, padding=(1, 2))
        y_plain.backward(grad)
    for g, e in zip(got, [y_plain.data, x.grad.data, w.grad.data]):
        assert_close(g, e, TOLERANCE[np.float64])


def test_nothing_goes_to_winograd_on_the_numpy_backend():
    rng = np.random.default_rng(10)
    with backend.use("numpy"):
        assert not fast.enabled()
        y = nn.Conv2d(20, 64, 5)(images(rng, 4, 20, 12, 12))
        assert type(y.grad_fn) is ops.Conv2d


class TwoConvs(nn.Module):
    """Two convolutions Winograd takes (8 channels, 8 x 8 images, 4 tiles an image), each with a
    ReLU the jit fuses into Winograd's output kernels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(1))


def test_a_jitted_step_through_winograd_replays_as_eager(c_backend):
    """Bit for bit, with the ReLUs fused into winograd_output and winograd_output_backward."""
    rng = np.random.default_rng(11)
    models = []
    for _ in range(2):
        tg.manual_seed(0)
        model = TwoConvs()
        models.append((model, optim.SGD(model.parameters(), lr=0.05, momentum=0.5)))

    def step_of(model, opt):
        def step(x, y):
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step
    eager, jitted = step_of(*models[0]), tg.jit(step_of(*models[1]))
    x = tg.tensor(rng.standard_normal((4, 8, 8, 8)).astype(np.float32))
    assert type(models[0][0].conv1(x).grad_fn) is fast.WinogradConv2d
    for _ in range(5):
        x = tg.tensor(rng.standard_normal((4, 8, 8, 8)).astype(np.float32))
        y = tg.tensor(rng.integers(0, 10, 4))
        assert eager(x, y).item() == jitted(x, y).item()
    for p, q in zip(models[0][0].parameters(), models[1][0].parameters()):
        assert np.array_equal(p.data, q.data) and np.array_equal(p.grad.data, q.grad.data)
    program = str(jitted)
    assert "winograd_output" in program and "winograd_input_backward" in program
    assert "then relu" in program and "relu_backward first" in program
    assert "float32 relu " not in program and "float32 relu_backward " not in program


# --- 7. against PyTorch ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("n, c, o, hw, r, padding, bias", [
    (2, 3, 4, (9, 11), 3, ((1, 0), (2, 1)), True),
    (1, 5, 2, (12, 7), 5, NO_PADDING, False),
    (3, 2, 3, (6, 6), 7, ((3, 3), (0, 6)), True),
    (4, 8, 16, (8, 8), 2, ((0, 1), (1, 0)), True),
])
def test_winograd_conv2d_matches_torch(backend_name, n, c, o, hw, r, padding, bias):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(r)
    arrays = [rng.standard_normal(s) for s in ((n, c, *hw), (o, c, r, r)) + (((o,),) if bias else ())]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    (top, bottom), (left, right) = padding
    y_t = torch.nn.functional.conv2d(torch.nn.functional.pad(theirs[0], (left, right, top, bottom)),
                                     *theirs[1:])
    grad = rng.standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(grad))
    with backend.use(backend_name):
        y, grads = conv_value_and_grads(fast.WinogradConv2d, arrays, grad, padding=padding)
    assert_close(y, y_t.detach().numpy(), TOLERANCE[np.float64])
    for ours, t in zip(grads, theirs):
        assert_close(ours, t.grad.numpy(), TOLERANCE[np.float64])
