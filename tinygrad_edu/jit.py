"""``tinygrad_edu.jit``: capture a training step once, then replay it without the engine.

    @tinygrad_edu.jit
    def train_step(images, labels):
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    for images, labels in loader:
        loss = train_step(images, labels)      # a new tensor each call
    print(train_step)                          # the captured program, one line per step

How it works
------------
Eager mode does the same work every step, and most of the time at small batches goes to Python
deciding it again: making Tensors, building the graph, sorting it, checking arguments. The
kernels themselves are a small part. So the second and third calls (per shape of the inputs)
run eagerly while a ``Recorder`` listens: the engine tells it every computation it makes, and the C
backend every kernel call with its arguments (pointers into the arrays it used). What it writes
down is a *program*: a list of steps over arrays that are kept alive and reused, never freed.

- a **C step** is one kernel call (a product, a ReLU, the loss); runs of them become one table
  that ``tge_run_program`` (csrc/program.c) works through in a single call, with no Python;
- a **Python step** redoes a computation the kernels do not cover (an op of the plain NumPy
  path, the optimizer's ``step``, a NumPy product, adding up two gradients) and copies its
  result into the array the capture used, so the steps after it find it where they expect it.

The first call of a shape is a warm-up, run eagerly without recording, so that what a first
step creates (``.grad``, an optimizer's momentum) exists when the two capture calls run; they must
record the same steps. The third call also checks the first recording: after running eagerly, it
puts back the state from before the call (parameters, ``.grad``, optimizer state, the random
generator), replays the recording on the same inputs, and requires the same state and result,
bit for bit, then leaves the eager call's state. Work done outside what the recorder hears (NumPy
on a tensor's ``.data``) would be frozen at capture; this is where it is caught.

Two rewrites are made to the program, where they are safe; each gives every element the same
expression as before, so the numbers do not change:
- ``fuse_sgd_steps``: plain SGD's update of a Linear layer's weight moves into the
  ``linear_backward`` call that computed the weight's gradient, which then steps the weight one
  block of gradient rows at a time while they are in cache, instead of the optimizer reading the
  whole gradient again at the end (the MLP's step at batch 1 took 0.80x the time, at batch 12 0.95x);
- ``fuse_relus``: a ReLU right after a convolution moves into the kernels that lay out the
  convolution's output (``batch_major`` forward and ``channel_major`` backward, or Winograd's
  ``winograd_output`` and ``winograd_output_backward``), saving a pass over the activations each
  way (the CNN's step at batch 64 took 0.92x the time, at batch 12 0.94x).

Later calls with the same shapes copy the new inputs into the captured input arrays and run the
program: no Tensor, graph or argument check is made. Parameters, ``.grad`` and the optimizer's
state end where eager mode leaves them; the values are the same, bit for bit (the same kernels
run in the same order on the same numbers).

Limits (as JAX's ``jit`` and tinygrad's ``TinyJit`` have)
-------------------------------------------------------
- Only what goes through tinygrad_edu is replayed: Tensor ops, ``nn`` layers and losses,
  ``backward()``, optimizers, in-place Tensor arithmetic. NumPy on ``.data`` inside the function,
  ``print``, appending to a list: they run on the capture calls only (the third call's check
  raises where such work changes the parameters, gradients or result).
- Python control flow is decided at capture: an ``if`` on a value is frozen. The two capture
  calls must compute the same steps, or the capture raises; ``.item()``, ``.tolist()`` and
  ``bool(tensor)`` inside the function raise (return the tensor and read it outside).
- Settings read by the Python code (``model.train()``/``eval()``, ``set_fast``, the backend) are
  those of the capture. A parameter given a new array (``model.float()``, ``p.data = ...``) or
  whose ``requires_grad`` changed is noticed, and the step is captured again. The optimizer's own Python state is not frozen: its ``step`` is replayed
  as a Python call (or, for plain SGD, as its one kernel call while its learning rate and arrays
  are as captured), so a learning rate changed between calls is used.
- Tensor arguments are inputs: their values are copied in at each call; they may not require
  gradients (close over the parameters instead). Other arguments are part of the key, as JAX's
  static arguments: a new value means a new capture.
- Hooks (``register_hook``, ``retain_grad``, a Module's forward and backward hooks) are Python:
  a capture during which one would run raises, and a hook registered after a capture makes the
  next call capture again. Compute such statistics outside the jitted function.
- On the NumPy backend there is nothing to replay in C: the function runs eagerly (with a
  warning, once).
"""

import copy
import functools
import os
import sys
import threading
import warnings

import numpy as np

from . import backend, fast, random
from .tensor import (RemovableHandle, Tensor, _arithmetic_in_place, _capture, _input_gradients,
                     _shares_memory, _zero_in_place, is_grad_enabled)

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


# --- the steps of a program ------------------------------------------------------------------------
class CStep:
    """One kernel call, as the C backend made it: ``kernel`` (a cffi function) and its arguments."""

    def __init__(self, kernel, args):
        self.kernel, self.args, self.label = kernel, args, ""

    def describe(self):
        return _describe_kernel(self.kernel.__name__, self.args)


class PythonStep:
    """``work(*args)``, its array results copied into ``result`` (the arrays of the capture; None
    when ``work`` changes its arguments in place). A listing shows it as ``name(shown)``."""

    def __init__(self, work, args, result, label="", name=None, shown=None):
        self.work, self.args, self.result, self.label = work, args, result, label
        self.name = name or getattr(work, "__qualname__", type(work).__name__)
        self.shown = args if shown is None else shown

    def run(self):
        _copy_into(self.result, self.work(*self.args), self)

    def describe(self):
        shown = [_short(a) for a in self.shown if isinstance(a, (np.ndarray, int, float, tuple))]
        return f"{self.name}({', '.join(shown)})"


def _short(value):
    """An argument in a program's listing: an array by its dtype and shape, never its values."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_short, value)) + ")"
    return repr(value)


class GradStep:
    """``leaf.grad`` becomes (a Tensor of) ``array``, as the capture left it."""

    def __init__(self, leaf, array):
        self.leaf, self.array, self.label = leaf, array, "set .grad"

    def run(self):
        grad = self.leaf.grad
        if grad is None or grad.data is not self.array:
            self.leaf.grad = Tensor._make(self.array, False, None)

    def describe(self):
        return f"set .grad of a {list(self.array.shape)} parameter"


class KernelsIfUnchanged(PythonStep):
    """A call replayed whole whose work was kernel calls alone (``SGD.step`` on the fast layer
    without weight decay or Nesterov: an ``axpby_many`` for the momentum buffers, if any, and an
    ``axpy_many``). Its object's ``replay_key()`` names what the calls depend on (the learning rate,
    the momentum buffers, the arrays of the parameters and their ``.grad``): while it is what it was
    at capture, the recorded calls run in C and the versions are bumped; otherwise the call is made
    again in Python (a learning-rate schedule moved on, say), which is always right."""

    def __init__(self, work, key_of, key, kernels, bumped, label, name):
        super().__init__(work, (), None, label, name)
        self.key_of, self.key, self.kernels, self.bumped = key_of, key, kernels, bumped
        self._run = None   # the kernels' C table, made once the program is compiled

    def run(self):
        if _same_key(self.key_of(), self.key):
            self._run_kernels()
        else:
            self.work()

    def _run_kernels(self):
        if self._run is None:
            self._run = _CRun(self.kernels)
        self._run.run()
        for tensor in self.bumped:
            tensor._counter().value += 1   # as the call itself does

    def describe(self):
        kernels = ", ".join(k.describe() for k in self.kernels)
        return f"{super().describe()}: {kernels} while unchanged"


class FusedSGDStep(KernelsIfUnchanged):
    """A plain SGD step whose Linear weights are stepped inside the ``linear_backward`` calls that
    computed their gradients (``fused``, see ``fuse_sgd_steps``); its own ``axpy_many`` steps the
    rest. Its learning rate is read when a replay starts and written into those calls, so a
    schedule that changes it costs nothing; anything else about the step that changed (momentum
    switched on, a parameter list changed) makes the jit capture the step again."""

    def __init__(self, sgd, fused, kernels):
        super().__init__(sgd.work, sgd.key_of, sgd.key, kernels, sgd.bumped, sgd.label, sgd.name)
        self.fused, self.lr, self.entries = fused, sgd.key[0], []

    def locate(self, runs):
        """Find the fused calls in the program's C tables (their step is written there)."""
        where = {step: (run, i) for run in runs if isinstance(run, _CRun) for i, step in enumerate(run.steps)}
        self.entries = [where[step] for step in self.fused]

    def prepare(self):
        """Before a replay: the optimizer as captured (its gradients are not asked: the replay
        sets them), and the learning rate it has now in every fused call and in axpy_many."""
        key = self.key_of()
        if (key is None or len(key) != len(self.key)
                or not all(now[0] is then[0] for now, then in zip(key[1:], self.key[1:]))):
            raise Stale("the SGD step fused into the backward pass changed its settings or parameters")
        if key[0] != self.lr:
            self.lr = key[0]
            for run, i in self.entries:
                run.table.table[i].arg[13].d = -self.lr
            for step in self.kernels:   # axpy_many(count, alpha, ...)
                step.args = (step.args[0], -self.lr) + step.args[2:]
            self._run = None            # its table is made again, with the new alpha

    def run(self):   # prepare() made the key hold
        self._run_kernels()

    def describe(self):
        kernels = ", ".join(k.describe() for k in self.kernels) or "nothing"
        return (f"{self.name}: {len(self.fused)} weight(s) stepped with their gradients above, "
                f"then {kernels}")


def fuse_sgd_steps(steps):
    """The captured ``steps`` with plain SGD's update of each Linear weight moved into the
    ``linear_backward`` call that computed its gradient: that call steps the weight one block of
    gradient rows at a time, while the rows are in cache, instead of an ``axpy_many`` reading the
    whole gradient again at the end (for the lecture MLP's first layer at batch 12, 22% of the
    two calls' time). A weight is moved only if
    - the optimizer is SGD without momentum, weight decay or maximize, with one parameter group,
      and its step was one ``axpy_many`` per dtype (``KernelsIfUnchanged``);
    - its gradient is that call's output as it is (not a sum over two uses of the weight), and
      the call read the weight in place (not a copy);
    - both own their memory, and no step between the call and the optimizer's touches either (a
      NumPy step between, or a kernel with a pointer into them, keeps the update where it was).
    The numbers are bit for bit those of the unfused steps (the same ``w += -lr * g`` for each
    element; the third capture call checks it), and ``.grad`` still holds the gradient."""
    lib = backend.c_kernels.lib
    linear = (lib.tge_slinear_backward, lib.tge_dlinear_backward)
    axpy = (lib.tge_saxpy_many, lib.tge_daxpy_many)
    steps = list(steps)
    for k, sgd in enumerate(steps):
        if (type(sgd) is not KernelsIfUnchanged or not isinstance(sgd.key, list)
                or any(not isinstance(v, tuple) for v in sgd.key[1:])   # a second group's lr
                or not all(s.kernel in axpy for s in sgd.kernels)):
            continue   # not plain SGD with one parameter group
        owners = {_address(p): p for p, g in sgd.key[1:] if p.flags.owndata}
        owners.update((_address(g), g) for p, g in sgd.key[1:] if g is not None and g.flags.owndata)
        fused, kernels = [], []
        for call in sgd.kernels:
            count, alpha, sizes, xs, ys, threads = call.args
            kept = []
            for size, x, y in zip(sizes, xs, ys):
                producer = _weight_gradient_call(steps, k, x, y, size, owners, linear)
                if producer is None:
                    kept.append((size, x, y))
                    continue
                a = producer.args
                producer.args = a[:12] + (y, alpha) + a[14:]   # WS = the weight, step = -lr
                fused.append(producer)
            if kept:
                sizes, xs, ys = (list(v) for v in zip(*kept))
                kernels.append(CStep(call.kernel, (len(sizes), alpha, sizes, xs, ys, threads)))
        if fused:
            steps[k] = FusedSGDStep(sgd, fused, kernels)
    return steps


def fuse_relus(steps, outputs):
    """The captured ``steps`` with each ReLU right after a convolution moved into the kernels
    that lay the convolution's output out (the lecture CNN: Conv2d, then ReLU). On im2col's path,
    forward, ``batch_major`` writes max(rows + bias, 0) straight into the ReLU's output, and
    backward, ``channel_major`` masks dL/dy as ``relu_backward`` does while it swaps the axes
    (``_fuse_pairs``); on Winograd's, ``winograd_output`` and ``winograd_output_backward`` do the
    same, one chunk of images at a time (``_fuse_into_chunks``). Two passes over the activations
    are gone each way (the CNN's step at batch 64 took 0.92x the time, at batch 12 0.94x, on
    im2col's path). Each element gets the same expression, so the numbers are the same, bit for
    bit (the third capture call checks it)."""
    lib = backend.c_kernels.lib
    returned = _arrays_in(outputs)
    steps = _fuse_pairs(list(steps), returned, lib)
    return _fuse_into_chunks(steps, returned, lib)


def _fuse_pairs(steps, returned, lib):
    """``batch_major`` then ``relu``, and ``relu_backward`` then ``channel_major``, fused into one
    call, when
    - the two calls are next to each other in the program (nothing runs between them), and
    - the array between them (the convolution's output z, or dL/dz) is read by no other step and
      is not returned: after fusing, nothing writes it."""
    null = backend.c_kernels.ffi.NULL
    batch_major, relu = (lib.tge_sbatch_major, lib.tge_dbatch_major), (lib.tge_srelu, lib.tge_drelu)
    channel_major = (lib.tge_schannel_major, lib.tge_dchannel_major)
    relu_backward = (lib.tge_srelu_backward, lib.tge_drelu_backward)
    k = 0
    while k + 1 < len(steps):
        first, second = steps[k], steps[k + 1]
        if not (isinstance(first, CStep) and isinstance(second, CStep)):
            k += 1
            continue
        if (first.kernel in batch_major and second.kernel in relu and not first.args[5]
                and batch_major.index(first.kernel) == relu.index(second.kernel)):
            o, n, p, rows, bias, _, z, threads = first.args
            size, z_read, y = second.args
            if (size == o * n * p and _address(z_read) == _address(z)
                    and _unread(z, size, _itemsize(first.kernel), steps, (k, k + 1), returned)):
                steps[k:k + 2] = [CStep(first.kernel, (o, n, p, rows, bias, 1, y, threads))]
                steps[k].label = first.label
        elif (first.kernel in relu_backward and second.kernel in channel_major
                and second.args[4] == null
                and relu_backward.index(first.kernel) == channel_major.index(second.kernel)):
            size, y, g, dz = first.args
            n, o, p, dz_read, _, rows, sums, threads = second.args
            if (size == n * o * p and _address(dz_read) == _address(dz)
                    and _unread(dz, size, _itemsize(second.kernel), steps, (k, k + 1), returned)):
                steps[k:k + 2] = [CStep(second.kernel, (n, o, p, g, y, rows, sums, threads))]
                steps[k].label = second.label
        k += 1
    return steps


def _fuse_into_chunks(steps, returned, lib):
    """A ReLU on a convolution's output z that Winograd's ``winograd_output`` calls wrote, one
    chunk of images each, moves into those calls (each then writes max(. , 0) into its slice of
    the ReLU's output y), and a ``relu_backward`` whose dL/dz the ``winograd_output_backward``
    calls read, chunk by chunk, moves into them (each masks its slice of dL/dy by its slice of y).
    Fused only if the chunks' slices cover z exactly, nothing else reads or writes z (or dL/dz) and
    it is not returned, and nothing between the first and the last call involved touches y (or
    dL/dy and y): those are now read or written earlier, or later, than before."""
    null = backend.c_kernels.ffi.NULL
    relu, relu_backward = (lib.tge_srelu, lib.tge_drelu), (lib.tge_srelu_backward, lib.tge_drelu_backward)
    output = (lib.tge_swinograd_output, lib.tge_dwinograd_output)
    output_backward = (lib.tge_swinograd_output_backward, lib.tge_dwinograd_output_backward)
    j = 0
    while j < len(steps):
        step = steps[j]
        forward = isinstance(step, CStep) and step.kernel in relu
        if not (forward or isinstance(step, CStep) and step.kernel in relu_backward):
            j += 1
            continue
        double = (relu if forward else relu_backward).index(step.kernel)
        item = _itemsize(step.kernel)
        if forward:   # relu(size, z, y): the chunks write z (argument 6), no ReLU of their own
            (size, z, y), kernel, at = step.args, output[double], 6
            moved = [y]
        else:         # relu_backward(size, y, dL/dy, dL/dz): the chunks read dL/dz (argument 3)
            (size, y, g, z), kernel, at = step.args, output_backward[double], 3
            moved = [y, g]
        lo = _address(z)
        pieces = sorted(((_address(s.args[at]) - lo) // item, _output_size(s), i)
                        for i, s in enumerate(steps) if isinstance(s, CStep) and s.kernel is kernel
                        and lo <= _address(s.args[at]) < lo + size * item
                        and (not s.args[5] if forward else s.args[4] == null))
        chunks = sorted(i for _, _, i in pieces)
        ends = [start + part for start, part, _ in pieces]
        covered = (pieces and pieces[0][0] == 0 and ends[-1] == size                # all of z,
                   and [start for start, _, _ in pieces[1:]] == ends[:-1]          # in order,
                   and (chunks[-1] < j if forward else chunks[0] > j))             # before/after
        # the steps whose place relative to the moved reads and writes changes
        between = (range(chunks[0], j) if forward else range(j + 1, chunks[-1] + 1)) if covered else ()
        if not (covered and _unread(z, size, item, steps, set(chunks) | {j}, returned)
                and not any(_touched(a, size, item, steps, between) for a in moved)):
            j += 1
            continue
        for start, part, i in pieces:
            call, args = steps[i], list(steps[i].args)
            if forward:
                args[5], args[6] = 1, _slice(y, start, part, item)
            else:
                args[3], args[4] = _slice(g, start, part, item), _slice(y, start, part, item)
            steps[i] = CStep(call.kernel, tuple(args))
            steps[i].label = call.label
        del steps[j]
    return steps


def _slice(pointer, start, size, itemsize):
    """A pointer to ``size`` elements from element ``start`` of the memory ``pointer`` points
    into; it keeps that memory alive, as ``pointer`` does."""
    ffi = backend.c_kernels.ffi
    memory = memoryview(ffi.buffer(pointer, (start + size) * itemsize))[start * itemsize:]
    return ffi.from_buffer(ffi.getctype(ffi.typeof(pointer).item, "[]"), memory)


def _output_size(call):
    """How many numbers a Winograd output-side call writes or reads as the convolution's output:
    N O OH OW of its window."""
    w = call.args[0]
    return w.N * w.C * w.OH * w.OW


def _unread(pointer, size, itemsize, steps, skip, returned):
    """Whether the ``size`` elements (of ``itemsize`` bytes) at ``pointer``, written and read by
    the steps at indices ``skip``, are touched by no other step and are not among the
    ``returned`` arrays."""
    memory = _memory(pointer, size, itemsize)
    if any(np.may_share_memory(a, memory) for a in returned):
        return False
    return not _touched(pointer, size, itemsize, steps, [j for j in range(len(steps)) if j not in skip])


def _itemsize(kernel):
    """The bytes of an element of a kernel's arrays: tge_s... float, tge_d... double."""
    return 4 if kernel.__name__[len("tge_")] == "s" else 8


def _memory(pointer, size, itemsize):
    """The ``size`` elements at ``pointer`` as a NumPy array of bytes (to ask may_share_memory)."""
    ffi = backend.c_kernels.ffi
    return np.frombuffer(ffi.buffer(ffi.cast("char *", _address(pointer)), size * itemsize), np.uint8)


def _touched(pointer, size, itemsize, steps, indices):
    """Whether a step at one of ``indices`` may touch the ``size`` elements at ``pointer``. A
    kernel touches what its pointers point into; a Python step, the arrays it is given; a call
    replayed whole, anything, unless its object says it touches only its parameters, their
    gradients and its state (an optimizer: never an activation)."""
    lo = _address(pointer)
    hi = lo + size * itemsize
    memory = _memory(pointer, size, itemsize)
    for j in indices:
        step = steps[j]
        if isinstance(step, CStep):
            calls = [step]
        elif isinstance(step, KernelsIfUnchanged):
            calls = step.kernels
            if not _touches_only_parameters(step.work):
                return True
        elif isinstance(step, GradStep):
            if np.may_share_memory(step.array, memory):
                return True
            continue
        else:   # a PythonStep
            if isinstance(step.work, functools.partial) and not _touches_only_parameters(step.work):
                return True
            arrays = [a for v in (step.args, step.result) for a in _arrays_in(v)]
            if any(np.may_share_memory(a, memory) for a in arrays):
                return True
            continue
        if any(_reaches(q, lo, hi) for call in calls for q in _pointers(call)):
            return True
    return False


def _touches_only_parameters(call):
    """Whether a call replayed whole is a method of an object that says its replayed calls touch
    only its parameters, their gradients and its own state (the optimizers do)."""
    owner = call.args[0] if isinstance(call, functools.partial) and call.args else None
    return getattr(owner, "replay_touches_only_parameters", False) is True


def _address(value):
    """Where an array's or a C pointer's memory starts."""
    if isinstance(value, np.ndarray):
        return value.__array_interface__["data"][0]
    return int(backend.c_kernels.ffi.cast("uintptr_t", value))


def _weight_gradient_call(steps, k, x, y, size, owners, linear):
    """The linear_backward call among ``steps[:k]`` that wrote gradient ``x`` (size elements)
    of weight ``y``, if nothing after it and before step k touches either; else None."""
    gx, wy = owners.get(_address(x)), owners.get(_address(y))
    if gx is None or wy is None or gx.size != size or wy.size != size:
        return None
    spans = [(_address(a), _address(a) + a.nbytes) for a in (gx, wy)]
    for j in range(k - 1, -1, -1):
        step = steps[j]
        if isinstance(step, GradStep):
            continue
        if not isinstance(step, CStep):
            return None   # Python between: it could read or change either
        if (step.kernel in linear and step.args[10] != backend.c_kernels.ffi.NULL
                and _address(step.args[10]) == spans[0][0] and _address(step.args[7]) == spans[1][0]
                and step.args[12] == backend.c_kernels.ffi.NULL):
            return step
        if any(_reaches(p, lo, hi) for p in _pointers(step) for lo, hi in spans):
            return None
    return None


def _reaches(pointer, lo, hi):
    """Whether a kernel's pointer argument may reach into the bytes [lo, hi): an array (from
    from_buffer) if it overlaps them, a struct (a window) if it does; a bare pointer (a strided
    view's address), whose extent is not known here, if it starts before hi; NULL never."""
    ffi = backend.c_kernels.ffi
    start, kind = _address(pointer), ffi.typeof(pointer)
    if start == 0:
        return False
    if kind.kind == "array":
        return start < hi and lo < start + ffi.sizeof(pointer)
    if kind.item.kind == "struct":
        return start < hi and lo < start + ffi.sizeof(kind.item)
    return start < hi


def _pointers(call):
    """The C memory a kernel call points into: its cffi arguments (arrays made by from_buffer,
    and pointers), axpy_many's lists of them included."""
    return [p for a in call.args for p in (a if isinstance(a, list) else [a])
            if isinstance(p, backend.c_kernels.ffi.CData)]


def _same_key(a, b):
    """Keys are equal: numbers by value, arrays by identity (a kernel call points into them)."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same_key, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is b
    return a == b


class Stale(Exception):
    """A program no longer fits what it reads: the jit captures the step again."""


class ReplayError(RuntimeError):
    """A replayed step computed something the capture did not allow for."""


def _copy_into(captured, fresh, step):
    """Put a Python step's new results where the capture's are: arrays by copy; anything else
    (cross-entropy's "first bad label" number) must be what it was at capture."""
    if captured is None:
        return
    if isinstance(captured, (tuple, list)):
        if not isinstance(fresh, (tuple, list)) or len(fresh) != len(captured):
            raise ReplayError(f"replaying {step.label or step.describe()}: it returned {fresh!r}")
        for c, f in zip(captured, fresh):
            _copy_into(c, f, step)
    elif isinstance(captured, np.ndarray):
        if fresh is None:
            raise ReplayError(f"replaying {step.label or step.describe()}: it returned no array "
                              f"where the capture had one (a label out of range, say)")
        if np.shape(fresh) != captured.shape:
            raise ReplayError(f"replaying {step.label or step.describe()}: it computed an array of "
                              f"shape {np.shape(fresh)} where the capture had {captured.shape}: a "
                              f"shape that depends on values (a boolean mask, say) cannot be "
                              f"replayed; keep that outside the jitted function")
        if fresh is not captured:
            np.copyto(captured, fresh)
    elif fresh != captured:
        raise ReplayError(f"replaying {step.label or step.describe()}: it returned {fresh!r} "
                          f"where the capture had {captured!r} (a label out of range, say)")


# --- recording -----------------------------------------------------------------------------------
class Recorder:
    """What the engine (tensor.py) and the C backend tell while a step is captured. Every method
    is called right after the computation it records has run eagerly."""

    def __init__(self):
        self.steps = []
        self.first_touch = {}    # leaf -> its .grad array when the walk first reached it (or None)
        self.leaves = {}         # leaf read by an op -> (its array, requires_grad) at capture
        self._where = {}         # an op's ctx -> "file:line" of the user's code that made it
        self._whole = 0          # > 0 inside a call replayed whole (an optimizer's step)
        self._bumped = []        # the tensors such a call changed in place (versions bumped)

    def mark(self):
        return len(self.steps)

    # from the C backend (c_kernels._run and _numpy)
    def c_call(self, kernel, args):
        self.steps.append(CStep(kernel, args))

    def python_call(self, work, args, result):
        self.steps.append(PythonStep(work, args, result))

    def computed(self, work, args, result):   # tensor.computed: an array made outside the ops
        self.steps.append(PythonStep(work, args, result, f"computed  {_user_line()}"))

    # from the engine
    def forward(self, cls, ctx, inputs, arrays, options, out, start):
        for t in inputs:
            if t._ctx is None:   # a leaf: a parameter, an input, a constant; its array is read
                self.leaves[t] = (t.data, t._requires_grad)
        where = self._where[ctx] = _user_line()
        label = f"{cls.__name__}.forward  {where}"
        if any(_shares_memory(out, [a]) for a in arrays if isinstance(a, np.ndarray) and a.size):
            del self.steps[start:]          # a view of an input (reshape, transpose): no work
        elif cls.kernel_only:
            self._label(start, label)       # its kernel calls stand as they were recorded
        else:                               # redo the op in Python, into the same array
            del self.steps[start:]
            self.steps.append(PythonStep(cls.run_forward, (ctx, arrays, options), out, label,
                                         f"{cls.__name__}.forward", arrays))

    def backward(self, ctx, grad, raw, handed, start):
        label = f"{type(ctx).__name__}.backward  {self._where.get(ctx, '')}"
        unchanged = all(h is r for h, r in zip(handed, raw) if h is not None)
        if unchanged and all(_shares_memory(h, [grad]) for h in handed if h is not None):
            del self.steps[start:]          # views of dL/dnode (a reshape's gradient): no work
        elif unchanged and type(ctx).kernel_only:
            self._label(start, label)
        else:
            del self.steps[start:]
            self.steps.append(PythonStep(_handed_gradients, (ctx, grad), handed, label,
                                         f"{type(ctx).__name__}.backward", (grad,)))

    def copied(self, array):
        """A copy of ``array``, made again on every replay."""
        copy = array.copy()
        self.python_call(np.ndarray.copy, (array,), copy)
        return copy

    def gradients_summed(self, pending, grad, total):
        self.steps.append(PythonStep(np.add, (pending, grad), total, "the gradients of a tensor used twice"))

    def leaf_grad(self, leaf, array):
        self.first_touch.setdefault(leaf, None)
        self.steps.append(GradStep(leaf, array))

    def leaf_grad_added(self, leaf, total, grad):
        self.first_touch.setdefault(leaf, total)
        self.steps.append(PythonStep(np.add, (total, grad, total), total, "add to .grad"))

    def whole_call(self, method, obj, args, kwargs):
        start, bumped = self.mark(), self._bumped
        key = obj.replay_key() if hasattr(obj, "replay_key") else None
        self._whole += 1
        self._bumped = []
        try:
            result = method(obj, *args, **kwargs)
        finally:
            self._whole -= 1
            self._bumped, changed = bumped, self._bumped
        kernels = self.steps[start:]
        del self.steps[start:]
        call = functools.partial(method, obj, *args, **kwargs)
        name = f"{type(obj).__name__}.{method.__name__}"
        label = f"{name}  {_user_line()}"
        if key is not None and kernels and all(isinstance(s, CStep) for s in kernels):
            self.steps.append(KernelsIfUnchanged(call, obj.replay_key, key, kernels, changed, label, name))
        else:
            self.steps.append(PythonStep(call, (), None, label, name, args))
        return result

    def changed_in_place(self, tensor):
        if self._whole:
            self._bumped.append(tensor)
        else:
            raise RuntimeError(
                f"a tensor of shape {tensor.shape} was changed in place (its version bumped) by "
                f"code tinygrad_edu.jit cannot replay. Change tensors with Tensor ops (p -= lr * "
                f"p.grad under no_grad), or mark the method that does it with "
                f"@tinygrad_edu.tensor.replayed_whole, as the optimizers' step is")

    def value_read(self, how):
        if not self._whole:
            raise RuntimeError(
                f"{how} inside a function captured by tinygrad_edu.jit: the value would be read "
                f"once, at capture, and never when the step is replayed. Return the tensor and "
                f"read it outside: loss = step(x, y); print(loss.item())")

    def _label(self, start, label):
        for step in self.steps[start:]:
            step.label = step.label or label


def _handed_gradients(ctx, grad):
    return _input_gradients(ctx, grad)[1]


def _user_line():
    """``file:line`` of the innermost caller outside tinygrad_edu: the model's line."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


# --- a captured program -----------------------------------------------------------------------
class Program:
    """The steps of one capture, ready to replay: runs of C steps as one C table each."""

    def __init__(self, name, inputs, recorder, outputs):
        self.name, self.inputs, self.outputs = name, inputs, outputs
        self.steps = fuse_relus(fuse_sgd_steps(recorder.steps), outputs)
        self.first_touch = recorder.first_touch
        self.entry = {}    # leaf -> what its .grad must be when a replay starts (see _check_entry)
        self.leaves = list(recorder.leaves.items())   # their arrays, which the kernel calls point into
        self._runs = self._compile(self.steps)
        self.fused_sgd = [s for s in self.steps if isinstance(s, FusedSGDStep)]
        for step in self.fused_sgd:
            step.locate(self._runs)
        self.lock = threading.Lock()   # the arrays are shared: one replay at a time

    @staticmethod
    def _compile(steps):
        """The steps in order, each run of C steps merged into one C table. ``.grad`` is set just
        before the next Python step (which may read it, as an optimizer's step does) or at the
        end: kernels read the arrays, never ``.grad`` itself, so the C runs are not cut by it."""
        runs, c_steps, grads = [], [], []

        def flush():
            if c_steps:
                runs.append(_CRun(list(c_steps)))
                c_steps.clear()
            if grads:
                runs.append(_GradRun(list(grads)))
                grads.clear()

        for step in steps:
            if isinstance(step, CStep):
                c_steps.append(step)
            elif isinstance(step, GradStep):
                grads.append(step)
            else:
                flush()
                runs.append(step)
        flush()
        return runs

    def signature(self):
        """What the steps compute, to compare two captures (not where the arrays are)."""
        return [(type(s).__name__, s.describe(), s.label) for s in self.steps]

    def replay(self, inputs):
        with self.lock:
            for leaf, (data, needs_grad) in self.leaves:
                if leaf.data is not data or leaf._requires_grad != needs_grad:
                    raise Stale(f"a {list(leaf.shape)} tensor the step reads was given a new array "
                                f"(model.float(), .to(), p.data = ...) or had requires_grad changed")
            for step in self.fused_sgd:
                step.prepare()
            for buffer, tensor in zip(self.inputs, inputs):
                np.copyto(buffer, tensor.data)
            self._check_entry()
            for run in self._runs:
                run.run()
            return _rebuild(self.outputs)

    def _check_entry(self):
        for leaf, expected in self.entry.items():
            grad = leaf.grad
            if expected is None and grad is not None:
                raise RuntimeError(
                    f"the step was captured with .grad of a {list(leaf.shape)} parameter None on "
                    f"entry, so its replay sets .grad instead of adding to it, but .grad is set "
                    f"now. Call optimizer.zero_grad() inside the jitted function, or before every "
                    f"call as before the captured ones")
            if expected is not None and (grad is None or grad.data is not expected):
                raise RuntimeError(
                    f"the step was captured adding to the .grad of a {list(leaf.shape)} parameter, "
                    f"and that .grad has been replaced or cleared since. Call "
                    f"optimizer.zero_grad() inside the jitted function")

    def __str__(self):
        n_c = sum(len(s.kernels) if isinstance(s, KernelsIfUnchanged) else isinstance(s, CStep)
                  for s in self.steps)
        n_py = sum(type(s) is PythonStep for s in self.steps)
        n_runs = sum(isinstance(r, _CRun) for r in self._runs)
        lines = [f"{self.name}: {len(self.steps)} steps, {n_c} kernel calls in C (in {n_runs} "
                 f"C run{'s' * (n_runs != 1)}), {n_py} Python calls"]
        width = max([len(s.describe()) for s in self.steps] + [10])
        for i, step in enumerate(self.steps, 1):
            kind = {CStep: "C", PythonStep: "Python", GradStep: "state", KernelsIfUnchanged: "C|Py",
                    FusedSGDStep: "C"}[type(step)]
            lines.append(f"{i:4d}  {kind:<6}  {step.describe():<{width}}  {step.label}")
        return "\n".join(lines)


class _CRun:
    def __init__(self, steps):
        self.steps = steps
        self.table = backend.c_kernels.CallTable([(s.kernel, s.args) for s in steps])

    def run(self):
        failed = self.table.run()
        if failed is None:
            return
        index, status = failed
        step = self.steps[index]
        if "cross_entropy" in step.kernel.__name__:
            raise backend.label_out_of_range(*self.table.failed_label(index, status))
        if "max_pool_backward" in step.kernel.__name__:
            window = step.args[0]
            raise backend.argmax_outside_planes((window.H, window.W))
        raise MemoryError(f"replaying {step.describe()}: the kernel could not allocate scratch memory")


class _GradRun:
    def __init__(self, steps):
        self.steps = steps

    def run(self):
        for step in self.steps:
            step.run()


def _describe_kernel(name, a):
    """A kernel call in a line: its name and sizes, read from its arguments (kernels.h)."""
    kind = name[len("tge_") + 1:]                  # tge_sgemm -> gemm
    dtype = "float32" if name[len("tge_")] == "s" else "float64"
    if kind == "gemm":
        m, n, k = a[2], a[3], a[4]
        bias = " + bias" if a[13] != backend.c_kernels.ffi.NULL else ""
        return f"{dtype} gemm {m}x{k} @ {k}x{n}{bias}"
    if kind == "linear_backward":
        fused = " + SGD step of the weight" if a[12] != backend.c_kernels.ffi.NULL else ""
        return f"{dtype} linear_backward batch {a[0]}, {a[1]} -> {a[2]}{fused}"
    if kind in ("relu", "relu_backward"):
        return f"{dtype} {kind} {a[0]} elements"
    if kind == "cross_entropy":
        return f"{dtype} cross_entropy {a[0]}x{a[1]}"
    if kind == "axpy_many":
        return f"{dtype} axpy_many {a[0]} arrays"
    if kind == "axpby_many":
        return f"{dtype} axpby_many {a[0]} arrays, * {a[2]:g}"
    if kind == "ger":
        return f"{dtype} ger {a[0]}x{a[1]}"
    if kind == "total":
        return f"{dtype} total of {a[0]}" + (f", / {a[2]:g}" if a[2] != 1 else "")
    if kind == "scale_rows":
        return f"{dtype} scale_rows {a[0]}x{a[1]}" + (f", / {a[5]:g}" if a[5] != 1 else "")
    if kind == "batch_major":
        return (f"{dtype} batch_major {a[0]}x{a[1]}x{a[2]} -> {a[1]}x{a[0]}x{a[2]}"
                + (" + bias" if a[4] != backend.c_kernels.ffi.NULL else "") + (", then relu" if a[5] else ""))
    if kind == "channel_major":
        return (f"{dtype} channel_major {a[0]}x{a[1]}x{a[2]} -> {a[1]}x{a[0]}x{a[2]}"
                + (", relu_backward first" if a[4] != backend.c_kernels.ffi.NULL else "")
                + (", sums" if a[6] != backend.c_kernels.ffi.NULL else ""))
    w = a[0]   # the windows of im2col, col2im, the pools and Winograd's transforms
    if kind.startswith("winograd_output"):
        relu = (", then relu" if kind == "winograd_output" and a[5]
                else ", relu_backward first" if kind.endswith("backward") and a[4] != backend.c_kernels.ffi.NULL
                else "")
        return f"{dtype} {kind} {w.N}x{w.C}x{w.OH}x{w.OW}, {a[2]}x{a[2]} outputs a tile{relu}"
    if kind == "max_pool_backward":
        return f"{dtype} max_pool_backward {w.N}x{w.C}x{w.OH}x{w.OW} -> {w.H}x{w.W}"
    return f"{dtype} {kind} {w.N}x{w.C}x{w.H}x{w.W}, kernel {w.kh}x{w.kw} -> {w.OH}x{w.OW}"


# --- checking a program against the eager step ---------------------------------------------------
class _State:
    """What a training step changes that outlives it: the parameters' values and ``.grad``, the
    optimizers' state, the library's random generator. ``_State(program)`` copies it; ``restore``
    puts the copy back; ``first_difference`` names the first part where two copies differ."""

    def __init__(self, program):
        optimizers = [s.work.args[0] for s in program.steps if isinstance(s, PythonStep)
                      and isinstance(s.work, functools.partial) and hasattr(s.work.args[0], "state")]
        params = dict.fromkeys(program.first_touch)
        for optimizer in optimizers:
            params.update(dict.fromkeys(p for group in optimizer.param_groups for p in group["params"]))
        self.params = [(p, p.data.copy(), p.grad, None if p.grad is None else p.grad.data.copy())
                       for p in params]
        changed = dict.fromkeys(s.args[0] for s in program.steps if isinstance(s, PythonStep)
                                and s.work in (_arithmetic_in_place, _zero_in_place))   # x += 1
        self.changed = [(t, t.data.copy(), t._counter().value) for t in changed if t not in params]
        self.optimizers = [(o, _copy_state(o.state)) for o in optimizers]
        self.random = random.generator().bit_generator.state

    def restore(self):
        for p, data, grad, grad_data in self.params:
            np.copyto(p.data, data)
            p.grad = grad
            if grad is not None:   # in place: a captured step may add into this very array
                np.copyto(grad.data, grad_data)
        for optimizer, state in self.optimizers:
            optimizer.state = _copy_state(state, into=optimizer.state)
        for tensor, data, version in self.changed:
            np.copyto(tensor.data, data)
            tensor._counter().value = version
        random.generator().bit_generator.state = self.random

    def first_difference(self, other):
        for (p, data, _, grad), (_, data2, _, grad2) in zip(self.params, other.params):
            if not _same(data, data2):
                return f"the values of a {list(p.shape)} parameter"
            if (grad is None) != (grad2 is None) or (grad is not None and not _same(grad, grad2)):
                return f"the .grad of a {list(p.shape)} parameter"
        for (tensor, data, _), (_, data2, _) in zip(self.changed, other.changed):
            if not _same(data, data2):
                return f"the values of a {list(tensor.shape)} tensor changed in place"
        for (optimizer, state), (_, state2) in zip(self.optimizers, other.optimizers):
            for a, b in zip(_arrays_in(state), _arrays_in(state2)):
                if not _same(a, b):
                    return f"the state of {type(optimizer).__name__}"
        return None


def _copy_state(state, into=None):
    """An optimizer's per-parameter state, copied; its keys are the parameters themselves. With
    ``into`` (the optimizer's state now), an array that is still there with the same shape and
    dtype is written in place and kept: a replay's kernel calls point into it (SGD's momentum
    buffers), and a new array would send every later step back to Python."""
    copied = {p: copy.deepcopy(entry) for p, entry in state.items()}
    for p, entry in copied.items():
        now = (into or {}).get(p, {})
        for name, value in entry.items():
            kept = now.get(name)
            if (isinstance(value, np.ndarray) and isinstance(kept, np.ndarray)
                    and kept.shape == value.shape and kept.dtype == value.dtype):
                np.copyto(kept, value)
                entry[name] = kept
    return copied


def _same(a, b):
    """Equal bit for bit (NaN included), as a replay must be."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _arrays_in(value):
    """The arrays in ``value``: itself, or those in its dict values, tuple or list items."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays_in(v)]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays_in(v)]
    return []


# --- the decorator -------------------------------------------------------------------------------
def _rebuild(outputs):
    """The function's result with each Tensor made new (a copy of the captured array: a later
    replay overwrites that array, never a tensor the caller holds)."""
    if outputs is None:
        return None
    if isinstance(outputs, np.ndarray):
        return Tensor._make(outputs.copy(), False, None)
    items = [_rebuild(o) for o in outputs]
    return items if isinstance(outputs, list) else _same_kind_of_tuple(outputs, items)


def _flatten(result):
    if result is None:
        return []
    if isinstance(result, Tensor):
        return [result]
    return [t for r in result for t in _flatten(r)]


def _same_kind_of_tuple(like, items):
    """``items`` as a tuple of ``like``'s type: a plain tuple, or one whose constructor takes the
    items one by one (``x.max(dim)``'s (values, indices), a namedtuple)."""
    return tuple(items) if type(like) is tuple else type(like)(*items)


def _output_arrays(result, name):
    if result is None:
        return None
    if isinstance(result, Tensor):
        return result.data
    if isinstance(result, list):
        return [_output_arrays(r, name) for r in result]
    if isinstance(result, tuple):
        return _same_kind_of_tuple(result, [_output_arrays(r, name) for r in result])
    raise TypeError(f"jit: {name} returned a {type(result).__name__}; a jitted function returns "
                    f"a Tensor, a tuple or list of them, or None")


class jit:
    """Decorate a function of tensors (a training step) to capture it and replay it compiled.
    See the module's docstring for how, and for what is not captured."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = getattr(fn, "__name__", "step")
        self._captures = {}    # key -> ("warm", None), ("first", its Program) or ("ready", the
        # checked one, RemovableHandle.issued then)
        self.program = None    # the program last run (print it)
        self._warned = False

    def __call__(self, *args):
        if _capture.recorder is not None:
            raise RuntimeError(f"jit: {self.name} was called inside another function being captured")
        if backend.name() != "c":
            if not self._warned:
                warnings.warn(f"jit: the {backend.name()} backend has no C kernels to replay; "
                              f"{self.name} runs eagerly", RuntimeWarning, stacklevel=2)
                self._warned = True
            return self.fn(*args)
        key = self._key(args)
        state = self._captures.get(key)
        if state is None:   # a warm-up call, eager: state made on a first call (.grad, an
            self._captures[key] = ("warm", None)   # optimizer's buffers) is there from now on
            return self.fn(*args)
        if state[0] == "ready":
            if state[2] != RemovableHandle.issued:   # a hook came since: the replays would skip it,
                self._captures[key] = ("warm", None)   # so capture again (which refuses one that runs)
                return self.fn(*args)
            self.program = state[1]
            try:
                return state[1].replay([a for a in args if isinstance(a, Tensor)])
            except Stale:   # a parameter was replaced: forget this capture, and start again
                self._captures[key] = ("warm", None)
                return self.fn(*args)
        if state[0] == "warm":
            program, result = self._capture(args, None)
            self._captures[key] = ("first", program)
            self.program = program
            return result
        first = state[1]
        before = _State(first)
        program, result = self._capture(args, first)
        if first.signature() != program.signature():
            raise RuntimeError(self._difference(first, program))
        first.entry = program.entry   # what .grad must be on entry, as this call found it
        self._check(first, before, [a for a in args if isinstance(a, Tensor)], result)
        self._captures[key] = ("ready", first, RemovableHandle.issued)
        self.program = first
        return result

    def _check(self, program, before, inputs, result):
        """Replay ``program`` (the first capture) from the state ``before`` this call, on this
        call's inputs, and require what the eager call just left, bit for bit: something the
        function computes outside what the jit records (NumPy on ``.data``) would make it differ.
        The eager call's state is left in place either way."""
        eager = _State(program)
        before.restore()
        try:
            replayed = program.replay(inputs)
        finally:
            replayed_state = _State(program)
            eager.restore()
        difference = replayed_state.first_difference(eager)
        outputs = _flatten(replayed), _flatten(result)
        if difference is None and not all(_same(a.data, b.data) for a, b in zip(*outputs)):
            difference = "the function's result"
        if difference is not None:
            raise RuntimeError(
                f"jit: replaying {self.name} did not reproduce running it: {difference} differ. "
                f"Something in it computes outside what tinygrad_edu.jit records (NumPy on a "
                f"tensor's .data, a .grad assigned directly, a value read into Python); do that "
                f"outside the jitted function. If nothing does, one of the jit's rewrites "
                f"(fuse_sgd_steps, fuse_relus) is wrong for this program: please report it")

    def _key(self, args):
        parts = [backend.name(), is_grad_enabled(), fast.enabled()]
        for a in args:
            if isinstance(a, Tensor):
                if a.requires_grad:
                    raise TypeError(f"jit: {self.name}'s tensor arguments are inputs, copied in at "
                                    f"each call, and may not require gradients; close over the "
                                    f"parameters instead (as the model's are)")
                parts.append((a.shape, a.dtype))
            elif isinstance(a, np.ndarray):
                raise TypeError(f"jit: pass tensors to {self.name}, not NumPy arrays "
                                f"(tinygrad_edu.from_numpy wraps one without a copy)")
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(f"jit: {self.name}'s non-tensor arguments are part of the "
                                    f"capture's key and must be hashable, got a "
                                    f"{type(a).__name__}") from None
                parts.append(("static", a))
        return tuple(parts)

    def _capture(self, args, earlier):
        """Run the function eagerly on copies of the tensor arguments, recording the program.
        ``earlier`` is the program of the first capture, when this is the second."""
        inputs, call_args = [], []
        for a in args:
            if isinstance(a, Tensor):
                buffer = np.array(a.data, order="C")   # ours: each replay copies into it
                inputs.append(buffer)
                a = Tensor._make(buffer, False, None)
            call_args.append(a)
        recorder = Recorder()
        entry = {}
        if earlier is not None:   # the leaves the first capture met: their .grad on entry
            entry = {leaf: (None if leaf.grad is None else leaf.grad.data) for leaf in earlier.first_touch}
        c_recording = backend.c_kernels.recording
        _capture.recorder = c_recording.program = recorder
        try:
            result = self.fn(*call_args)
        finally:
            _capture.recorder = c_recording.program = None
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, Tensor) else repr(a) for a in args)
        program = Program(f"{self.name}({shapes})", inputs, recorder, _output_arrays(result, self.name))
        for leaf, seen in recorder.first_touch.items():
            on_entry = entry.get(leaf, "unknown")
            if seen is not None:
                program.entry[leaf] = seen                 # added to: it must still be .grad
            elif on_entry is None:
                program.entry[leaf] = None                 # adopted, and nothing cleared it
        return program, _rebuild(program.outputs)

    def _difference(self, first, second):
        a, b = first.signature(), second.signature()
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return (f"jit: {self.name} computed different steps on its two capture calls, from "
                        f"step {i + 1}: {x[1]} ({x[2]}) then {y[1]} ({y[2]}). Python control flow "
                        f"that depends on values or on state changes between calls is not "
                        f"captured; keep it outside the jitted function")
        return (f"jit: {self.name} computed {len(a)} steps on its first capture call and {len(b)} on "
                f"its second: Python control flow that depends on values or on state is not "
                f"captured; keep it outside the jitted function")

    def __str__(self):
        if self.program is None:
            return f"jit({self.name}): not called yet"
        return str(self.program)

    def __repr__(self):
        return f"<tinygrad_edu.jit of {self.name}: {len(self._captures)} capture(s)>"
