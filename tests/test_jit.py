"""tinygrad_edu.jit: a replayed step leaves exactly what the eager step leaves, and every
documented limit is detected or behaves as documented."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_random_graphs import ALL_OPS, MOSTLY_SUMS, make_inputs, programs, run

import tinygrad_edu as tg
import tinygrad_edu.nn.functional as F
from tinygrad_edu import nn, optim

needs_c = pytest.mark.skipif("c" not in tg.backend.available(), reason="the C kernels are not built")


@pytest.fixture
def c_backend():
    if "c" not in tg.backend.available():
        pytest.skip("the C kernels are not built")
    with tg.backend.use("c"):
        yield


class LectureMLP(nn.Module):
    """The lecture's MLP, 784-512-256-128-64-10, as the lecture writes its forward."""

    def __init__(self, sizes=(784, 512, 256, 128, 64, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        x = x.view(-1, self.layers[0].in_features)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(self.drop(x.flatten(1)))

    def classify(self, a):   # the layers after the convolution's ReLU, without dropout
        return self.fc(self.pool(a).flatten(1))


def twins(make_model, make_optimizer):
    """Two copies of one model and its optimizer, with the same weights."""
    pairs = []
    for _ in range(2):
        tg.manual_seed(0)
        model = make_model()
        pairs.append((model, make_optimizer(model.parameters())))
    return pairs


def minimizing(optimizer, loss_of):
    """A training step: zero the gradients, ``loss_of(*inputs)``, backward, the optimizer's step;
    returns the loss."""
    def step(*inputs):
        optimizer.zero_grad()
        loss = loss_of(*inputs)
        loss.backward()
        optimizer.step()
        return loss
    return step


def training_step(model, optimizer, loss_fn=nn.CrossEntropyLoss()):
    return minimizing(optimizer, lambda x, y: loss_fn(model(x), y))


def batches(rng, shape, sizes, classes=10):
    return [(tg.tensor(rng.random((n,) + shape, dtype=np.float32)), tg.tensor(rng.integers(0, classes, n)))
            for n in sizes]


def assert_same_state(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.array_equal(p.data, q.data), name
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert np.array_equal(p.grad.data, q.grad.data), name


def run_both(rng, make_model, make_optimizer, shape, sizes, steps_per_size=4, classes=10):
    (m1, o1), (m2, o2) = twins(make_model, make_optimizer)
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    data = [b for b in batches(rng, shape, sizes, classes) for _ in range(steps_per_size)]
    for x, y in data:
        tg.manual_seed(1)   # dropout draws the same masks in both
        expected = eager(x, y)
        tg.manual_seed(1)
        got = jitted(x, y)
        assert got.item() == expected.item()
    assert_same_state(m1, m2)
    return jitted


# --- a replayed step equals the eager step ----------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 12, 128])
def test_the_lecture_mlp_replayed_equals_eager_bit_for_bit(c_backend, rng, batch):
    # batch 12, 12, 12, 12 then the last partial batch (a new capture), and back
    step = run_both(rng, LectureMLP, lambda p: optim.SGD(p, lr=0.01), (1, 28, 28), [batch, max(1, batch // 3), batch])
    assert len(step._captures) == (1 if batch == 1 else 2)
    listing = str(step)
    assert "gemm" in listing
    if batch <= 32:   # the weights' SGD step taken in their linear_backward (C), the biases' after
        assert listing.count("+ SGD step of the weight") == 5
        assert "5 weight(s) stepped with their gradients above, then float32 axpy_many 5 arrays" in listing
    else:             # at 128 the gradient products are OpenBLAS's (NumPy steps): nothing fused
        assert "axpy_many 10 arrays while unchanged" in listing   # SGD.step in C


def test_a_hundred_replayed_steps_stay_bit_identical(c_backend, rng):
    (m1, o1), (m2, o2) = twins(LectureMLP, lambda p: optim.SGD(p, lr=0.01))
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    data = batches(rng, (784,), [12] * 10)
    for i in range(100):
        assert eager(*data[i % 10]).item() == jitted(*data[i % 10]).item()
    assert_same_state(m1, m2)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: optim.Adam(p, lr=1e-3, weight_decay=1e-4),
], ids=["sgd-momentum-weight-decay", "sgd-nesterov", "adam"])
def test_optimizers_with_state_replay_as_eager(c_backend, rng, make_optimizer):
    run_both(rng, lambda: LectureMLP((20, 16, 8, 3)), make_optimizer, (20,), [6, 6, 6, 2], steps_per_size=3,
             classes=3)


def test_sgd_with_momentum_replays_its_step_as_two_kernel_calls(c_backend, rng, monkeypatch):
    """Every momentum buffer moved on in one axpby_many, then every weight in one axpy_many: in C
    while the settings and the buffers are those of the capture. A changed learning rate, or new
    buffers (a state loaded), send the call back to Python, and the steps stay the eager ones."""
    from tinygrad_edu.jit import KernelsIfUnchanged
    in_c = []
    run_kernels = KernelsIfUnchanged._run_kernels
    monkeypatch.setattr(KernelsIfUnchanged, "_run_kernels",
                        lambda self: in_c.append(1) or run_kernels(self))
    make_sgd = lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.2)   # noqa: E731
    (m1, o1), (m2, o2) = twins(lambda: LectureMLP((20, 12, 3)), make_sgd)
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    for k, (x, y) in enumerate(batches(rng, (20,), [4] * 10, classes=3)):
        for opt in (o1, o2):
            opt.param_groups[0]["lr"] = 0.05 if k == 5 else 0.1   # in Python at k = 5 only
            if k == 7:
                opt.load_state_dict(opt.state_dict())   # the same numbers in new buffers: Python from here
        assert jitted(x, y).item() == eager(x, y).item()
        assert_same_state(m1, m2)
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert np.array_equal(o1.state[p]["momentum_buffer"], o2.state[q]["momentum_buffer"])
    assert "float32 axpby_many 4 arrays, * 0.9, float32 axpy_many 4 arrays while unchanged" in str(jitted)
    assert len(in_c) == 4   # the capture's check at k = 2, the replays at k = 3, 4 and 6


def test_a_cnn_with_pooling_and_dropout_replays_as_eager(c_backend, rng):
    """... with its ReLU fused into the convolution's layout kernels, both ways, bit for bit."""
    step = run_both(rng, SmallCNN, lambda p: optim.SGD(p, lr=0.1, momentum=0.5), (1, 8, 8), [5, 5, 3])
    program = str(step)
    assert "im2col" in program and "max_pool_backward" in program
    assert "then relu" in program and "relu_backward first" in program
    assert "float32 relu " not in program and "float32 relu_backward " not in program   # no call of their own


class WinogradCNN(nn.Module):
    """A convolution that goes to fast.WinogradConv2d (8 input channels, a 3x3 kernel, enough tiles
    at batch 4), padded, then a ReLU: fused into Winograd's output side both ways."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=(1, 2))
        self.fc = nn.Linear(8 * 8 * 10, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(self.conv0(x))).flatten(1))

    def classify(self, a):   # the layers after the convolution's ReLU
        return self.fc(a.flatten(1))


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 20_000])
def test_a_cnn_on_winograd_replays_as_eager_with_its_relu_fused(c_backend, rng, monkeypatch, chunk_bytes):
    """... in one chunk of images, and in chunks of 2 (8 KiB of products an image), the last one
    shorter at batch 5 (the listing is the last capture's): each chunk's winograd_output writes its
    slice of the ReLU's output."""
    monkeypatch.setattr(tg.fast, "WINOGRAD_CHUNK_BYTES", chunk_bytes)
    step = run_both(rng, WinogradCNN, lambda p: optim.SGD(p, lr=0.05, momentum=0.5), (1, 8, 8), [4, 5])
    program = str(step)
    chunks = 1 if chunk_bytes > 100_000 else 3   # 2 + 2 + 1 images
    assert program.count("float32 winograd_input ") == chunks
    assert program.count("6x6 outputs a tile, then relu") == chunks
    assert program.count("6x6 outputs a tile, relu_backward first") == chunks
    assert "float32 relu " not in program and "float32 relu_backward " not in program


@pytest.mark.parametrize("part", ["z[2:]", "z[:3]", "z[1:3]"])
def test_a_relu_on_part_of_a_chunked_output_read_elsewhere_too_replays_as_eager(c_backend, rng, monkeypatch, part):
    """A ReLU on a slice of z that another kernel reads whole: z[2:] starts at a chunk's boundary
    (the second of two), and fusing it would leave that chunk's part of z unwritten for the other
    reader; z[:3] and z[1:3] do not match the chunks at all. Nothing is fused; the replays are
    eager's, call after call."""
    monkeypatch.setattr(tg.fast, "WINOGRAD_CHUNK_BYTES", 20_000)   # chunks of 2 images
    tg.manual_seed(0)
    model = WinogradCNN()
    view = {"z[2:]": slice(2, None), "z[:3]": slice(None, 3), "z[1:3]": slice(1, 3)}[part]

    def predict(x):
        with tg.no_grad():
            z = model.conv(model.conv0(x))
            return F.relu(z[view]).sum() + F.relu(z).sum()
    jitted = tg.jit(predict)
    for x, _ in batches(rng, (1, 8, 8), [4] * 6):
        assert jitted(x).item() == predict(x).item()
    assert str(jitted).count("then relu") <= 1   # at most the whole z's ReLU, never the part's


def replay_returning_z(rng, make_model, make_optimizer, head, batch, owner_unknown=False):
    """Eager and jitted training steps that also return the convolution's output z (so the jit
    may not drop it), from the same weights: their losses, z and final weights must be equal.
    ``head(model, x)`` is z; the loss is taken on ``model.classify(relu(z))``. Returns the jitted
    step. ``owner_unknown``: the optimizer does not promise to touch only its parameters."""
    def returns_z(model, opt):
        def step(x, y):
            opt.zero_grad()
            z = head(model, x)
            loss = nn.CrossEntropyLoss()(model.classify(F.relu(z)), y)
            loss.backward()
            opt.step()
            return loss, z
        return step
    (m1, o1), (m2, o2) = twins(make_model, make_optimizer)
    if owner_unknown:
        o2.replay_touches_only_parameters = False
    eager, jitted = returns_z(m1, o1), tg.jit(returns_z(m2, o2))
    for x, y in batches(rng, (1, 8, 8), [batch] * 5):
        (loss, z), (loss2, z2) = eager(x, y), jitted(x, y)
        assert loss.item() == loss2.item() and np.array_equal(z.data, z2.data)
    assert_same_state(m1, m2)
    return jitted


def test_a_relu_is_not_fused_into_winograd_chunks_whose_output_is_returned(c_backend, rng, monkeypatch):
    monkeypatch.setattr(tg.fast, "WINOGRAD_CHUNK_BYTES", 20_000)
    jitted = replay_returning_z(rng, WinogradCNN, lambda p: optim.SGD(p, lr=0.05),
                                lambda model, x: model.conv(model.conv0(x)), 4)
    program = str(jitted)
    assert "float32 relu " in program and "then relu" not in program   # z is returned
    assert program.count("relu_backward first") == 2                     # dL/dz is read by nothing else


class ConvOutputUsedTwice(SmallCNN):
    def forward(self, x):
        z = self.conv(x)
        return self.fc(self.pool(F.relu(z) + z).flatten(1))


class ConvOutputReLUdTwice(SmallCNN):
    def forward(self, x):
        z = self.conv(x)
        a, b = F.relu(z), F.relu(z)   # two relu kernel calls on z: the second reads it
        return self.fc(self.pool(a).flatten(1)) - self.fc(self.pool(b).flatten(1)) * 0.5


@pytest.mark.parametrize("case", ["the convolution's output read twice", "its output read by another kernel",
                                  "the convolution's output returned", "an optimizer that may read anything"])
def test_a_relu_is_not_fused_where_the_array_between_is_used_elsewhere(c_backend, rng, case):
    """Fusing drops the convolution's output z (forward) or dL/dz (backward): where something
    else reads it, the two calls stay, and the replay still equals eager."""
    make_optimizer = lambda p: optim.SGD(p, lr=0.1, momentum=0.5)   # noqa: E731
    if case in ("the convolution's output read twice", "its output read by another kernel"):
        model = ConvOutputUsedTwice if case.endswith("twice") else ConvOutputReLUdTwice
        jitted = run_both(rng, model, make_optimizer, (1, 8, 8), [4, 4])
        assert "float32 relu " in str(jitted) and "then relu" not in str(jitted)
        return

    jitted = replay_returning_z(rng, SmallCNN, make_optimizer, lambda model, x: model.conv(x), 3,
                                owner_unknown=case == "an optimizer that may read anything")
    program = str(jitted)
    assert "float32 relu " in program and "then relu" not in program     # z is returned, or may be read
    if case == "the convolution's output returned":
        assert "relu_backward first" in program                    # dL/dz is read by nothing else
    else:
        assert "float32 relu_backward " in program


def test_the_plain_path_replays_as_eager(c_backend, rng):
    """With the fast layer off every op is a Python step: still the same numbers."""
    with tg.set_fast(False):
        step = run_both(rng, lambda: LectureMLP((12, 9, 4)), lambda p: optim.SGD(p, lr=0.1), (12,), [4, 4],
                        classes=4)
    assert "Python" in str(step)


def test_a_graph_with_reuse_and_broadcasting_replays_as_eager(c_backend, rng):
    """Gradients added up (a node used twice), un-broadcast and handed to a leaf twice."""
    def make():
        tg.manual_seed(0)
        return tg.randn(3, 4, requires_grad=True), tg.randn(4, requires_grad=True)

    results = []
    for wrap in (lambda f: f, tg.jit):
        w, b = make()
        def loss_of(x):
            h = x @ w + b          # b broadcast over the rows
            return (h * h).sum() + (h.tanh() * b).mean() + (w * w).sum()
        step = wrap(minimizing(optim.SGD([w, b], lr=0.1), loss_of))
        losses = [step(tg.tensor(np.full((2, 3), k, np.float32))).item() for k in (0.5, 1.0, -1.0, 2.0)]
        results.append((losses, w.data.copy(), b.data.copy(), w.grad.data.copy(), b.grad.data.copy()))
    for eager, replayed in zip(*results):
        assert np.array_equal(np.asarray(eager), np.asarray(replayed))


def test_computations_outside_the_ops_are_replayed_too(c_backend, rng):
    """int32 labels converted for the loss, an argmax and a comparison: made anew on every replay."""
    (m1, o1), (m2, o2) = twins(lambda: LectureMLP((6, 5, 3)), lambda p: optim.SGD(p, lr=0.1))

    def make(model, opt):
        def step(x, y):
            opt.zero_grad()
            out = model(x)
            loss = nn.CrossEntropyLoss()(out, y)
            loss.backward()
            opt.step()
            return loss, (out.argmax(1) == y).sum()
        return step
    eager, jitted = make(m1, o1), tg.jit(make(m2, o2))
    for x, y in batches(rng, (6,), [4] * 6, classes=3):
        y = tg.tensor(y.numpy().astype(np.int32))
        (l1, c1), (l2, c2) = eager(x, y), jitted(x, y)
        assert l1.item() == l2.item() and c1.item() == c2.item()
    assert_same_state(m1, m2)


def test_in_place_tensor_arithmetic_and_a_hand_written_update_are_replayed(c_backend, rng):
    """The update students write by hand: p -= lr * p.grad under no_grad, and gradients kept
    (accumulated) across calls with zero_() at the end of the step."""
    results = []
    for wrap in (lambda f: f, tg.jit):
        tg.manual_seed(0)
        model = nn.Linear(5, 2)

        def step(x, y):
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            with tg.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.grad.zero_()
            return loss
        step = wrap(step)
        for k in range(5):
            step(tg.tensor(np.full((3, 5), k, np.float32)), tg.tensor(np.ones((3, 2), np.float32)))
        results.append([p.data.copy() for p in model.parameters()])
    for eager, replayed in zip(*results):
        assert np.array_equal(eager, replayed)


def test_replayed_outputs_are_new_tensors_and_parameter_versions_move_on(c_backend, rng):
    (model, opt), = twins(LectureMLP, lambda p: optim.SGD(p, lr=0.01))[:1]
    step = tg.jit(training_step(model, opt))
    losses = [step(x, y) for x, y in batches(rng, (784,), [4] * 4)]
    assert len({id(loss.data) for loss in losses}) == 4
    assert len({loss.item() for loss in losses}) == 4   # an earlier loss is not overwritten
    weight = model.layers[0].weight
    before = weight._version
    step(*batches(rng, (784,), [4])[0])
    assert weight._version == before + 1   # the optimizer's step, replayed, bumps it as eagerly
    assert not losses[-1].requires_grad


def test_a_learning_rate_changed_between_calls_is_used(c_backend, rng):
    (m1, o1), (m2, o2) = twins(lambda: LectureMLP((6, 4, 2)), lambda p: optim.SGD(p, lr=0.1))
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    for k, (x, y) in enumerate(batches(rng, (6,), [3] * 6, classes=2)):
        for opt in (o1, o2):
            opt.param_groups[0]["lr"] = 0.1 / (k + 1)   # a schedule
        eager(x, y)
        jitted(x, y)
    assert_same_state(m1, m2)


def eager_and_jitted(make_step, calls, seed=0):
    """``make_step(model, optimizer)`` run eagerly and through the jit on the same ``calls``
    (argument tuples); returns both runs' results (or the first error) and models."""
    runs = []
    for wrap in (lambda f: f, tg.jit):
        tg.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        step = wrap(make_step(model, optim.SGD(model.parameters(), lr=0.1)))
        runs.append(([step(*args) for args in calls], model))
    return runs


def some_calls(rng, n=6, shape=(4, 6)):
    return [(tg.tensor(rng.standard_normal(shape).astype(np.float32)), tg.tensor(rng.integers(0, 3, shape[0])))
            for _ in range(n)]


def test_tensors_changed_in_place_outside_the_model_are_changed_once_per_call(c_backend, rng):
    """A step counter and an average of the weights, kept by the step: the third call's check
    replays the step and must put them back, or they would be changed twice."""
    kept = []

    def make(model, opt):
        state = {"steps": tg.zeros(()), "average": tg.tensor(model[0].weight.data.copy())}
        kept.append(state)

        def step(x, y):
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(x), y)
            loss.backward()
            opt.step()
            with tg.no_grad():
                state["steps"] += 1
                state["average"] *= 0.9
                state["average"] += 0.1 * model[0].weight
            return loss
        return step
    eager_and_jitted(make, some_calls(rng))
    eager, jitted = kept
    assert eager["steps"].item() == jitted["steps"].item() == 6
    assert np.array_equal(eager["average"].data, jitted["average"].data)


def test_gradients_of_zero_d_tensors_replay_as_eager(c_backend, rng):
    """NumPy makes scalars of 0-d results; the engine hands on arrays, which a replay can fill."""
    def make(model, opt):
        return minimizing(opt, lambda x, y: nn.MSELoss()(model(x), x[:, :3]).sqrt() + (model(x).mean() - 1) ** 2)
    (eager, m1), (jitted, m2) = eager_and_jitted(make, some_calls(rng))
    assert [t.item() for t in eager] == [t.item() for t in jitted]
    assert_same_state(m1, m2)


def test_a_linear_layer_on_a_transposed_batch_copies_it_on_every_replay(c_backend, rng):
    def make(model, opt):
        return minimizing(opt, lambda x, y: (model(x.transpose(1, 2)) ** 2).mean())   # (2, 4, 6): not contiguous
    calls = [(tg.tensor(rng.standard_normal((2, 6, 4)).astype(np.float32)), None) for _ in range(6)]
    (eager, m1), (jitted, m2) = eager_and_jitted(make, calls)
    assert [t.item() for t in eager] == [t.item() for t in jitted]
    assert_same_state(m1, m2)


def test_a_parameter_that_takes_the_root_gradient_as_its_grad_replays_as_eager(c_backend, rng):
    def make(model, opt):
        model.s = nn.Parameter(np.full(1, 0.5, np.float32))
        opt.add_param_group({"params": [model.s]})   # dL/dL below is s's gradient
        return minimizing(opt, lambda x, y: model.s + nn.CrossEntropyLoss()(model(x), y).reshape(1) * model.s)
    (eager, m1), (jitted, m2) = eager_and_jitted(make, some_calls(rng))
    assert [t.item() for t in eager] == [t.item() for t in jitted]
    assert_same_state(m1, m2)


def test_max_over_a_dimension_returns_values_and_indices(c_backend, rng):
    def make(model, opt):
        def predict(x, y):
            with tg.no_grad():
                return model(x).max(dim=1)
        return predict
    (eager, _), (jitted, _) = eager_and_jitted(make, some_calls(rng))
    for e, j in zip(eager, jitted):
        assert type(j) is type(e) and np.array_equal(j.values.data, e.values.data)
        assert np.array_equal(j.indices.data, e.indices.data)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_labels_out_of_range_raise_on_replay_as_they_do_eagerly(c_backend, fast):
    model = nn.Linear(6, 3)
    step = tg.jit(lambda x, y: nn.NLLLoss()(model(x).log_softmax(1), y))
    x = tg.ones(4, 6)
    with tg.set_fast(fast):
        for _ in range(4):
            step(x, tg.tensor([0, 1, 2, 1]))
        with pytest.raises(IndexError, match="target -1 is out of range for 3 classes"):
            step(x, tg.tensor([0, 1, -1, 1]))


def test_a_shape_that_depends_on_values_raises_on_replay(c_backend):
    model = nn.Linear(3, 1)

    def f(x, mask):
        with tg.no_grad():
            return model(x[mask]).sum()
    step, x = tg.jit(f), tg.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    for bits in ([1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1]):
        assert step(x, tg.tensor(np.array(bits, bool))).item() == f(x, tg.tensor(np.array(bits, bool))).item()
    with pytest.raises(RuntimeError, match=r"shape \(1, 3\) where the capture had \(2, 3\)"):
        step(x, tg.tensor(np.array([1, 0, 0, 0], bool)))


@pytest.mark.parametrize("change", ["float", "freeze"])
def test_a_parameter_replaced_or_frozen_after_the_capture_is_noticed_and_captured_again(c_backend, rng, change):
    calls = some_calls(rng, n=9)
    runs = []
    for wrap in (lambda f: f, tg.jit):
        tg.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        step = wrap(training_step(model, optim.SGD(model.parameters(), lr=0.1)))
        for i, args in enumerate(calls):
            if i == 5:   # after the capture: .data rebound (model.float() copies), or frozen
                model.float() if change == "float" else model[0].requires_grad_(False)
            loss = step(*args)
        runs.append((loss.item(), model))
    assert runs[0][0] == runs[1][0]
    assert_same_state(runs[0][1], runs[1][1])


# --- SGD's step fused into the weight gradients ----------------------------------------------------
def fused_weights(step):
    return str(step).count("+ SGD step of the weight")


def test_a_learning_rate_schedule_reaches_the_fused_step_without_a_new_capture(c_backend, rng):
    """The fused calls take the learning rate the optimizer has when a replay starts: a schedule
    that changes it at every call is followed, bit for bit as eager, with the one capture."""
    (m1, o1), (m2, o2) = twins(LectureMLP, lambda p: optim.SGD(p, lr=0.01))
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    for i, (x, y) in enumerate(batches(rng, (784,), [12] * 8)):
        for opt in (o1, o2):
            opt.param_groups[0]["lr"] = 0.01 / (1 + i)
        assert jitted(x, y).item() == eager(x, y).item()
        assert_same_state(m1, m2)
    assert len(jitted._captures) == 1 and fused_weights(jitted) == 5


class TiedMLP(nn.Module):
    """One Linear used twice: its gradient is the sum of two products, a NumPy step."""

    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(F.relu(self.mid(F.relu(self.mid(F.relu(self.inp(x)))))))


def test_a_weight_read_or_summed_between_its_gradient_and_the_step_is_not_fused(c_backend, rng):
    """A weight used twice (its gradient a sum), or read by the function after backward() and
    before the optimizer's step, keeps its update in the optimizer's axpy_many."""
    run_step = run_both(rng, TiedMLP, lambda p: optim.SGD(p, lr=0.1), (16,), [5], classes=3)
    # inp only: mid's gradient is a sum (NumPy), and out's update would have to move past that sum
    assert fused_weights(run_step) == 1 and "add to .grad" in str(run_step)

    def reads_a_weight(model, opt):
        def step(x, y):
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            seen = F.relu(model.layers[0].weight)   # a kernel reading W after its gradient, before the step
            opt.step()
            return seen
        return step
    (m1, o1), (m2, o2) = twins(lambda: LectureMLP((20, 12, 3)), lambda p: optim.SGD(p, lr=0.1))
    eager, jitted = reads_a_weight(m1, o1), tg.jit(reads_a_weight(m2, o2))
    for x, y in batches(rng, (20,), [4] * 5, classes=3):
        assert np.array_equal(jitted(x, y).data, eager(x, y).data)
    assert_same_state(m1, m2)
    assert fused_weights(jitted) == 1   # layers[1]'s weight only


@pytest.mark.parametrize("change", ["momentum", "a second group"])
def test_an_sgd_step_that_is_no_longer_plain_sgd_is_captured_again(c_backend, rng, change):
    (m1, o1), (m2, o2) = twins(lambda: LectureMLP((20, 12, 3)), lambda p: optim.SGD(p, lr=0.1))
    eager, jitted = training_step(m1, o1), tg.jit(training_step(m2, o2))
    data = batches(rng, (20,), [4] * 8, classes=3)
    for x, y in data[:4]:
        jitted(x, y), eager(x, y)
    assert fused_weights(jitted) == 2
    for opt, model in ((o1, m1), (o2, m2)):
        if change == "momentum":
            opt.param_groups[0]["momentum"] = 0.9
        else:   # the last layer's parameters in a group of their own
            last = list(model.layers[1].parameters())
            opt.param_groups[0]["params"] = [p for p in opt.param_groups[0]["params"] if all(p is not q for q in last)]
            opt.param_groups.append(dict(opt.param_groups[0], params=last, lr=0.05))
    for x, y in data[4:]:
        assert jitted(x, y).item() == eager(x, y).item()
        assert_same_state(m1, m2)
    assert fused_weights(jitted) == 0


# --- the program ------------------------------------------------------------------------------------
def test_the_program_prints_one_line_per_step_with_its_source_line(c_backend, rng):
    (model, opt), = twins(LectureMLP, lambda p: optim.SGD(p, lr=0.01))[:1]
    step = tg.jit(training_step(model, opt))
    assert "not called yet" in str(step)
    for x, y in batches(rng, (784,), [12] * 3):
        step(x, y)
    text = str(step).splitlines()
    program = step.program
    assert len(text) == 1 + len(program.steps)
    assert text[0].startswith("step(float32[12, 784], int64[12]):")
    kernels = [line for line in text[1:] if "  C  " in line]
    assert len([k for k in kernels if "gemm" in k]) == 5 and len([k for k in kernels if "linear_backward" in k]) == 5
    assert all("test_jit.py:" in line for line in kernels)   # the model's own line
    assert any("SGD.step" in line for line in text)


def test_the_c_table_replays_a_kernel_call_on_new_values(c_backend, rng):
    """The recorded call reads its arrays where they are at replay: new values, same pointers."""
    from tinygrad_edu.jit import Recorder
    c = tg.backend.c_kernels
    a, b = rng.random((3, 4)).astype(np.float32), rng.random((5, 4)).astype(np.float32)
    recorder = Recorder()
    c.recording.program = recorder
    try:
        out = tg.backend.gemm(a, b, trans_b=True)
        relu = tg.backend.relu(out - 1)   # out - 1 is NumPy's: not recorded, a fixed input here
    finally:
        c.recording.program = None
    table = c.CallTable([(s.kernel, s.args) for s in recorder.steps])
    a[...] = rng.random((3, 4))
    assert table.run() is None
    assert np.allclose(out, a @ b.T, rtol=1e-6) and relu.shape == (3, 5)


# --- limits: detected, or as documented ------------------------------------------------------------
def test_item_inside_a_jitted_function_raises(c_backend):
    model = nn.Linear(3, 1)

    @tg.jit
    def step(x):
        loss = model(x).sum()
        print(loss.item())
        return loss
    step(tg.ones(2, 3))   # the warm-up call runs eagerly
    with pytest.raises(RuntimeError, match=r"item\(\) inside a function captured by tinygrad_edu.jit"):
        step(tg.ones(2, 3))


def test_control_flow_that_changes_between_the_two_capture_calls_raises(c_backend):
    model = nn.Linear(3, 3)
    calls = []

    @tg.jit
    def step(x):
        calls.append(1)
        y = model(x)
        if len(calls) > 2:          # Python state: the second capture computes more
            y = y.tanh()
        return y.sum()
    step(tg.ones(2, 3))   # warm-up
    step(tg.ones(2, 3))   # first capture
    with pytest.raises(RuntimeError, match="computed different steps on its two capture calls"):
        step(tg.ones(2, 3))


def test_numpy_on_data_inside_the_function_is_caught_by_the_check_on_the_third_call(c_backend):
    """A value computed with NumPy from .data is frozen at capture: the third call replays the
    recording and finds that it does not reproduce the eager step, and the eager state stays."""
    tg.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)

    @tg.jit
    def step(x):
        opt.zero_grad()
        scale = tg.tensor(x.data.mean())          # NumPy, outside the ops: not recorded
        loss = (model(x) * scale).sum()
        loss.backward()
        opt.step()
        return loss
    step(tg.ones(2, 3))
    step(tg.ones(2, 3) * 2)
    with pytest.raises(RuntimeError, match="did not reproduce running it: the values of a"):
        step(tg.ones(2, 3) * 3)
    tg.manual_seed(0)
    twin = nn.Linear(3, 2)
    twin_opt = optim.SGD(twin.parameters(), lr=0.1)
    for k in (1, 2, 3):   # the eager steps, all three: the state the jitted function left
        twin_opt.zero_grad()
        (twin(tg.ones(2, 3) * k) * float(k)).sum().backward()
        twin_opt.step()
    assert all(np.array_equal(a.data, b.data) for a, b in zip(model.parameters(), twin.parameters()))


def test_arguments_that_cannot_be_inputs_are_refused(c_backend):
    step = tg.jit(lambda x, n: x * n)
    with pytest.raises(TypeError, match="may not require gradients"):
        step(tg.ones(2, requires_grad=True), 2)
    with pytest.raises(TypeError, match="not NumPy arrays"):
        step(np.ones(2), 2)
    with pytest.raises(TypeError, match="must be hashable"):
        step(tg.ones(2), [2])
    assert step(tg.ones(2), 3).tolist() == [3, 3] and step(tg.ones(2), 4).tolist() == [4, 4]


def test_a_label_out_of_range_at_replay_raises_before_the_weights_change(c_backend, rng):
    (model, opt), = twins(lambda: LectureMLP((6, 4, 3)), lambda p: optim.SGD(p, lr=0.1))[:1]
    step = tg.jit(training_step(model, opt))
    for x, y in batches(rng, (6,), [2] * 3, classes=3):
        step(x, y)
    weights = [p.data.copy() for p in model.parameters()]
    with pytest.raises(IndexError, match="target 7 is out of range for 3 classes"):
        step(tg.ones(2, 6), tg.tensor([0, 7]))
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))


def test_a_pooling_position_outside_its_plane_at_replay_raises_as_in_eager_mode(c_backend):
    """The replay loop (csrc/program.c) stops at a max_pool_backward that found an arg-max outside
    its plane, and the step raises the eager call's IndexError."""
    from tinygrad_edu.backend import c_kernels as ck
    from tinygrad_edu.jit import CStep, _CRun
    grad, dx = np.ones((1, 1, 2, 2), np.float32), np.empty((1, 1, 3, 3), np.float32)
    argmax = np.array([0, 1, 4, 9], np.int64).reshape(grad.shape)   # 9: past a 3x3 plane
    args = (ck._window((1, 1, 3, 3) + (1,) * 8 + (2, 2)), ck.ffi.from_buffer("float[]", grad),
            ck.ffi.from_buffer("int64_t[]", argmax), ck.ffi.from_buffer("float[]", dx))
    with pytest.raises(IndexError, match=r"argmax holds positions outside the \(3, 3\) planes"):
        _CRun([CStep(ck.lib.tge_smax_pool_backward, args)]).run()
    argmax[-1, -1, -1, -1] = 8
    _CRun([CStep(ck.lib.tge_smax_pool_backward, args)]).run()
    assert dx.ravel().tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 1]


def test_gradients_that_the_capture_set_and_the_caller_did_not_clear_raise(c_backend, rng):
    """Captured with zero_grad() outside and before each call: forgetting it later would make
    eager mode add to .grad, which the replay (that sets .grad) cannot do."""
    model = nn.Linear(4, 2)

    @tg.jit
    def step(x):
        loss = model(x).sum()
        loss.backward()
        return loss
    for _ in range(3):
        model.zero_grad()
        step(tg.ones(3, 4))
    with pytest.raises(RuntimeError, match="Call optimizer.zero_grad"):
        step(tg.ones(3, 4))


def test_an_in_place_change_the_jit_cannot_see_raises(c_backend):
    model = nn.Linear(2, 2)

    @tg.jit
    def step(x):
        loss = model(x).sum()
        model.weight._bump_version()   # as a hand-written optimizer that edits .data would
        return loss
    step(tg.ones(1, 2))   # warm-up
    with pytest.raises(RuntimeError, match="changed in place"):
        step(tg.ones(1, 2))


def test_settings_read_by_python_are_those_of_the_capture_as_documented(c_backend):
    """model.eval() after the capture does not remove the dropout the capture recorded: a new
    jit (or one made after eval()) is needed, as the docstring says."""
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    step = tg.jit(lambda x: model(x).sum())
    x = tg.ones(3, 4)
    for _ in range(4):
        step(x)
    model.eval()
    eval_value = model(x).sum().item()
    replayed = [step(x).item() for _ in range(3)]
    assert all(value != eval_value for value in replayed) and len(set(replayed)) > 1   # new masks
    assert tg.jit(lambda x: model(x).sum())(x).item() == eval_value


def test_on_the_numpy_backend_the_function_runs_eagerly_with_one_warning(rng):
    model = nn.Linear(3, 2)
    step = tg.jit(lambda x: model(x).sum())
    with tg.backend.use("numpy"):
        with pytest.warns(RuntimeWarning, match="runs eagerly"):
            first = step(tg.ones(2, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = step(tg.ones(2, 3))
    assert first.item() == second.item() == model(tg.ones(2, 3)).sum().item()


# --- random graphs ------------------------------------------------------------------------------------
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(programs(ALL_OPS), programs(MOSTLY_SUMS)))
def test_random_graphs_replay_as_eager(program):
    """test_random_graphs.py's programs (nodes and leaves used several times, broadcasting, rows
    picked with repeats) as a training step: the leaves are parameters updated by SGD, an input
    scales the loss. Five calls eagerly and jitted (a warm-up, two captures, two replays) must
    leave the same losses, parameters and gradients, bit for bit."""
    if "c" not in tg.backend.available():
        pytest.skip("the C kernels are not built")
    leaf_shapes, steps, seed = program
    leaves, weights = make_inputs(leaf_shapes, steps, seed)
    scales = [tg.tensor(np.array([s], np.float64)) for s in (1.0, 0.5, -2.0, 3.0, 0.25)]
    results = []
    with tg.backend.use("c"):
        for wrap in (lambda f: f, tg.jit):
            params = [tg.tensor(x, requires_grad=True) for x in leaves]
            step = wrap(minimizing(optim.SGD(params, lr=0.01),
                                   lambda scale: (run(tg, params, steps, weights) * scale).sum()))
            losses = [step(s).item() for s in scales]
            results.append((losses, [(p.data.copy(), None if p.grad is None else p.grad.data.copy())
                                     for p in params]))
    (eager_losses, eager_params), (jit_losses, jit_params) = results
    assert np.array_equal(eager_losses, jit_losses, equal_nan=True)
    for (p1, g1), (p2, g2) in zip(eager_params, jit_params):
        assert np.array_equal(p1, p2, equal_nan=True)
        assert (g1 is None) == (g2 is None) and (g1 is None or np.array_equal(g1, g2, equal_nan=True))
