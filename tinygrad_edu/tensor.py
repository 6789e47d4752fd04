"""The autograd core: ``Tensor``, the ``Function`` base class and the backward engine.

How a gradient travels from the loss to a weight
------------------------------------------------
1. Every differentiable op is a ``Function`` (see ``ops.py``). ``Function.apply`` runs its
   ``forward`` on NumPy arrays and, when an input requires a gradient, keeps the Function object
   as the result's ``grad_fn``: it remembers its inputs (``parents``) and whatever ``forward``
   saved for the backward pass.
2. ``loss.backward()`` sorts the graph so that every node comes after all nodes that use it, then
   walks it once from the loss, calling each node's ``backward``: the chain rule,
   dL/dinput = dL/doutput * doutput/dinput, one op at a time.
3. Each gradient handed to an input is first passed through ``unbroadcast`` (the one place where
   broadcasting is undone), then summed into the input's slot: a node used twice gets both
   contributions. Leaves (tensors made by the user, such as weights) keep theirs in ``.grad``.
4. The graph is freed as it is walked, so memory does not grow from step to step.
5. A tensor may carry hooks (``register_hook``, ``retain_grad``): the walk hands them its
   gradient once it is complete, and a hook may replace it. A tensor without hooks costs the walk
   one field read (``_hooks`` is None).
6. While ``tinygrad_edu.jit`` captures a training step, a recorder (``_capture.recorder``) is told
   of every computation made here, so the step can be replayed without the engine; otherwise it
   is None and costs one lookup per op.
"""

import contextlib
import functools
import threading

import numpy as np

# ---------------------------------------------------------------------------------------------
# dtypes: a Tensor's dtype is a NumPy dtype; these names let code say `torch.float32` as usual.
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)
DEFAULT_FLOAT = float32


def _is_float(dtype):
    return dtype.kind == "f"


def _as_array(data, dtype=None):
    """Turn user data into an ndarray with PyTorch's dtype rules.

    Python floats become float32 (the default), Python ints int64, bools bool. A NumPy array keeps
    its dtype when it is float32/float64/int64/bool; other floats become float32, other integers
    int64.
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=np.dtype(dtype))
    arr = np.array(data)
    if arr.dtype.kind == "f":
        keep_float64 = arr.dtype == float64 and isinstance(data, (np.ndarray, np.generic))
        return arr if keep_float64 or arr.dtype == float32 else arr.astype(float32)
    if arr.dtype.kind in "iu":
        return arr if arr.dtype == int64 else arr.astype(int64)
    if arr.dtype.kind == "b":
        return arr
    raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}")


# ---------------------------------------------------------------------------------------------
# Grad mode: inside `no_grad()` no graph is recorded (evaluation, optimizer steps).
class _GradMode(threading.local):
    """Per thread, as in PyTorch; every thread starts with recording on (the class default)."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    return _grad_mode.enabled


class _Capture(threading.local):
    """While ``tinygrad_edu.jit`` captures a step in this thread, ``recorder`` is told what the
    engine computes, so that the step can later be replayed without the engine (see jit.py);
    otherwise it is None and the engine runs as if it were not there."""

    recorder = None


_capture = _Capture()


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager and decorator that turns graph recording on or off."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc):
        _grad_mode.enabled = self.prev
        return False


class no_grad(set_grad_enabled):
    """``with no_grad():`` or ``@no_grad()``: compute without recording a graph."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


# ---------------------------------------------------------------------------------------------
def unbroadcast(grad, shape):
    """Undo NumPy broadcasting on a gradient: the one place where this happens.

    If ``x`` of shape ``shape`` was broadcast to ``grad.shape`` in the forward pass, every copy
    of an element contributed to the output, so its gradient is the *sum* over the copies:
    sum over the leading axes broadcasting added, and over the axes where ``x`` had size 1.
    """
    if grad.shape == shape:
        return grad
    added = grad.ndim - len(shape)
    stretched = tuple(added + i for i, n in enumerate(shape) if n == 1 and grad.shape[added + i] != 1)
    return grad.sum(axis=tuple(range(added)) + stretched, keepdims=True).reshape(shape)


class VersionCounter:
    """How many times a tensor's data has been changed in place (``+=``, ``zero_()``, an optimizer
    step). A view (``reshape``, ``.T``, ``x[1:]``, ``detach()``) shares its base's counter: the
    same memory. An op that saves a tensor for backward notes its version, and backward checks it
    (PyTorch does the same). A tensor gets its counter when it first needs one (an in-place change,
    a view); until then it is at version 0."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class Function:
    """One differentiable op. Subclasses define, side by side:

    ``forward(ctx, *arrays, **options) -> ndarray`` computes the output from input arrays and
    keeps what backward needs: ``ctx.save_for_backward(...)`` for the inputs or the output
    (checked for in-place changes, see ``check_saved_versions``), plain attributes for shapes,
    options and arrays the op made itself;
    ``backward(ctx, grad) -> tuple`` maps dL/doutput to one dL/dinput per input (``None`` where
    an input needs no gradient; ``ctx.needs_input_grad[i]`` says which do). Each gradient is a
    new array or a view of ``grad``, never an array saved on ``ctx``: the engine then owns it.

    Gradients may have the broadcast shape of the output: the engine un-broadcasts them.
    """

    parents = ()
    needs_input_grad = ()
    saved = ()               # what forward kept for backward, in the order it was saved
    saved_versions = ()      # (input index or -1 for the output, version at save, array) each
    returns_view = False     # forward may return a view of its first input (reshape, transpose)
    # forward and backward compute only through backend kernels (and views), so a step captured by
    # tinygrad_edu.jit replays their kernel calls; other ops are replayed by calling them again
    kernel_only = False

    @classmethod
    def apply(cls, *inputs, **options):
        """Run ``forward`` on the inputs' arrays. If an input requires a gradient (and no_grad is
        not on), the result is recorded: its ``grad_fn`` is this op, which keeps its inputs."""
        ctx = cls()
        arrays = [t.data for t in inputs]
        recorder = _capture.recorder
        if recorder is None:
            out = cls.run_forward(ctx, arrays, options)
        else:
            start = recorder.mark()
            out = cls.run_forward(ctx, arrays, options)
            recorder.forward(cls, ctx, inputs, arrays, options, out, start)
        needs = tuple([t._requires_grad for t in inputs])
        recording = any(needs) and _grad_mode.enabled
        result = Tensor._make(out, recording, ctx if recording else None)
        if cls.returns_view and np.may_share_memory(out, inputs[0].data):
            result._version_counter = inputs[0]._counter()   # a view: a change to one is to both
        if recording:
            ctx.parents, ctx.needs_input_grad = inputs, needs
            if ctx.saved:                    # sums and views save nothing: nothing to check later
                ctx._remember_versions(inputs, result)
        return result

    @classmethod
    def run_forward(cls, ctx, arrays, options):
        """``forward`` on arrays, its result an ndarray of the dtype PyTorch would give (what
        ``apply`` runs, and what a jitted step replays for an op that is not ``kernel_only``)."""
        out = cls.forward(ctx, *arrays, **options)
        if type(out) is not np.ndarray:   # NumPy gives 0-d results as scalars; see Tensor._make
            out = np.asarray(out)
        if out.dtype == float64 and float64 not in [a.dtype for a in arrays]:
            out = out.astype(float32)  # int / float gives float32, as in PyTorch, not float64
        return out

    def save_for_backward(self, *arrays):
        """Keep arrays for backward (read them back as ``ctx.saved``)."""
        self.saved = arrays

    def _remember_versions(self, inputs, output):
        """Note the version of each saved input or output, so backward can tell if it changed.

        Only the version is noted, not the counter: backward finds the tensor again (an input is
        in ``parents``, the output is the node being walked) and reads its counter then. A tensor
        without a counter has never been changed in place (``_bump_version`` makes one first), so
        its version is 0 and none is made for it here: most tensors never need one.
        """
        versions = []
        for array in self.saved:
            for i, t in enumerate(inputs):
                if array is t.data:
                    counter = t._version_counter
                    versions.append((i, 0 if counter is None else counter.value, array))
            if array is output.data:
                counter = output._version_counter
                versions.append((-1, 0 if counter is None else counter.value, array))
        self.saved_versions = versions

    def check_saved_versions(self, output):
        """Raise if an in-place op changed a tensor this op saved: its gradient would be wrong.
        ``output`` is the tensor this op made (the node of the graph being walked)."""
        for i, expected, array in self.saved_versions:
            counter = (output if i < 0 else self.parents[i])._version_counter
            version = 0 if counter is None else counter.value
            if version != expected:
                which = "output" if i < 0 else f"input {i}"
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: the {which} of {self.name()} (shape {array.shape}, "
                    f"{array.dtype}) is at version {version}; expected version {expected} "
                    f"instead. Change it after backward(), or out of place (x = x + 1)")

    def name(self):
        return type(self).__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"


class _FreedGraph(Function):
    """Stands in for a node whose graph was freed by an earlier backward()."""


_FREED = _FreedGraph()
_SECOND_BACKWARD = ("Trying to backward through the graph a second time: its saved values were "
                    "freed by the first backward(). Pass retain_graph=True to the first call if you "
                    "need to call backward() twice.")


def _topological_order(root):
    """Non-leaf tensors reachable from ``root``, each after every tensor it depends on.

    An explicit stack instead of recursion, so a chain of 10,000 ops does not hit Python's
    recursion limit. A tensor is known by its ``grad_fn`` (one per non-leaf tensor).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if node._ctx in visited:
            continue
        if node._ctx is _FREED:
            raise RuntimeError(_SECOND_BACKWARD)
        visited.add(node._ctx)
        stack.append((node, True))
        for parent in node._ctx.parents:
            if parent._ctx is not None and parent._ctx not in visited:
                stack.append((parent, False))
    return order


def _shares_memory(a, others):
    """Whether array ``a`` may overlap any of the arrays ``others``. NumPy points a view's ``base``
    at the array that owns its memory, and two owners are two allocations, which never overlap: so
    arrays with different owners are apart, and arrays with one owner are taken to overlap (a
    needless copy costs only time). Memory NumPy did not allocate (a buffer, a memory map) is asked
    of NumPy."""
    a_owner = a if a.base is None else a.base
    a_owns = isinstance(a_owner, np.ndarray) and a_owner.flags.owndata
    for b in others:
        b_owner = b if b.base is None else b.base
        if a_owns and isinstance(b_owner, np.ndarray) and b_owner.flags.owndata:
            if a_owner is b_owner:
                return True
        elif np.may_share_memory(a, b):
            return True
    return False


def _accumulate_leaf(leaf, grad, recorder=None):
    """dL/dleaf += grad. The first gradient becomes ``leaf.grad`` as it is (the engine owns it)."""
    if leaf.grad is None:
        flags = grad.flags
        if not (flags.c_contiguous and flags.writeable):   # a transposed or read-only view, say:
            grad = grad.copy() if recorder is None else recorder.copied(grad)   # .grad as usual
        leaf.grad = Tensor._make(grad, False, None)
        if recorder is not None:
            recorder.leaf_grad(leaf, grad)
    else:
        total = leaf.grad.data
        np.add(total, grad, out=total)
        if recorder is not None:
            recorder.leaf_grad_added(leaf, total, grad)


def _input_gradients(ctx, grad):
    """One node's step of the chain rule: ``ctx.backward`` turns dL/dnode into dL/dinput for each
    input, and each is brought to its input's shape (``unbroadcast``) and dtype. Returns the
    backward's own results and the gradients to hand on (None for an input that needs none)."""
    raw = ctx.backward(ctx, grad)   # dL/dinput = dL/dnode * dnode/dinput, per input
    handed, owned = [], []   # one per input; the arrays among them
    for parent, g in zip(ctx.parents, raw):
        if g is None or not parent._requires_grad:
            handed.append(None)
            continue
        if type(g) is not np.ndarray:   # NumPy gives 0-d results as scalars: an array is writable
            g = np.asarray(g)
        data = parent.data
        if g.shape != data.shape:
            g = unbroadcast(g, data.shape)
        if g.dtype != data.dtype:
            g = g.astype(data.dtype)
        # Each array handed on has one owner (a pending node, or a leaf's .grad), so adding
        # into a leaf's .grad in place never changes another gradient. Backward functions
        # return new arrays or views of their grad: only two results of one node can share
        # memory (a + a gives grad to both inputs), and then the second is copied.
        if owned and _shares_memory(g, owned):
            g = g.copy()
        owned.append(g)
        handed.append(g)
    return raw, handed


class RemovableHandle:
    """What ``register_hook`` and a Module's ``register_*_hook`` return: ``handle.remove()`` takes
    the hook off again, as does leaving ``with handle:``. Removing twice is harmless."""

    # How many hooks were ever registered: each one's key (removing one never removes another),
    # and what tells tinygrad_edu.jit that a hook came after it captured a step
    issued = 0

    def __init__(self, hooks, hook):
        """Register ``hook`` in ``hooks`` (id -> function, in registration order)."""
        RemovableHandle.issued += 1
        self.hooks_dict, self.id = hooks, RemovableHandle.issued
        hooks[self.id] = hook

    def remove(self):
        self.hooks_dict.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class _TensorHooks:
    """A tensor's hooks (id -> function, in registration order) and whether it keeps its
    gradient in ``.grad`` though it is not a leaf (``retain_grad``)."""

    __slots__ = ("functions", "retains_grad")

    def __init__(self):
        self.functions, self.retains_grad = {}, False


def _hook_name(hook):
    return getattr(hook, "__qualname__", None) or repr(hook)


def _read_only(array):
    """A read-only view of ``array``: what the engine lends to Python code it does not own (hooks),
    and what it keeps of an array that such code may still hold. ``_accumulate_leaf`` copies a
    read-only gradient before it becomes ``.grad``, so the engine never adds in place into memory
    that a hook saw or returned."""
    view = array.view()
    view.flags.writeable = False
    return view


def _refuse_hooks_under_capture(what):
    """Raise if tinygrad_edu.jit is capturing a step: its replays run kernels, not Python, so a
    hook would run once, at capture, and then silently never again."""
    if _capture.recorder is not None:
        raise RuntimeError(f"{what} would run inside a step captured by tinygrad_edu.jit, whose "
                           f"replays run no Python: hooks do not run inside tinygrad_edu.jit; "
                           f"compute such statistics outside the jitted step, or remove the hook")


def _run_tensor_hooks(tensor, grad):
    """Hand dL/dtensor (complete: summed over all uses) to ``tensor``'s hooks in registration
    order; a hook that returns a tensor replaces the gradient for the hooks after it and for the
    rest of the walk. Then a tensor that retains its gradient adds it to ``.grad`` (last, as in
    PyTorch, so it keeps the replaced gradient). Returns the gradient to go on with: ``grad``, or
    a read-only view when hooks saw it (they may keep it; see ``_read_only``)."""
    hooks = tensor._hooks
    if not (hooks.functions or hooks.retains_grad):   # every hook was removed
        return grad
    _refuse_hooks_under_capture("a tensor hook (register_hook or retain_grad)")
    grad = _read_only(grad)
    for hook in list(hooks.functions.values()):   # a hook may remove itself
        new = hook(Tensor._make(grad, False, None))
        if new is None:
            continue
        if not isinstance(new, Tensor):
            raise TypeError(f"hook '{_hook_name(hook)}' returned {type(new).__name__}: a tensor "
                            f"hook returns a Tensor (the new gradient) or None")
        if new.shape != grad.shape or new.dtype != grad.dtype:
            raise RuntimeError(f"hook '{_hook_name(hook)}' returned a gradient of shape {new.shape} "
                               f"and dtype {new.dtype}; the tensor's gradient has shape "
                               f"{grad.shape} and dtype {grad.dtype}")
        grad = _read_only(new.data)   # the caller's array: never written into by the engine
    if hooks.retains_grad:
        _accumulate_leaf(tensor, grad)
    return grad


def backward(root, gradient, retain_graph=False):
    """Reverse-mode differentiation: push ``gradient`` (dL/droot) back to every leaf.

    The chain rule, one node at a time from the root down. The order guarantees that when a node
    is reached, every node that used it has been walked, so its gradient dL/dnode is complete. Its
    op's ``backward`` turns that into one gradient per input, which is added to the input's total:
    a leaf's ``.grad``, or the pending gradient of an inner node.
    """
    recorder = _capture.recorder   # None unless tinygrad_edu.jit is capturing this step
    # dL/dnode of the nodes still to walk, keyed by their grad_fn; and dL/dleaf of the leaves with
    # hooks, keyed by the leaf, summed over its uses until the walk ends (when only they are left)
    grads = {root._ctx: gradient}
    for node in reversed(_topological_order(root)):
        ctx = node._ctx
        grad = grads.pop(ctx, None)             # dL/dnode, summed over all its uses
        if grad is None:
            continue                            # no gradient reached it (a branch that needs none)
        if node._hooks is not None:
            grad = _run_tensor_hooks(node, grad)
        if ctx.saved_versions:                  # raise if an in-place op changed what it saved
            ctx.check_saved_versions(node)
        if recorder is None:
            _, input_grads = _input_gradients(ctx, grad)
        else:
            start = recorder.mark()
            raw, input_grads = _input_gradients(ctx, grad)
            recorder.backward(ctx, grad, raw, input_grads, start)
        if not retain_graph:
            node._ctx = _FREED
        for parent, g in zip(ctx.parents, input_grads):
            if g is None:
                continue
            key = parent._ctx
            if key is None:
                if parent._hooks is None or not parent._hooks.functions:
                    if recorder is not None and _shares_memory(g, [gradient]):
                        g = recorder.copied(g)   # dL/droot is a constant of the program: never .grad
                    _accumulate_leaf(parent, g, recorder)     # a leaf: .grad += g
                    continue
                key = parent                                  # a leaf whose hooks see the sum
            if key in grads:                                  # used twice: add them up
                total = np.add(grads[key], g, out=np.empty(g.shape, g.dtype))
                if recorder is not None:
                    recorder.gradients_summed(grads[key], g, total)
                grads[key] = total
            else:
                grads[key] = g
    for leaf, g in grads.items():   # leaves with hooks, their gradients complete: all was walked
        _accumulate_leaf(leaf, _run_tensor_hooks(leaf, g))   # (under a jit's capture: raises)


def computed(work, *args):
    """``work(*args)``, an array computed outside the ops: a comparison, an argmax, a cast, a
    dropout mask. Nothing to differentiate, but still a computation that a step captured by
    tinygrad_edu.jit must make again on every replay, so the recorder is told of it."""
    out = np.asarray(work(*args))
    recorder = _capture.recorder
    if recorder is not None:
        recorder.computed(work, args, out)
    return out


def checked(test, *args):
    """Run ``test(*args)``, a check of values that raises on bad input (labels out of range); in a
    step captured by tinygrad_edu.jit, on every replay too, as each batch brings new values."""
    test(*args)
    recorder = _capture.recorder
    if recorder is not None:
        recorder.python_call(test, args, None)


def untracked(work, *args):
    """A tensor outside the graph holding ``computed(work, *args)``."""
    return Tensor._make(computed(work, *args), False, None)


def replayed_whole(method):
    """Mark a method that changes tensors in place with NumPy, outside the ops (an optimizer's
    ``step``). While tinygrad_edu.jit captures a step, a call is recorded as one Python call that
    every replay makes again, so its Python state (Adam's step count, a changed learning rate)
    moves on as it does when run eagerly. Otherwise it is the method itself."""
    @functools.wraps(method)
    def method_or_recorded(self, *args, **kwargs):
        recorder = _capture.recorder
        if recorder is None:
            return method(self, *args, **kwargs)
        return recorder.whole_call(method, self, args, kwargs)
    return method_or_recorded


def _arithmetic_in_place(tensor, ufunc, operand):
    """``x += y`` and the like: ``ufunc`` on ``tensor``'s data in place, a new version of it."""
    ufunc(tensor.data, operand, out=tensor.data, casting="same_kind")
    tensor._counter().value += 1


def _zero_in_place(tensor):
    tensor.data[...] = 0
    tensor._counter().value += 1


def _argmax(data, dim, keepdim):
    return np.asarray(np.argmax(data, axis=dim, keepdims=keepdim), dtype=int64)


# ---------------------------------------------------------------------------------------------
def _as_operand(value, like):
    """Wrap a Python number or array as a constant Tensor for an op with ``like``.

    A Python float takes ``like``'s float dtype, so ``x64 * 0.1`` stays exact in float64 and
    ``x32 * 0.1`` stays float32 (NumPy would promote a float64 scalar).
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return Tensor._make(value, False, None)
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        if isinstance(value, (float, np.floating)) or _is_float(like.data.dtype):
            dtype = like.data.dtype if _is_float(like.data.dtype) else DEFAULT_FLOAT
        else:
            dtype = int64 if not isinstance(value, (bool, np.bool_)) else bool_
        return Tensor._make(np.asarray(value, dtype=dtype), False, None)
    raise TypeError(f"unsupported operand of type {type(value).__name__} for a Tensor op")


class Tensor:
    """An n-dimensional array that remembers how it was computed, so it can be differentiated.

    ``data`` is the NumPy array; ``grad`` is ``None`` or a Tensor of the same shape holding
    dL/dself after ``backward()``; ``grad_fn`` is the Function that made it (``None`` for leaves).
    """

    __slots__ = ("data", "grad", "_requires_grad", "_ctx", "_version_counter", "_hooks", "__weakref__")
    __array_ufunc__ = None  # make `ndarray * Tensor` call Tensor.__rmul__, not NumPy's loop
    __hash__ = object.__hash__  # == is elementwise, so hash by identity like PyTorch

    def __init__(self, data, dtype=None, requires_grad=False):
        self.data = _as_array(data, dtype)
        self._version_counter = None
        self._hooks = None
        self.grad = None
        self._ctx = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _make(cls, data, requires_grad, ctx):
        """Fast constructor for the engine: no dtype conversions or checks.

        ``data`` is always an ndarray: NumPy arithmetic on 0-d arrays returns a NumPy scalar
        (``np.int64(2)``), which cannot be updated in place (``n_correct += ...``), so it becomes
        a 0-d array here.
        """
        if type(data) is not np.ndarray:
            data = np.asarray(data)
        t = object.__new__(Tensor)
        t.data, t.grad, t._requires_grad, t._ctx = data, None, requires_grad, ctx
        t._version_counter = None   # made when first needed (most tensors never change in place)
        t._hooks = None             # a _TensorHooks once a hook is registered (most never have one)
        return t

    # --- autograd -----------------------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if flag and not _is_float(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype "
                            f"{self.data.dtype}; convert with .float() first")
        if not flag and self._ctx is not None:
            raise RuntimeError("requires_grad can only be turned off on a leaf tensor; use .detach()")
        self._requires_grad = bool(flag)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def is_leaf(self):
        return self._ctx is None

    def backward(self, gradient=None, retain_graph=False):
        """Compute dself/dleaf for every leaf that requires a gradient, adding into ``leaf.grad``.

        Gradients *accumulate*: call ``zero_grad()`` (or set ``.grad = None``) between steps.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of "
                               "the computation had requires_grad=True (or it ran under no_grad)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient works only on a scalar, this "
                                   f"tensor has shape {self.shape}: pass gradient= of that shape")
            gradient = np.empty(self.data.shape, self.data.dtype)
            gradient.fill(1)   # dL/dL = 1
        else:
            gradient = computed(_as_array, gradient.data if isinstance(gradient, Tensor) else gradient,
                                self.data.dtype)   # made again on replay: it may be computed in the step
            if gradient.shape != self.data.shape:
                raise ValueError(f"gradient has shape {gradient.shape}, tensor has shape {self.shape}")
        recorder = _capture.recorder
        if self._ctx is None:  # a leaf: its gradient is the given one (a new array, ours)
            if self._hooks is not None:
                gradient = _run_tensor_hooks(self, gradient)
            _accumulate_leaf(self, gradient if recorder is None else recorder.copied(gradient), recorder)
            return
        backward(self, gradient, retain_graph)

    def register_hook(self, hook):
        """Call ``hook(grad)`` during every backward that reaches this tensor, with ``grad`` =
        dL/dself once it is complete (summed over every use; for a leaf, once per backward, before
        it is added to ``.grad``). ``grad`` is read-only; a hook that returns a tensor of the same
        shape and dtype replaces the gradient from then on. Hooks run in registration order.
        Returns a handle: ``handle.remove()`` takes the hook off. As ``torch.Tensor.register_hook``.
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        if self._hooks is None:
            self._hooks = _TensorHooks()
        return RemovableHandle(self._hooks.functions, hook)

    def retain_grad(self):
        """Keep dL/dself in ``.grad`` after backward though this tensor is not a leaf (inner
        gradients are otherwise dropped once used), accumulating like a leaf's. On a leaf it does
        nothing: a leaf keeps its gradient anyway."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that has requires_grad=False")
        if self._ctx is None:
            return
        if self._hooks is None:
            self._hooks = _TensorHooks()
        self._hooks.retains_grad = True

    @property
    def retains_grad(self):
        """Whether this non-leaf tensor keeps its gradient in ``.grad`` (see ``retain_grad``)."""
        return self._hooks is not None and self._hooks.retains_grad

    def detach(self):
        """The same data, cut off from the graph (an in-place change to one shows in both)."""
        t = Tensor._make(self.data, False, None)
        t._version_counter = self._counter()
        return t

    def _counter(self):
        """This tensor's ``VersionCounter``, made the first time it is asked for."""
        if self._version_counter is None:
            self._version_counter = VersionCounter()
        return self._version_counter

    @property
    def _version(self):
        """How many in-place changes this tensor's data has seen (see ``VersionCounter``)."""
        return self._counter().value

    def _bump_version(self):
        """Record an in-place change made to ``data`` directly (optimizers call this)."""
        recorder = _capture.recorder
        if recorder is not None:   # a change the jit cannot see unless it replays the whole call
            recorder.changed_in_place(self)
        counter = self._version_counter or self._counter()
        counter.value += 1

    # --- conversion and inspection ------------------------------------------------------------
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad: "
                               "use tensor.detach().numpy()")
        return self.data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def _read_on_host(self, how):
        """Before a value leaves the engine for Python: inside a step being captured by
        tinygrad_edu.jit it would be read once, at capture, and never again, so it raises."""
        recorder = _capture.recorder
        if recorder is not None:
            recorder.value_read(how)

    def item(self):
        self._read_on_host("item()")
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        self._read_on_host("tolist()")
        return self.data.tolist()

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return self.data.size

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        self._read_on_host("a tensor's truth value (if/while on a tensor)")
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.data)

    def __int__(self):
        return int(self.item())

    def __float__(self):
        return float(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iu":
            raise TypeError("only integer tensors can be used as an index")
        return int(self.item())

    def __format__(self, spec):
        if self.data.ndim == 0:
            return format(self.data.item(), spec)
        return format(repr(self), spec)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.data.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.data.dtype}")
        if self._ctx is not None and self._ctx is not _FREED:
            extras.append(f"grad_fn={self._ctx!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # --- dtype conversion (differentiable for float -> float) ---------------------------------
    def to(self, dtype):
        dtype = np.dtype(dtype)
        if dtype == self.data.dtype:
            return self
        if self.requires_grad and _is_float(dtype):
            return ops.Cast.apply(self, dtype=dtype)
        return untracked(np.ndarray.astype, self.data, dtype)

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def clone(self):
        return ops.Cast.apply(self, dtype=self.data.dtype)

    # --- in-place arithmetic: allowed where it needs no recording, and counted ------------------
    def _check_inplace(self, other=None):
        if not is_grad_enabled():
            return
        if self.requires_grad and self._ctx is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation: update weights under `with torch.no_grad():`")
        if self.requires_grad or (isinstance(other, Tensor) and other.requires_grad):
            raise RuntimeError("in-place arithmetic on a tensor that is part of a graph is not "
                               "recorded by tinygrad_edu: write `x = x + y` instead of `x += y`")

    def _inplace(self, other, ufunc):
        self._check_inplace(other)
        operand = _as_operand(other, self).data
        _arithmetic_in_place(self, ufunc, operand)
        recorder = _capture.recorder
        if recorder is not None:   # a captured step makes the same change on every replay
            recorder.python_call(_arithmetic_in_place, (self, ufunc, operand), None)
        return self

    def __iadd__(self, other):
        return self._inplace(other, np.add)

    def __isub__(self, other):
        return self._inplace(other, np.subtract)

    def __imul__(self, other):
        return self._inplace(other, np.multiply)

    def __itruediv__(self, other):
        return self._inplace(other, np.divide)

    def zero_(self):
        self._check_inplace()
        _zero_in_place(self)
        recorder = _capture.recorder
        if recorder is not None:
            recorder.python_call(_zero_in_place, (self,), None)
        return self

    # --- differentiable ops: each is one Function in ops.py ------------------------------
    def __add__(self, other):
        return ops.Add.apply(self, _as_operand(other, self))

    def __radd__(self, other):
        return ops.Add.apply(_as_operand(other, self), self)

    def __sub__(self, other):
        return ops.Sub.apply(self, _as_operand(other, self))

    def __rsub__(self, other):
        return ops.Sub.apply(_as_operand(other, self), self)

    def __mul__(self, other):
        return ops.Mul.apply(self, _as_operand(other, self))

    def __rmul__(self, other):
        return ops.Mul.apply(_as_operand(other, self), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, _as_operand(other, self))

    def __rtruediv__(self, other):
        return ops.Div.apply(_as_operand(other, self), self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("only a Python number exponent is supported: x ** 2, not x ** tensor")
        return ops.Pow.apply(self, exponent=exponent)

    def __matmul__(self, other):
        return ops.MatMul.apply(self, _as_operand(other, self))

    def __rmatmul__(self, other):
        return ops.MatMul.apply(_as_operand(other, self), self)

    def sum(self, dim=None, keepdim=False):
        return ops.Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        return ops.Mean.apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim=None, keepdim=False):
        """``x.max()`` is the largest element; ``x.max(dim)`` returns ``(values, indices)``."""
        if dim is None:
            return ops.Max.apply(self, dim=None, keepdim=False)
        indices = self.argmax(dim, keepdim=keepdim)
        return MaxResult(ops.Max.apply(self, dim=dim, keepdim=keepdim), indices)

    def argmax(self, dim=None, keepdim=False):
        return untracked(_argmax, self.data, dim, keepdim)

    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def sqrt(self):
        return ops.Sqrt.apply(self)

    def relu(self):
        return ops.ReLU.apply(self)

    def tanh(self):
        return ops.Tanh.apply(self)

    def sigmoid(self):
        return ops.Sigmoid.apply(self)

    def softmax(self, dim):
        return ops.Softmax.apply(self, dim=dim)

    def log_softmax(self, dim):
        return ops.LogSoftmax.apply(self, dim=dim)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return ops.Reshape.apply(self, shape=tuple(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.data.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.data.ndim, end_dim % self.data.ndim
        shape = self.data.shape
        return self.reshape(shape[:start] + (-1,) + shape[end + 1:])

    def unsqueeze(self, dim):
        dim = dim % (self.data.ndim + 1)
        return self.reshape(self.data.shape[:dim] + (1,) + self.data.shape[dim:])

    def squeeze(self, dim=None):
        shape = self.data.shape
        if dim is None:
            return self.reshape(tuple(n for n in shape if n != 1))
        dim = dim % self.data.ndim
        return self.reshape(shape[:dim] + shape[dim + 1:]) if shape[dim] == 1 else self

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return ops.Permute.apply(self, dims=tuple(d % self.data.ndim for d in dims))

    def transpose(self, dim0, dim1):
        dims = list(range(self.data.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return ops.Permute.apply(self, dims=tuple(dims))

    @property
    def T(self):
        return ops.Permute.apply(self, dims=tuple(reversed(range(self.data.ndim))))

    def __getitem__(self, index):
        return ops.GetItem.apply(self, index=_index_to_numpy(index))

    # --- comparisons: not differentiable, give bool tensors ------------------------------------
    def _compare(self, other, ufunc):
        return untracked(ufunc, self.data, _as_operand(other, self).data)

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)


def _index_to_numpy(index):
    """Indices may hold Tensors (``x[labels]``); NumPy wants arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


class MaxResult(tuple):
    """``(values, indices)`` from ``max(dim)``, also readable as ``.values`` and ``.indices``."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


def tensor(data, dtype=None, requires_grad=False):
    """Make a new leaf tensor (a copy of ``data``), like ``torch.tensor``."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


# The ops: imported last because each Function there subclasses `Function` above.
from . import ops  # noqa: E402

