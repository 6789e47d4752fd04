"""The benchmark suite (pytest-benchmark). In the normal test run each benchmark executes once
(``--benchmark-disable``) as a smoke test, correctness check included. To measure for real:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 TINYGRAD_EDU_NUM_THREADS=1 python -m pytest \\
        tests/test_benchmarks.py --benchmark-enable --benchmark-warmup=on --benchmark-min-rounds=30 \\
        --benchmark-json=bench.json -m "slow or not slow"
    python examples/benchmark_report.py bench.json      # Markdown table and bar chart

Protocol: the same thread count for NumPy/OpenBLAS, the C kernels and PyTorch (read from
OMP_NUM_THREADS, reported in extra_info); warm-up rounds; pytest-benchmark keeps min and median;
inputs rotate between rounds so no cache flatters a result; each benchmark checks its answer.
"""

import contextlib
import itertools
import os
import sys
import time

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import backend, handgrad, nn, optim

from conftest import REPO

THREADS = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
GEMM_SHAPES = {  # (M, K, N, trans_a, trans_b): the lecture MLP's products at batch 12, then others
    "fwd 12x784 @ (512x784)^T": (12, 784, 512, False, True),
    "dW (12x512)^T @ 12x784": (512, 12, 784, True, False),
    "dx 12x512 @ 512x784": (12, 512, 784, False, False),
    "fwd 12x512 @ (256x512)^T": (12, 512, 256, False, True),
    "fwd 12x256 @ (128x256)^T": (12, 256, 128, False, True),
    "dW (12x128)^T @ 12x256": (128, 12, 256, True, False),
    "fwd 12x128 @ (64x128)^T": (12, 128, 64, False, True),
    "fwd b128 128x784 @ (512x784)^T": (128, 784, 512, False, True),
    "square 512^3": (512, 512, 512, False, False),
}


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


def _info(benchmark, **extra):
    benchmark.extra_info.update(threads=THREADS, backend=backend.name(), **extra)


def _rotating(make, count=4):
    """A function returning a different prepared input on each call (no flattering caches)."""
    return itertools.cycle([make(i) for i in range(count)]).__next__


# --- (a) kernels --------------------------------------------------------------------------------
@contextlib.contextmanager
def _instruction_set(impl):
    """For "c-avx2" / "c-sse2": the C kernels with that instruction set (what a CPU without
    AVX-512 gets), restored afterwards. For "c" and "numpy": nothing changes."""
    wanted = impl.partition("-")[2]
    if not wanted:
        yield
        return
    kernels = backend.c_kernels
    level = {name: level for level, name in kernels.ISA_NAMES.items()}[wanted]
    before = kernels.lib.tge_isa()
    try:
        if kernels.lib.tge_set_isa(level) != level:
            pytest.skip(f"this CPU has no {wanted}")
        yield
    finally:
        kernels.lib.tge_set_isa(before)


@pytest.mark.benchmark(group="gemm")
@pytest.mark.parametrize("impl", ["c", "numpy", "c-avx2", "c-sse2"])
@pytest.mark.parametrize("case", list(GEMM_SHAPES))
def test_gemm(benchmark, case, impl, monkeypatch):
    if impl.partition("-")[0] not in backend.available():
        pytest.skip("C kernels not built")
    if impl.startswith("c"):   # our GEMM at every size, also where the C backend hands it to NumPy
        monkeypatch.setattr(backend.c_kernels, "numpy_is_faster", lambda m, n, k: False)
    m, k, n, ta, tb = GEMM_SHAPES[case]
    rng = np.random.default_rng(0)

    def make(i):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        return a, b, np.empty((m, n), np.float32)

    nxt = _rotating(make)
    with backend.use(impl.partition("-")[0]), _instruction_set(impl):
        a, b, out = nxt()
        expected = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        backend.gemm(a, b, ta, tb, out=out)
        assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max() * 4

        def run():
            a, b, out = nxt()
            backend.gemm(a, b, ta, tb, out=out)

        benchmark(run)
    flops = 2 * m * n * k
    _info(benchmark, flops=flops, shape=case,
          gflops_min=flops / benchmark.stats["min"] / 1e9 if benchmark.stats else None)


@pytest.mark.benchmark(group="ger")
@pytest.mark.parametrize("impl", ["c", "numpy", "np.outer"])
def test_rank1_update(benchmark, impl):
    if impl == "c" and "c" not in backend.available():
        pytest.skip("C kernels not built")
    rng = np.random.default_rng(1)
    nxt = _rotating(lambda i: (np.zeros((512, 784), np.float32), rng.standard_normal(512).astype(np.float32),
                               rng.standard_normal(784).astype(np.float32)))
    if impl == "np.outer":
        def update(A, x, y):
            A += np.outer(x, y)
    else:
        update = backend.ger
    with backend.use("numpy" if impl == "np.outer" else impl):   # chosen outside the timed call
        A, x, y = nxt()
        A0 = A.copy()
        update(A, x, y)
        assert np.allclose(A, A0 + np.outer(x, y), atol=1e-5)

        def run():
            update(*nxt())

        benchmark(run)
    _info(benchmark, shape="512x784")


CONV_SHAPES = {  # (N, C, H, W, O, k, dL/dx needed): the CNN's two convolutions at batch 12, 5x5 filters
    "conv1 1->20 28x28": (12, 1, 28, 28, 20, 5, False),    # its input is the image
    "conv2 20->64 12x12": (12, 20, 12, 12, 64, 5, True),
}


@pytest.mark.benchmark(group="conv")
@pytest.mark.parametrize("impl", ["tinygrad_edu-c", "tinygrad_edu-c-plain", "torch"])
@pytest.mark.parametrize("direction", ["forward", "forward+backward"])
@pytest.mark.parametrize("case", list(CONV_SHAPES))
def test_conv2d(benchmark, case, direction, impl):
    """One of the CNN's convolutions (with bias) through nn.functional.conv2d, against
    torch.nn.functional.conv2d. forward+backward also takes a given dL/dy back to dL/dweight,
    dL/dbias and, for conv2 (whose input is a hidden layer), dL/dx, as a training step does.
    tinygrad_edu-c runs whatever the fast layer does for conv2d, tinygrad_edu-c-plain the plain op."""
    torch = _torch()   # the reference: PyTorch in float64
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    n, c, h, w, o, k, input_grad = CONV_SHAPES[case]
    backward = direction == "forward+backward"
    lib = torch if impl == "torch" else tg
    rng = np.random.default_rng(2)

    def make(i):   # x, weight, bias as leaves (requiring grad for the backward), and dL/dy
        arrays = [rng.standard_normal(shape).astype(np.float32)
                  for shape in ((n, c, h, w), (o, c, k, k), (o,), (n, o, h - k + 1, w - k + 1))]
        x, weight, bias, grad = (lib.from_numpy(a) for a in arrays)
        for leaf, needed in ((x, input_grad), (weight, True), (bias, True)):
            leaf.requires_grad = backward and needed
        return x, weight, bias, grad

    def run(conv2d, x, weight, bias, grad):   # y, dL/dx, dL/dweight, dL/dbias (None if not asked for)
        y = conv2d(x, weight, bias)
        if backward:
            x.grad = weight.grad = bias.grad = None   # each round computes them afresh
            y.backward(grad)
        return y, x.grad, weight.grad, bias.grad

    def as_float64(answers):
        return [np.asarray(t.detach(), np.float64) for t in answers if t is not None]

    conv2d = lib.nn.functional.conv2d
    nxt = _rotating(make)
    with backend.use("c"), tg.set_fast(impl != "tinygrad_edu-c-plain"):
        inputs = nxt()
        inputs64 = [torch.tensor(np.asarray(t.detach()), dtype=torch.float64, requires_grad=t.requires_grad)
                    for t in inputs]
        expected = as_float64(run(torch.nn.functional.conv2d, *inputs64))
        for answer, reference in zip(as_float64(run(conv2d, *inputs)), expected, strict=True):
            assert np.abs(answer - reference).max() <= 1e-4 * np.abs(reference).max()
        benchmark(lambda: run(conv2d, *nxt()))
    forward_flops = 2 * n * o * (h - k + 1) * (w - k + 1) * c * k * k
    flops = forward_flops * (2 + input_grad if backward else 1)   # dL/dweight and dL/dx cost one forward each
    _info(benchmark, flops=flops, shape=f"x {n}x{c}x{h}x{w}, weight {o}x{c}x{k}x{k}", direction=direction,
          gflops_min=flops / benchmark.stats["min"] / 1e9 if benchmark.stats else None)


# --- (b) engine overhead per graph node -----------------------------------------------------------
OPS = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "matmul": lambda a, b: a @ b}


@pytest.mark.benchmark(group="overhead")
@pytest.mark.parametrize("engine", ["tinygrad_edu", "torch"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_forward_backward_overhead(benchmark, op, engine):
    lib = tg if engine == "tinygrad_edu" else _torch()
    a = lib.ones(4, 4, requires_grad=True)
    b = lib.ones(4, 4, requires_grad=True)

    def run():
        OPS[op](a, b).sum().backward()

    run()
    assert float(a.grad.sum()) == {"add": 16.0, "mul": 16.0, "matmul": 64.0}[op]
    benchmark(run)
    _info(benchmark, op=op, shape="4x4")


# --- (c) one training step of the lecture MLP -------------------------------------------------------
SIZES = [784, 512, 256, 128, 64, 10]


def _batches(batch):
    rng = np.random.default_rng(batch)
    return _rotating(lambda i: (rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)))


def _hand_step(batch):
    mlp = handgrad.DeepMLP(SIZES, seed=0, dtype=np.float32)
    nxt = _batches(batch)

    def step():
        x, y = nxt()
        for name, g in mlp.gradients(x, y).items():
            param = mlp.params()[name]
            param -= np.float32(0.01) * g
    return step, mlp


def _kernel_step(batch):
    """The engine's work without the engine: the same C kernels and NumPy calls in a row, no
    graph. The gap between this and tinygrad_edu-c is what the graph and its Python cost."""
    mlp = handgrad.DeepMLP(SIZES, seed=0, dtype=np.float32)
    Ws, bs = mlp.Ws, mlp.bs
    nxt = _batches(batch)

    def step():
        x, y = nxt()
        hs = [x]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = backend.gemm(hs[-1], W, trans_b=True, bias=b)
            hs.append(backend.relu(z) if i < len(Ws) - 1 else z)
        _, dz = backend.cross_entropy(hs[-1], y)      # softmax - onehot, per sample
        dz /= batch                                   # d mean CE / d logits
        grads_W, grads_b = [], []
        for i in reversed(range(len(Ws))):
            dx, dW, db = backend.linear_backward(dz, hs[i], Ws[i], need_dx=i > 0)
            grads_W.insert(0, dW)
            grads_b.insert(0, db)
            if i:
                dz = backend.relu_backward(hs[i], dx)
        backend.axpy_many(-0.01, grads_W + grads_b, Ws + bs)
    return step, mlp


def _lecture_step(model, criterion, optimizer, jitted=False):
    """The lecture's four lines of a training step as a function of a batch (x, y), returning the
    loss, on whichever engine ``model`` is; ``jitted``: through tinygrad_edu.jit (captured on the
    first calls, which the benchmarks' correctness checks make, then replayed)."""
    def train(x, y):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return tg.jit(train) if jitted else train


def _engine_step(batch, jitted=False):
    """tinygrad_edu's step; ``jitted``: through tinygrad_edu.jit."""
    mlp = handgrad.DeepMLP(SIZES, seed=0, dtype=np.float32)
    model = mlp.module()
    train = _lecture_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), jitted)
    nxt = _batches(batch)

    def step():   # on the backend in use (the test chooses it around the benchmark)
        x, y = nxt()
        train(tg.from_numpy(x), tg.from_numpy(y))
    return step, mlp


def _torch_step(batch, compiled=False):
    """PyTorch's eager step; ``compiled``: with the model compiled by ``torch.compile``
    (TorchInductor: forward and backward as generated C++; the first call compiles, which takes a
    while, hence the slow mark on those cases)."""
    torch = _torch()
    mlp = handgrad.DeepMLP(SIZES, seed=0, dtype=np.float32)
    layers = []
    for i, (W, b) in enumerate(zip(mlp.Ws, mlp.bs)):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] + ([torch.nn.ReLU()] if i < len(mlp.Ws) - 1 else [])
    model = torch.nn.Sequential(*layers)
    criterion, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01)
    forward = torch.compile(model) if compiled else model   # the same parameters
    nxt = _batches(batch)

    def step():
        x, y = nxt()
        optimizer.zero_grad()
        criterion(forward(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    return step, model


def _jax():
    """JAX on the CPU, with THREADS threads for XLA's own work (set before JAX is imported)."""
    if "jax" not in sys.modules and THREADS == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                           "intra_op_parallelism_threads=1")
    return pytest.importorskip("jax")


def _jax_trainer():
    """The lecture MLP's step as one ``jax.jit``-compiled function, as a JAX user writes it: the
    loss's ``value_and_grad`` and the SGD update traced once, then run compiled, with no Python
    per op. Returns ``train(x, y)``, which waits for its result (JAX returns before the work is
    done), and the state holding the parameters."""
    jax = _jax()
    jnp = jax.numpy
    mlp = handgrad.DeepMLP(SIZES, seed=0, dtype=np.float32)

    def loss_fn(params, x, y):
        h = x
        for i, (W, b) in enumerate(params):
            h = h @ W.T + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], axis=1))

    @jax.jit
    def sgd_step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return [(W - 0.01 * dW, b - 0.01 * db) for (W, b), (dW, db) in zip(params, grads)], loss

    state = {"params": [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(mlp.Ws, mlp.bs)]}

    def train(x, y):
        state["params"], loss = sgd_step(state["params"], x, y)
        return loss.block_until_ready()
    return train, state


def _jax_step(batch):
    train, state = _jax_trainer()
    nxt = _batches(batch)

    def step():
        train(*nxt())
    return step, state


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("impl", ["tinygrad_edu-c", "tinygrad_edu-jit", "tinygrad_edu-c-plain",
                                  "tinygrad_edu-numpy", "numpy-by-hand", "c-kernels-by-hand", "torch", "jax-jit",
                                  pytest.param("torch-compile", marks=pytest.mark.slow)])
@pytest.mark.parametrize("batch", [1, 12, 128])
def test_training_step(benchmark, batch, impl):
    """tinygrad_edu-c runs the fast layer, tinygrad_edu-c-plain the plain ops on the same build
    (set_fast(False)), tinygrad_edu-numpy the plain ops on the NumPy backend."""
    reference_step, reference = _hand_step(batch)
    kernels = "c" if impl in ("tinygrad_edu-c", "tinygrad_edu-jit", "tinygrad_edu-c-plain",
                              "c-kernels-by-hand") else "numpy"
    if kernels not in backend.available():
        pytest.skip("C kernels not built")
    if impl == "numpy-by-hand":
        step, state = reference_step, reference
    elif impl == "torch":
        step, state = _torch_step(batch)
    elif impl == "torch-compile":
        step, state = _torch_step(batch, compiled=True)
    elif impl == "jax-jit":
        step, state = _jax_step(batch)
    elif impl == "c-kernels-by-hand":
        step, state = _kernel_step(batch)
    else:
        step, state = _engine_step(batch, jitted=impl == "tinygrad_edu-jit")
    # backend and path chosen once, outside the timed step, as a user would
    with backend.use(kernels), tg.set_fast(impl != "tinygrad_edu-c-plain"):
        if impl != "numpy-by-hand":   # correctness: three steps agree with the hand-written NumPy step
            for _ in range(3):        # (the jit's warm-up and two capture calls)
                step()
                reference_step()
            first_weight = (state[0].weight.detach().numpy() if impl.startswith("torch") else
                            np.asarray(state["params"][0][0]) if impl == "jax-jit" else state.Ws[0])
            assert np.allclose(first_weight, reference.Ws[0], atol=1e-5)
        benchmark(step)
    _info(benchmark, batch=batch, model="784-512-256-128-64-10")


TURN, ROUNDS = 5, 200   # steps per turn and timed rounds in the interleaved benchmark


def _turns(reference_step, our_step, reference_seconds):
    """The untimed setup of a round in turns: the reference's turn, its last step timed into
    ``reference_seconds``, then ours but one (the fixture times our last)."""
    def turns():
        for _ in range(TURN - 1):
            reference_step()
        start = time.perf_counter()
        reference_step()
        reference_seconds.append(time.perf_counter() - start)
        for _ in range(TURN - 1):
            our_step()
    return turns


@pytest.mark.benchmark(group="train-step-interleaved")
@pytest.mark.parametrize("batch", [1, 12, 128])
def test_training_step_interleaved_with_torch(benchmark, batch):
    """Our step and PyTorch's in turns of TURN steps within one process. This VM has slow spells,
    and measured a minute apart (test_training_step) the ratio moves with them; in turns, a spell
    slows both. Each round times the last step of our turn, and of PyTorch's turn before it (warm
    like the others, as many of each); PyTorch's times go to extra_info."""
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    torch_step, torch_model = _torch_step(batch)
    step, mlp = _engine_step(batch)
    torch_seconds = []
    turns = _turns(torch_step, step, torch_seconds)

    with backend.use("c"):
        step()         # correctness: one step each, from the same weights on the same batch
        torch_step()
        assert np.allclose(torch_model[0].weight.detach().numpy(), mlp.Ws[0], atol=1e-5)
        benchmark.pedantic(step, setup=turns, rounds=ROUNDS, warmup_rounds=2)
    timed = torch_seconds[-ROUNDS:]   # the warm-up rounds' turns do not count, as for ours
    _info(benchmark, batch=batch, torch_min=min(timed), torch_median=float(np.median(timed)))


@pytest.mark.benchmark(group="train-step-interleaved-jax")
@pytest.mark.parametrize("batch", [1, 12, 128])
def test_jitted_step_interleaved_with_jax(benchmark, batch):
    """tinygrad_edu.jit's step and jax.jit's in turns, as the test above pairs eager and PyTorch:
    the last step of each turn is timed; JAX's times go to extra_info."""
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    jax_step, jax_state = _jax_step(batch)
    step, mlp = _engine_step(batch, jitted=True)
    jax_seconds = []
    turns = _turns(jax_step, step, jax_seconds)

    with backend.use("c"):
        for _ in range(3):   # the jit's warm-up and two capture calls; JAX traces on its first
            step()
            jax_step()
        assert np.allclose(np.asarray(jax_state["params"][0][0]), mlp.Ws[0], atol=1e-5)
        benchmark.pedantic(step, setup=turns, rounds=ROUNDS, warmup_rounds=2)
    timed = jax_seconds[-ROUNDS:]
    _info(benchmark, batch=batch, jax_min=min(timed), jax_median=float(np.median(timed)))


# --- (d) a full MNIST epoch (slow) ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.benchmark(group="epoch")
@pytest.mark.parametrize("impl", ["tinygrad_edu", "tinygrad_edu-jit", "torch", "jax-jit"])
def test_mnist_epoch(benchmark, impl, mnist_root):
    sys.path.insert(0, str(REPO / "examples"))
    import mnist_common as common
    from mnist_memory import resident_mb
    if impl == "jax-jit":
        return _jax_epoch(benchmark, mnist_root, common)
    if impl == "torch":
        _torch()   # skips without PyTorch, before load_engine imports it
    torch, nn_, optim_ = common.load_engine(impl.replace("-jit", ""))
    train, test = common.load_mnist(str(mnist_root))
    torch.manual_seed(0)
    model = common.make_mlp(nn_, common.LECTURE_HIDDEN)
    criterion, optimizer = nn_.CrossEntropyLoss(), optim_.SGD(model.parameters(), lr=0.01)
    loader = tg.utils.data.DataLoader(train, batch_size=12, shuffle=True, seed=0)
    step = common.compiled_step(torch, model, criterion, optimizer) if impl.endswith("-jit") else None
    rss = []

    def epoch():
        rss.append(resident_mb())
        common.train_epoch(torch, model, loader, criterion, optimizer, 0, log_every=0, step=step)
        rss.append(resident_mb())

    benchmark.pedantic(epoch, rounds=1, iterations=1)
    correct, total = common.evaluate(torch, model, tg.utils.data.DataLoader(test, batch_size=1000))
    assert correct / total > 0.9
    _info(benchmark, rss_mb_before=rss[0], rss_mb_after=rss[-1], accuracy=correct / total)


def _jax_epoch(benchmark, mnist_root, common):
    """JAX's epoch: the same batches in the same order (tinygrad_edu's seeded DataLoader), each
    through the jitted step; the MLP starts from handgrad's weights (the torch and tinygrad_edu
    rows from their engines' own initialisation: the work is the same)."""
    train, state = _jax_trainer()
    data, test = common.load_mnist(str(mnist_root))
    loader = tg.utils.data.DataLoader(data, batch_size=12, shuffle=True, seed=0)

    def epoch():
        for images, labels in loader:
            train(images.numpy().reshape(len(images), -1), labels.numpy())

    benchmark.pedantic(epoch, rounds=1, iterations=1)
    batches = list(tg.utils.data.DataLoader(test, batch_size=1000))
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    h = images.reshape(len(images), -1)
    for i, (W, b) in enumerate(state["params"]):
        h = h @ np.asarray(W).T + np.asarray(b)
        h = np.maximum(h, 0) if i < len(state["params"]) - 1 else h
    accuracy = float(np.mean(h.argmax(1) == labels))
    assert accuracy > 0.9
    _info(benchmark, accuracy=accuracy)


# --- (e) the CNN: a training step, and an epoch (slow) -------------------------------------------------
CNN_SGD = dict(lr=0.01, momentum=0.9)   # the same for both engines
CNN_BATCH_SIZE = 64                     # examples/mnist_cnn.py's default
# the epoch's training images: 6,400 (100 batches) in the test run, where the plain path is slow;
# TINYGRAD_EDU_CNN_EPOCH_IMAGES=60000 for the real epoch when measuring
CNN_EPOCH_IMAGES = int(os.environ.get("TINYGRAD_EDU_CNN_EPOCH_IMAGES", "6400"))


def cnn(nn_):
    """The lecture's two convolutions, each with ReLU and 2x2 max-pooling, then a Linear classifier
    on the 64 4x4 maps: on the engine whose ``nn`` is given."""
    return nn_.Sequential(nn_.Conv2d(1, 20, 5), nn_.ReLU(), nn_.MaxPool2d(2),
                          nn_.Conv2d(20, 64, 5), nn_.ReLU(), nn_.MaxPool2d(2),
                          nn_.Flatten(), nn_.Linear(64 * 4 * 4, 10))


def _cnn_twins():
    """The CNN on tinygrad_edu and on PyTorch, with the same weights (PyTorch's, seed 0)."""
    torch = _torch()
    torch.manual_seed(0)
    ours, theirs = cnn(nn), cnn(torch.nn)
    for ours_p, theirs_p in zip(ours.parameters(), theirs.parameters(), strict=True):
        ours_p.data[...] = theirs_p.detach().numpy()
    return ours, theirs


def _cnn_step(lib, model, batch, jitted=False):
    """A training step of ``model`` on the engine ``lib`` (tinygrad_edu or torch) on rotating
    MNIST-shaped batches, the same for both engines; ``jitted``: through tinygrad_edu.jit, as
    examples/mnist_cnn.py runs it by default. The step returns its loss."""
    train = _lecture_step(model, lib.nn.CrossEntropyLoss(), lib.optim.SGD(model.parameters(), **CNN_SGD), jitted)
    rng = np.random.default_rng(batch)
    nxt = _rotating(lambda i: (rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)))

    def step():
        x, y = nxt()
        return train(lib.from_numpy(x), lib.from_numpy(y))
    return step


@pytest.mark.benchmark(group="train-step-cnn")
@pytest.mark.parametrize("impl", ["tinygrad_edu-c", "tinygrad_edu-jit", "tinygrad_edu-c-plain", "torch"])
@pytest.mark.parametrize("batch", [1, 12, 128])
def test_cnn_training_step(benchmark, batch, impl):
    """tinygrad_edu-c runs the fast layer, tinygrad_edu-jit the same through tinygrad_edu.jit,
    tinygrad_edu-c-plain the plain ops on the same build (set_fast(False)); the torch case checks
    against the fast layer."""
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    torch = _torch()
    ours, theirs = _cnn_twins()
    our_step = _cnn_step(tg, ours, batch, jitted=impl == "tinygrad_edu-jit")
    torch_step = _cnn_step(torch, theirs, batch)
    with backend.use("c"), tg.set_fast(impl != "tinygrad_edu-c-plain"):
        for _ in range(3):   # correctness: three steps (the jit's warm-up and two capture calls)
            assert our_step().item() == pytest.approx(torch_step().item(), rel=1e-4)
        for ours_p, theirs_p in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert np.allclose(ours_p.detach().numpy(), theirs_p.detach().numpy(), atol=1e-5)
        benchmark(torch_step if impl == "torch" else our_step)
    _info(benchmark, batch=batch, model="conv-pool-conv-pool-linear", optimizer=f"SGD {CNN_SGD}")


@pytest.mark.benchmark(group="train-step-cnn-interleaved")
@pytest.mark.parametrize("batch", [12, CNN_BATCH_SIZE])
def test_cnn_jitted_step_interleaved_with_torch(benchmark, batch):
    """The CNN's step as examples/mnist_cnn.py runs it (tinygrad_edu.jit) and PyTorch's, in turns
    of TURN steps within one process (as test_training_step_interleaved_with_torch pairs the
    MLP's): a slow spell of this VM slows both. PyTorch's times go to extra_info."""
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    torch = _torch()
    ours, theirs = _cnn_twins()
    our_step, torch_step = _cnn_step(tg, ours, batch, jitted=True), _cnn_step(torch, theirs, batch)
    torch_seconds = []
    rounds = ROUNDS // 4   # a step here is 10-50x the MLP's
    with backend.use("c"):
        for _ in range(3):   # correctness, and the jit's warm-up and two capture calls
            assert our_step().item() == pytest.approx(torch_step().item(), rel=1e-4)
        benchmark.pedantic(our_step, setup=_turns(torch_step, our_step, torch_seconds), rounds=rounds,
                           warmup_rounds=2)
    timed = torch_seconds[-rounds:]
    _info(benchmark, batch=batch, torch_min=min(timed), torch_median=float(np.median(timed)))


@pytest.mark.benchmark(group="train-step-cnn-relu-fusion")
@pytest.mark.parametrize("batch", [1, 12, CNN_BATCH_SIZE])
def test_cnn_jitted_step_with_and_without_the_relu_fusion(benchmark, batch, monkeypatch):
    """What tinygrad_edu.jit's fuse_relus gains: the jitted CNN step, and the same step captured
    with that rewrite turned off, in turns in one process (the unfused step's times in
    extra_info). Two copies of the model with the same weights take the same batches: their
    weights must come out equal bit for bit."""
    if "c" not in backend.available():
        pytest.skip("C kernels not built")
    jit_module = sys.modules["tinygrad_edu.jit"]
    models = []
    for _ in range(2):
        tg.manual_seed(0)
        models.append(cnn(nn))
    fused, unfused = (_cnn_step(tg, model, batch, jitted=True) for model in models)
    unfused_seconds = []
    rounds = ROUNDS // 4
    with backend.use("c"):
        for _ in range(3):   # the jit's warm-up and two capture calls
            fused()
        with monkeypatch.context() as m:
            m.setattr(jit_module, "fuse_relus", lambda steps, outputs: list(steps))
            for _ in range(3):
                unfused()
        benchmark.pedantic(fused, setup=_turns(unfused, fused, unfused_seconds), rounds=rounds,
                           warmup_rounds=2)
    for p, q in zip(*(model.parameters() for model in models), strict=True):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())
    timed = unfused_seconds[-rounds:]
    _info(benchmark, batch=batch, unfused_min=min(timed), unfused_median=float(np.median(timed)))


@pytest.mark.slow
@pytest.mark.benchmark(group="epoch-cnn")
@pytest.mark.parametrize("impl", ["tinygrad_edu", "tinygrad_edu-jit", "torch"])
def test_cnn_mnist_epoch(benchmark, impl, mnist_root):
    """One pass over the first CNN_EPOCH_IMAGES MNIST training images in batches of
    CNN_BATCH_SIZE with the lecture's loop (mnist_common.train_epoch: loss.item() every step), both
    engines from the same weights in the same order, ours on the backend in use (tinygrad_edu-jit:
    each step through tinygrad_edu.jit, examples/mnist_cnn.py's default); then the first 2,000
    test images must be mostly right."""
    sys.path.insert(0, str(REPO / "examples"))
    import mnist_common as common
    ours, theirs = _cnn_twins()
    torch, nn_, optim_ = common.load_engine(impl.partition("-")[0])
    model = theirs if impl == "torch" else ours
    train, test = common.load_mnist(str(mnist_root), train_subset=CNN_EPOCH_IMAGES, test_subset=2000)
    criterion, optimizer = nn_.CrossEntropyLoss(), optim_.SGD(model.parameters(), **CNN_SGD)
    loader = tg.utils.data.DataLoader(train, batch_size=CNN_BATCH_SIZE, shuffle=True, seed=0)
    step = common.compiled_step(torch, model, criterion, optimizer) if impl.endswith("jit") else None

    def epoch():
        common.train_epoch(torch, model, loader, criterion, optimizer, 0, log_every=0, step=step)

    benchmark.pedantic(epoch, rounds=1, iterations=1)
    correct, total = common.evaluate(torch, model, tg.utils.data.DataLoader(test, batch_size=1000))
    assert correct / total > 0.75   # ~0.87 after these 100 steps; 0.1 is chance
    _info(benchmark, images=len(train), batch_size=CNN_BATCH_SIZE, accuracy=correct / total)


def test_report_shows_the_convolutions_in_gflops_and_the_cnn_against_torch(tmp_path):
    """examples/benchmark_report.py on made-up rows of the CNN benchmarks: the CNN step as a ratio
    to PyTorch's, the convolutions as ratios and, every implementation, in GFLOP/s beside the best
    GEMM rate of the run."""
    sys.path.insert(0, str(REPO / "examples"))
    import benchmark_report

    def bench(group, impl, seconds, flops=None, **params):
        extra = dict(threads=1) if flops is None else dict(threads=1, flops=flops)
        return dict(group=group, params=dict(impl=impl, **params), extra_info=extra,
                    stats=dict(min=seconds, median=seconds * 1.1))
    conv = dict(case="conv2", direction="forward")
    table = benchmark_report.rows(dict(benchmarks=[
        bench("gemm", "c", 1e-5, flops=2e6, case="fwd"), bench("gemm", "numpy", 2e-5, flops=2e6, case="fwd"),
        bench("conv", "tinygrad_edu-c", 2e-5, flops=1e6, **conv),
        bench("conv", "torch", 4e-5, flops=1e6, **conv),
        bench("train-step-cnn", "tinygrad_edu-c", 3e-3, batch=12),
        bench("train-step-cnn", "torch", 6e-3, batch=12)]))
    ratios, rates = benchmark_report.chart_panels(table)
    assert [(r["group"], r["impl"], v) for r, v in zip(ratios.rows, ratios.values)] == [
        ("conv", "tinygrad_edu-c", pytest.approx(0.5)),
        ("train-step-cnn", "tinygrad_edu-c", pytest.approx(0.5))]
    assert [(r["impl"], v) for r, v in zip(rates.rows, rates.values)] == [
        ("tinygrad_edu-c", pytest.approx(50)), ("torch", pytest.approx(25))]
    assert benchmark_report.best_gemm_rate(table) == pytest.approx(200)
    assert "| conv | case=conv2, direction=forward | tinygrad_edu-c | 20.0 | 22.0 | 0.50 |  | 50.0 |" in \
        benchmark_report.markdown(table, "test CPU").splitlines()
    benchmark_report.bar_chart(table, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
