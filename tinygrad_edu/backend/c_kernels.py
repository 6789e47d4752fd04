"""The C backend: the kernels in csrc/, called through the cffi module ``tinygrad_edu._kernels``.

Arguments arrive checked (types, shapes, ``out``); what is left here is layout. C wants each
matrix as rows with a leading dimension: a row-major view is passed as is, a column-major one
(such as ``w.T``) as its transpose with the transpose flag flipped, anything else is copied.
"""

import collections
import math
import os
import threading

import numpy as np
from numpy.lib.array_utils import byte_bounds

from . import numpy_kernels

NAME = "c"
# csrc/pool.h's TGE_MAX_JOBS: no kernel is cut into more pieces than this, so more threads would
# only wait (and the pool starts no more workers)
MAX_THREADS = 64


def _threads_from_environment():
    """The kernels' thread count: $TINYGRAD_EDU_NUM_THREADS, or one per CPU (at most MAX_THREADS)."""
    value = os.environ.get("TINYGRAD_EDU_NUM_THREADS", "")
    text = value.strip()
    if not text:
        return min(os.cpu_count() or 1, MAX_THREADS)
    if not (text.isdecimal() and 1 <= int(text) <= MAX_THREADS):   # "1e10", "2.5", "-2": not counts
        raise ValueError(f"TINYGRAD_EDU_NUM_THREADS={value!r}: the C kernels' thread count must be a "
                         f"whole number from 1 to {MAX_THREADS} (no kernel is split into more pieces "
                         f"than {MAX_THREADS}); unset it for one thread per CPU")
    return int(text)


# read before the kernels are loaded, so that a bad value is an error also where they are not built
THREADS = _threads_from_environment()

from .._kernels import ffi, lib  # noqa: E402

# glibc's malloc hands a freed block of 128 KiB or more (a convolution's columns, a layer's
# activations) back to the system, and the next step's block of the same size is new memory to
# fault in page by page: the CNN's training step took ~1,500 page faults at batch 12 (4 of its
# 10 ms in the kernel) and ~3,400 at batch 64 (37.6 ms; 20.2 ms with none). Kept in the process,
# the same memory is reused every step. The blocks a training step frees are well under 32 MiB;
# a setting of the user's own (glibc's MALLOC_* variables) is left alone.
_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
KEEPS_FREED_MEMORY = (not any(v in os.environ for v in _MALLOC_SETTINGS)
                      and lib.tge_keep_freed_memory(32 << 20, 64 << 20) == 1)

# from this many multiply-adds (or elements of an SGD update) a second thread of the pool pays
# (measured, 1 vs 2 threads: 12x128 @ (64x128)^T, 98k: 4.41 vs 3.87 us; 12x128 @ (32x128)^T: no
# gain; an update of 32k floats: 4.30 vs 3.85 us, of 8k: none)
PARALLEL_MIN_FMAS = 100_000
PARALLEL_MIN_ELEMENTS = 32_768
# Every product and ReLU goes to C, however small. In a hot loop NumPy ties with our call below
# ~30k multiply-adds or ~2k elements (12x64 @ (10x64)^T + b: 2.81 us either way), but inside the
# training step, after the kernels have pushed Python's objects out of the caches, handing such
# work to NumPy made the batch-12 step 1-4 us slower (paired runs in one process).
# Our GEMM is built for thin products: at most THIN rows (a mini-batch: nn.Linear's forward and
# input gradient at batch 12) or a depth of at most THIN (its weight gradient, a sum over the
# mini-batch), which it reads in place without packing, 1.2-1.4x faster than OpenBLAS at the
# MLP's batch-12 shapes. Its packed path for the rest loses to OpenBLAS (one thread, AVX2 machine:
# 64x500 @ 500x768, conv2 of the lecture's CNN at batch 12, 855 vs 665 us, and its two gradients
# 1107 vs 780 and 620 vs 597; 64x784 @ 784x512, the MLP at batch 64, 857 vs 612; 128 rows 1.0-1.7x
# slower), and so does every product of NUMPY_FROM_FMAS multiply-adds or more, thin or not, as its
# blocks outgrow the caches (12x4096 @ 4096x4096: 25962 vs 8635 us; 512^3: 4102 vs 3038).
# On an Intel AVX-512 core the packed path runs even with OpenBLAS at conv2's shapes at batch 64
# (64x500 @ 500x4096 112 vs 112 GFLOP/s, its weight gradient 101 vs 100, its input gradient 127
# vs 113), but sending them to ours made the jitted CNN step only 3% faster (6% at batch 12):
# not worth a rule per instruction set.
# A product thin both ways (few rows and a short depth) is all stores and short k loops for ours,
# and OpenBLAS does it faster once it is more than tiny: conv1 of the lecture's CNN, 20x25 @
# 25x(N 24 24), took 1.48x OpenBLAS's time at batch 1, 1.16x at 12, 1.42x at 64 (one thread, AVX2
# machine, in turns), as did 12x12 @ 12x784 (1.72x) and 12x32 @ 32x512 (1.64x).
# On the Intel machine, with C swept in column blocks (2026-12-02), ours ran conv1 at batch 64 at
# 69 GFLOP/s against OpenBLAS's 60 (AVX-512) and 56 against 57 (both AVX2), at batch 1 at 82
# against 117: the rule stays.
THIN = 32   # csrc/gemm_impl.h's SMALL_M
NUMPY_FROM_FMAS = 1 << 25
BOTH_THIN_NUMPY_FROM_FMAS = 1 << 16
# Our GEMM is tuned for x86-64 only (AVX-512, AVX2+FMA, SSE2). Elsewhere (ARM64: an Apple-silicon
# laptop) only portable C is built, and OpenBLAS, which has kernels for those CPUs, does every
# product: the default is then never slower than NumPy's own GEMM.
TUNED = lib.tge_isa() > 0


def numpy_is_faster(m, n, k):
    """Whether an m x k @ k x n product goes to NumPy's GEMM (OpenBLAS) rather than ours."""
    fmas = m * n * k
    return (not TUNED or fmas >= NUMPY_FROM_FMAS or (m > THIN and k > THIN)
            or (m <= THIN and k <= THIN and fmas >= BOTH_THIN_NUMPY_FROM_FMAS))


# cross-entropy on this many logits or more: NumPy's vectorised exp beats our scalar loop
# (measured: 256x20 C 16.1 vs NumPy 26.3 us; 64x100 C 22.2 vs 17.7; 12x10 C 2.3 vs 9.0)
NUMPY_FROM_LOGITS = 6144
# per dtype: the cffi types of its arrays and pointers, and its kernels
_Kernels = collections.namedtuple("_Kernels", "array pointer gemm linear_backward ger axpy_many "
                                              "axpby_many relu relu_backward cross_entropy total "
                                              "scale_rows im2col col2im max_pool max_pool_backward "
                                              "batch_major channel_major winograd_input "
                                              "winograd_input_backward winograd_output "
                                              "winograd_output_backward")
_KERNELS = {
    np.dtype(np.float32): _Kernels("float[]", "float *", lib.tge_sgemm, lib.tge_slinear_backward,
                                   lib.tge_sger, lib.tge_saxpy_many, lib.tge_saxpby_many,
                                   lib.tge_srelu, lib.tge_srelu_backward, lib.tge_scross_entropy,
                                   lib.tge_stotal, lib.tge_sscale_rows, lib.tge_sim2col,
                                   lib.tge_scol2im, lib.tge_smax_pool, lib.tge_smax_pool_backward,
                                   lib.tge_sbatch_major, lib.tge_schannel_major,
                                   lib.tge_swinograd_input, lib.tge_swinograd_input_backward,
                                   lib.tge_swinograd_output, lib.tge_swinograd_output_backward),
    np.dtype(np.float64): _Kernels("double[]", "double *", lib.tge_dgemm, lib.tge_dlinear_backward,
                                   lib.tge_dger, lib.tge_daxpy_many, lib.tge_daxpby_many,
                                   lib.tge_drelu, lib.tge_drelu_backward, lib.tge_dcross_entropy,
                                   lib.tge_dtotal, lib.tge_dscale_rows, lib.tge_dim2col,
                                   lib.tge_dcol2im, lib.tge_dmax_pool, lib.tge_dmax_pool_backward,
                                   lib.tge_dbatch_major, lib.tge_dchannel_major,
                                   lib.tge_dwinograd_input, lib.tge_dwinograd_input_backward,
                                   lib.tge_dwinograd_output, lib.tge_dwinograd_output_backward),
}
ISA_NAMES = {3: "avx512", 2: "avx2", 1: "sse2", 0: "portable"}


# --- recording, for tinygrad_edu.jit ---------------------------------------------------------------
class _Recording(threading.local):
    """The program this thread's kernel calls are recorded into while ``tinygrad_edu.jit``
    captures a step, or None (the usual case: nothing is recorded)."""

    program = None


recording = _Recording()


def _run(kernel, *args):
    """Call the C function ``kernel``; while a step is captured, also record the call (the
    program keeps ``args``, and with them the arrays they point into, for its replays)."""
    program = recording.program
    if program is not None:
        program.c_call(kernel, args)
    return kernel(*args)


def _numpy(work, *args):
    """``work(*args)``: NumPy doing a kernel's work (a product OpenBLAS does faster, a copy). While
    a step is captured it is recorded too, and replayed as a Python call whose array results are
    copied into the ones of this call."""
    result = work(*args)
    program = recording.program
    if program is not None:
        program.python_call(work, args, result)
    return result


class CallTable:
    """Recorded kernel calls, ``[(kernel, args), ...]`` as ``_run`` saw them, laid out as the C
    table that ``tge_run_program`` (csrc/program.c) runs in one call: each entry names its kernel
    and holds its arguments, pointers, integers and floats as the kernel's prototype types them."""

    def __init__(self, calls):
        self.calls = calls   # keeps the arrays the pointers point into alive
        self.table = ffi.new("struct tge_call[]", len(calls))
        self._arrays = []    # C arrays made here from lists (axpy_many's sizes and pointers)
        for entry, (kernel, args) in zip(self.table, calls):
            entry.kernel = getattr(lib, "TGE_" + kernel.__name__[len("tge_"):].upper())
            for slot, ctype, value in zip(entry.arg, ffi.typeof(kernel).args, args):
                if ctype.kind == "primitive":
                    if ctype.cname in ("float", "double"):
                        slot.d = value
                    else:
                        slot.i = int(value)
                else:
                    if isinstance(value, list):
                        value = ffi.new(ffi.getctype(ctype.item, "[]"), value)
                        self._arrays.append(value)
                    slot.p = value
        self._status = ffi.new("long *")

    def run(self):
        """Run every call in order. Returns None, or ``(index, status)`` of the call that failed
        (see tge_run_program); the calls after it were not run."""
        done = lib.tge_run_program(self.table, len(self.calls), self._status)
        return None if done == len(self.calls) else (done, self._status[0])

    def failed_label(self, index, row):
        """For a cross-entropy call that found a label out of range at ``row``: that label."""
        kernel, args = self.calls[index]
        return int(ffi.cast("int64_t *", args[3])[row]), int(args[1])


def _copy(x):
    """A row-major, aligned copy of ``x``, made through ``_numpy`` (so a replay copies again)."""
    return _numpy(np.ndarray.copy, x)


def isa():
    """The instruction set the kernels run with on this CPU."""
    return ISA_NAMES[lib.tge_isa()]


def _flat(x):
    """x is a run of floats C can walk: float32/float64, C-contiguous and aligned."""
    return x.dtype in _KERNELS and x.flags.c_contiguous and x.flags.aligned


def _operand(x, trans, types):
    """``(pointer, trans, ld)`` for a matrix operand: C reads it as rows of unit stride, ``ld``
    elements apart, transposed when ``trans`` is true."""
    flags = x.flags
    if flags.aligned:  # C may assume every element sits at a multiple of its size
        # from_buffer takes contiguous arrays only, and is ~5x cheaper than going through ctypes
        if flags.c_contiguous:   # the common case: a fresh row-major array
            return ffi.from_buffer(types.array, x), trans, x.shape[1] or 1
        if flags.f_contiguous:   # column-major, such as w.T: pass its row-major transpose
            return ffi.from_buffer(types.array, x.T), not trans, x.shape[0] or 1
        item = x.itemsize
        rows, cols = x.shape
        row_stride, col_stride = x.strides
        # rows spaced out (a slice of columns), or columns spaced out (a slice of w.T): C gets
        # the address and the spacing; ctypes is the slow way, taken only for such views
        if col_stride == item and row_stride >= cols * item and row_stride % item == 0:
            return ffi.cast(types.pointer, x.ctypes.data), trans, row_stride // item
        if row_stride == item and col_stride >= rows * item and col_stride % item == 0:
            return ffi.cast(types.pointer, x.ctypes.data), not trans, col_stride // item
    # unaligned, or strided both ways (such as x[::2, ::2]): a row-major copy
    return ffi.from_buffer(types.array, _copy(x)), trans, x.shape[1] or 1


def _output(out, types):
    """``(pointer, ld)`` for a result matrix, aligned, with contiguous rows a whole number of items
    apart (checked before: the division is exact)."""
    if out.flags.c_contiguous:
        return ffi.from_buffer(types.array, out), out.shape[1] or 1
    return ffi.cast(types.pointer, out.ctypes.data), out.strides[0] // out.itemsize


def _contiguous(x, types):
    """A pointer to x's elements as one C-order run (to a row-major copy if x is not one); x's
    dtype is the one of ``types`` (checked before)."""
    flags = x.flags
    return ffi.from_buffer(types.array, x if flags.c_contiguous and flags.aligned else _copy(x))


def gemm(a, b, trans_a, trans_b, alpha, beta, out, bias=None):
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if numpy_is_faster(m, n, k):
        return _numpy(numpy_kernels.gemm, a, b, trans_a, trans_b, alpha, beta, out, bias)
    types = _KERNELS[a.dtype]
    pa, trans_a, lda = _operand(a, trans_a, types)
    pb, trans_b, ldb = _operand(b, trans_b, types)
    pc, ldc = _output(out, types)
    pbias = ffi.NULL if bias is None else _contiguous(bias, types)
    threads = THREADS if m * n * k >= PARALLEL_MIN_FMAS else 1
    if _run(types.gemm, trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, pbias, threads) != 0:
        raise MemoryError(f"gemm: could not allocate scratch memory for a {m}x{k} @ {k}x{n} product")
    return out


def batched_gemm(a, b, trans_a, trans_b, out, accumulate):
    return _numpy(numpy_kernels.batched_gemm, a, b, trans_a, trans_b, out, accumulate)


def linear_backward(grad, x, weight, need_dx, need_dw, need_db):
    # C, even for tiny layers (the products share one call's fixed cost), unless a product it
    # would make goes to NumPy by gemm's rule: dx = grad W (n x n_out @ n_out x n_in) or
    # dW = grad^T x (n_out x n @ n x n_in), past a batch of THIN
    (n, n_out), n_in = grad.shape, x.shape[1]
    dtype = grad.dtype
    dx = np.empty((n, n_in), dtype) if need_dx else None
    dw = np.empty((n_out, n_in), dtype) if need_dw else None
    db = np.empty(n_out, dtype) if need_db else None
    if (need_dx and numpy_is_faster(n, n_in, n_out)) or (need_dw and numpy_is_faster(n_out, n_in, n)):
        return _numpy(numpy_kernels.linear_backward, grad, x, weight, need_dx, need_dw, need_db, (dx, dw, db))
    types = _KERNELS[dtype]
    array = types.array
    threads = THREADS if n * n_in * n_out >= PARALLEL_MIN_FMAS else 1
    if _run(types.linear_backward, n, n_in, n_out, _contiguous(grad, types), n_out,
                             _contiguous(x, types), n_in, _contiguous(weight, types), n_in,
                             ffi.NULL if dx is None else ffi.from_buffer(array, dx),
                             ffi.NULL if dw is None else ffi.from_buffer(array, dw),
                             ffi.NULL if db is None else ffi.from_buffer(array, db),
                             ffi.NULL, 0.0, threads) != 0:   # no SGD step (the jit's fusion sets one)
        raise MemoryError(f"linear_backward: could not allocate scratch memory ({n} x {n_in} -> {n_out})")
    return dx, dw, db


def ger(A, x, y, alpha):
    types = _KERNELS[A.dtype]
    pA, lda = _output(A, types)
    _run(types.ger, A.shape[0], A.shape[1], alpha, _contiguous(x, types), _contiguous(y, types), pA, lda)
    return A


def axpy_many(alpha, xs, ys):
    _update_many("axpy_many", (alpha,), lambda xs, ys: _numpy(numpy_kernels.axpy_many, alpha, xs, ys),
                 xs, ys)


def axpby_many(alpha, xs, beta, ys):
    _update_many("axpby_many", (alpha, beta),
                 lambda xs, ys: _numpy(numpy_kernels.axpby_many, alpha, xs, beta, ys), xs, ys)


def _update_many(kind, scalars, numpy_update, xs, ys):
    """One C call per dtype updating every ``ys[i]`` from ``xs[i]`` (kernel ``kind``, taking
    ``scalars`` before the arrays); ``numpy_update(xs, ys)`` takes the pairs C cannot."""
    groups, rest_xs, rest_ys = {}, [], []   # per dtype: sizes and pointers, built in one pass
    x_owners, y_owners = [], []              # the array that allocated each one's memory
    for x, y in zip(xs, ys):
        x_flags, y_flags = x.flags, y.flags   # read once: this loop runs for every parameter
        x_owners.append(x if x_flags.owndata else _memory_owner(x))
        y_owners.append(y if y_flags.owndata else _memory_owner(y))
        if x_flags.c_contiguous and y_flags.c_contiguous and x_flags.aligned and y_flags.aligned:
            group = groups.get(y.dtype)
            if group is None:
                group = groups[y.dtype] = ([], [], [])
            array = _KERNELS[y.dtype].array
            group[0].append(y.size)
            group[1].append(ffi.from_buffer(array, x))
            group[2].append(ffi.from_buffer(array, y))
        else:
            rest_xs.append(x)
            rest_ys.append(y)
    if _may_overlap(x_owners, y_owners) and _updates_overlap(xs, ys):
        # a y listed twice (optim.SGD([w, w])), or a y that is some pair's x: C's threads would
        # race on it or read it half-updated, and splitting the pairs between C and NumPy would
        # reorder them. NumPy does the pairs one after the other, in order.
        numpy_update(xs, ys)
        return
    if rest_xs:
        numpy_update(rest_xs, rest_ys)   # views: NumPy handles them
    for dtype, (sizes, x_pointers, y_pointers) in groups.items():
        threads = THREADS if sum(sizes) >= PARALLEL_MIN_ELEMENTS else 1
        _run(getattr(_KERNELS[dtype], kind), len(sizes), *scalars, sizes, x_pointers, y_pointers, threads)


def _memory_owner(view):
    """The array whose allocation a view's memory belongs to (NumPy points a view's base straight
    at it), or None when the memory came from elsewhere (a bytes object, a memory map)."""
    base = view.base
    return base if isinstance(base, np.ndarray) and base.flags.owndata else None


def _may_overlap(x_owners, y_owners):
    """O(n): False when no y can share memory with another y or with any x, because each y lies
    in an allocation of its own that no x lies in (two allocations never overlap). xs may share
    one (they are only read). Owners are compared by id(), which Python guarantees unique among
    objects alive at the same time: the lists hold every owner for the whole check."""
    y_ids, x_ids = set(map(id, y_owners)), set(map(id, x_owners))
    return (len(y_ids) < len(y_owners) or not y_ids.isdisjoint(x_ids)
            or id(None) in y_ids or id(None) in x_ids)


def _updates_overlap(xs, ys):
    """Whether some y shares memory with another y or with any x (its own included), asked when
    ``_may_overlap`` could not rule it out (arrays in one allocation, such as disjoint slices of
    one buffer, or in foreign memory). The byte ranges, sorted by start, are swept once, where
    comparing every pair would take O(n^2) np.may_share_memory calls: a range overlaps an earlier
    one if it starts before the farthest end seen so far (of a y; or of an x too, for a y). A
    strided view's range includes its gaps: two interleaved views count as overlapping, which only
    costs speed."""
    spans = sorted([(*byte_bounds(x), False) for x in xs if x.size]
                   + [(*byte_bounds(y), True) for y in ys if y.size])
    x_end = y_end = 0
    for start, end, is_y in spans:
        if start < y_end or (is_y and start < x_end):
            return True
        if is_y:
            y_end = max(y_end, end)
        else:
            x_end = max(x_end, end)
    return False


def relu(z):
    if not _flat(z):
        return _numpy(numpy_kernels.relu, z)
    types = _KERNELS[z.dtype]
    y = np.empty(z.shape, z.dtype)   # np.empty_like costs 50% more here
    _run(types.relu, z.size, ffi.from_buffer(types.array, z), ffi.from_buffer(types.array, y))
    return y


def relu_backward(y, grad):
    if y.dtype != grad.dtype or not (_flat(y) and _flat(grad)):
        return _numpy(numpy_kernels.relu_backward, y, grad)
    types = _KERNELS[y.dtype]
    dz = np.empty(y.shape, y.dtype)
    _run(types.relu_backward, y.size, ffi.from_buffer(types.array, y), ffi.from_buffer(types.array, grad),
                        ffi.from_buffer(types.array, dz))
    return dz


def cross_entropy(logits, target):
    target_flags = target.flags
    if logits.size >= NUMPY_FROM_LOGITS or not (_flat(logits) and target_flags.c_contiguous
                                                 and target_flags.aligned):
        return _numpy(numpy_kernels.cross_entropy, logits, target)
    types = _KERNELS[logits.dtype]
    n, n_classes = logits.shape
    dlogits, losses = np.empty((n, n_classes), logits.dtype), np.empty(n, logits.dtype)
    bad = _run(types.cross_entropy, n, n_classes, ffi.from_buffer(types.array, logits),
                              ffi.from_buffer("int64_t[]", target), ffi.from_buffer(types.array, dlogits),
                              ffi.from_buffer(types.array, losses))
    return losses, dlogits, bad


def total(x, divisor):
    types = _KERNELS[x.dtype]
    out = np.empty((), x.dtype)
    _run(types.total, x.size, _contiguous(x, types), divisor, ffi.from_buffer(types.array, out))
    return out


def scale_rows(x, g, divisor):
    types = _KERNELS[x.dtype]
    out = np.empty(x.shape, x.dtype)
    _run(types.scale_rows, x.shape[0], x.shape[1], _contiguous(x, types), _contiguous(g, types),
         g.ndim, divisor, ffi.from_buffer(types.array, out))   # g.ndim: 0 one factor, 1 one per row
    return out


def _window(numbers):
    """The C struct tge_window of the 14 numbers ``backend._check_window`` returns."""
    return ffi.new("struct tge_window *", numbers)


def _threads_for(elements):
    return THREADS if elements >= PARALLEL_MIN_ELEMENTS else 1


def im2col(x, window):
    types = _KERNELS[x.dtype]
    n, c, _, _, kh, kw = window[:6]
    cols = np.empty((c * kh * kw, n) + window[12:], x.dtype)
    _run(types.im2col, _window(window), _contiguous(x, types), ffi.from_buffer(types.array, cols),
                 _threads_for(cols.size))
    return cols


def col2im(cols, window):
    types = _KERNELS[cols.dtype]
    dx = np.empty(window[:4], cols.dtype)
    _run(types.col2im, _window(window), _contiguous(cols, types), ffi.from_buffer(types.array, dx),
                 _threads_for(cols.size))
    return dx


def max_pool(x, window):
    types = _KERNELS[x.dtype]
    y = np.empty(window[:2] + window[12:], x.dtype)
    argmax = np.empty(y.shape, np.int64)
    _run(types.max_pool, _window(window), _contiguous(x, types), ffi.from_buffer(types.array, y),
                   ffi.from_buffer("int64_t[]", argmax), _threads_for(x.size))
    return y, argmax


def max_pool_backward(grad, argmax, x_shape):
    types = _KERNELS[grad.dtype]
    window = x_shape + (1,) * 8 + grad.shape[2:]     # only the sizes matter to the scatter
    dx = np.empty(x_shape, grad.dtype)
    outside = _run(types.max_pool_backward, _window(window), _contiguous(grad, types),
                   ffi.from_buffer("int64_t[]", argmax if argmax.flags.c_contiguous else _copy(argmax)),
                   ffi.from_buffer(types.array, dx))
    return dx, outside


def batch_major(rows, bias):
    types = _KERNELS[rows.dtype]
    o, n = rows.shape[:2]
    y = np.empty((n, o) + rows.shape[2:], rows.dtype)
    _run(types.batch_major, o, n, math.prod(rows.shape[2:]), _contiguous(rows, types),
         ffi.NULL if bias is None else _contiguous(bias, types), 0, ffi.from_buffer(types.array, y),
         _threads_for(y.size))
    return y


def channel_major(grad, need_sums):
    types = _KERNELS[grad.dtype]
    n, o = grad.shape[:2]
    rows = np.empty((o, n) + grad.shape[2:], grad.dtype)
    sums = np.empty(o, grad.dtype) if need_sums else None
    _run(types.channel_major, n, o, math.prod(grad.shape[2:]), _contiguous(grad, types), ffi.NULL,
         ffi.from_buffer(types.array, rows), ffi.NULL if sums is None else ffi.from_buffer(types.array, sums),
         _threads_for(rows.size))
    return rows, sums


def winograd_input(x, window, BT, m, out):
    types = _KERNELS[x.dtype]
    _run(types.winograd_input, _window(window), _contiguous(BT, types), m, _contiguous(x, types),
         ffi.from_buffer(types.array, out), _threads_for(out.size))
    return out


def winograd_input_backward(dv, window, BT, m, out):
    types = _KERNELS[dv.dtype]
    _run(types.winograd_input_backward, _window(window), _contiguous(BT, types), m,
         _contiguous(dv, types), ffi.from_buffer(types.array, out), _threads_for(dv.size))
    return out


def _output_window(y_shape):
    """The window the output side of Winograd's kernels reads: N, C (the output's O), OH, OW."""
    n, o, oh, ow = y_shape
    return (n, o, oh, ow) + (1,) * 8 + (oh, ow)


def winograd_output(M, AT, bias, out):
    types = _KERNELS[M.dtype]
    _run(types.winograd_output, _window(_output_window(out.shape)), _contiguous(AT, types),
         len(AT), _contiguous(M, types), ffi.NULL if bias is None else _contiguous(bias, types), 0,
         ffi.from_buffer(types.array, out), _threads_for(M.size))
    return out


def winograd_output_backward(grad, AT, out, sums, add):
    types = _KERNELS[grad.dtype]
    _run(types.winograd_output_backward, _window(_output_window(grad.shape)),
         _contiguous(AT, types), len(AT), _contiguous(grad, types), ffi.NULL,
         ffi.from_buffer(types.array, out),
         ffi.NULL if sums is None else ffi.from_buffer(types.array, sums), int(add),
         _threads_for(out.size))
    return out, sums
