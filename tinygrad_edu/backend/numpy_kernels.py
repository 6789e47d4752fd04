"""The NumPy backend: every kernel on NumPy/OpenBLAS. Arguments arrive checked."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

NAME = "numpy"


def gemm(a, b, trans_a, trans_b, alpha, beta, out, bias=None):
    A = a.T if trans_a else a
    B = b.T if trans_b else b
    if beta == 0.0:
        np.matmul(A, B, out=out)
        if alpha != 1.0:
            out *= alpha
    else:
        product = A @ B
        if beta != 1.0:
            out *= beta
        out += product if alpha == 1.0 else alpha * product
    if bias is not None:
        out += bias
    return out


def batched_gemm(a, b, trans_a, trans_b, out, accumulate):
    a, b = a.swapaxes(1, 2) if trans_a else a, b.swapaxes(1, 2) if trans_b else b
    if accumulate:
        out += np.matmul(a, b)
        return out
    return np.matmul(a, b, out=out)


def linear_backward(grad, x, weight, need_dx, need_dw, need_db, out=(None, None, None)):
    dx, dw, db = out   # arrays to write into (the C backend's, which a jitted step reuses), or None
    return (np.matmul(grad, weight, out=dx) if need_dx else None,     # dL/dx = dL/dy W
            np.matmul(grad.T, x, out=dw) if need_dw else None,        # dL/dW = (dL/dy)^T x
            np.sum(grad, axis=0, out=db) if need_db else None)        # dL/db = sum over the batch


def ger(A, x, y, alpha):
    A += alpha * np.outer(x, y)
    return A


def axpy_many(alpha, xs, ys):
    for x, y in zip(xs, ys):
        y += alpha * x


def axpby_many(alpha, xs, beta, ys):
    for x, y in zip(xs, ys):
        y[...] = beta * y + alpha * x   # the right side first: x may overlap y


def relu(z):
    return np.maximum(z, 0)


# for each float size, the integer type of that size: relu_backward masks a float's bits with it
_SAME_SIZE_INT = {4: np.int32, 8: np.int64}


def relu_backward(y, grad):
    # PyTorch's rule: 0 where y <= 0, whatever grad is there; grad where y > 0 or y is NaN.
    # grad * (y > 0) breaks it (inf * 0 is NaN, and NaN y blocks), and np.where keeps it but
    # branches on every element: with a ReLU's random mask it is 1.5x slower than this at 12x512
    # and 6-13x at 128x512. Instead grad's bits are ANDed with all zeros where y <= 0, all ones
    # elsewhere: a select without branches.
    mask = np.less_equal(y, 0, out=np.empty(grad.shape, _SAME_SIZE_INT[grad.itemsize]))   # 1 or 0
    mask -= 1                                                                # 0 or -1 (all ones)
    np.bitwise_and(grad.view(mask.dtype), mask, out=mask)
    return mask.view(grad.dtype)


def cross_entropy(logits, target):
    n_classes = logits.shape[1]
    bad = np.flatnonzero(target.astype(np.uint64) >= n_classes)   # below 0 wraps to huge
    if bad.size:
        return None, None, int(bad[0])
    shifted = logits - logits.max(axis=1, keepdims=True)   # every e^ at most 1
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(target))
    losses = np.log(sums[:, 0]) - shifted[rows, target]
    dlogits = exp / sums             # softmax(z)
    dlogits[rows, target] -= 1       # - onehot(y)
    return losses, dlogits, -1


def total(x, divisor):
    return np.asarray(x.sum(dtype=np.float64) / divisor, dtype=x.dtype)


def scale_rows(x, g, divisor):
    factor = g / x.dtype.type(divisor)   # in x's dtype, as the C kernel
    return x * (factor if factor.ndim == 0 else factor[:, None])


def _padded_windows(x, window, fill):
    """x padded with ``fill`` and cut into its windows: a view (N, C, OH, OW, kh, kw)."""
    _, _, h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow = window
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    bottom = max(0, (oh - 1) * sh + span_h - top - h)    # rows the last window reads past the edge
    right = max(0, (ow - 1) * sw + span_w - left - w)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    spans = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    return spans[:, :, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw, ::dh, ::dw]


def im2col(x, window):
    n, c, _, _, kh, kw, _, _, _, _, _, _, oh, ow = window
    windows = _padded_windows(x, window, 0)                              # (N, C, OH, OW, kh, kw)
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n, oh, ow)   # a copy


def col2im(cols, window):
    n, c, h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow = window
    per_position = cols.reshape(c, kh, kw, n, oh, ow)
    padded = np.zeros((n, c, max(h + top, (oh - 1) * sh + dh * (kh - 1) + 1),
                       max(w + left, (ow - 1) * sw + dw * (kw - 1) + 1)), cols.dtype)
    for p in range(kh):          # each kernel position's entries, added back as one strided slice
        for q in range(kw):
            padded[:, :, p * dh:p * dh + (oh - 1) * sh + 1:sh,
                   q * dw:q * dw + (ow - 1) * sw + 1:sw] += per_position[:, p, q].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(padded[:, :, top:top + h, left:left + w])


def max_pool(x, window):
    n, c, h, w, kh, kw, sh, sw, _, _, top, left, oh, ow = window
    flat = _padded_windows(x, window, -np.inf).reshape(n, c, oh, ow, kh * kw)
    best = np.argmax(flat, axis=-1)                   # ties and NaN: the first, as the C kernel
    y = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    first_row = np.arange(oh)[:, None] * sh - top     # where each window starts
    first_col = np.arange(ow) * sw - left
    row, col = first_row + best // kw, first_col + best % kw
    in_padding = (row < 0) | (row >= h) | (col < 0) | (col >= w)   # a window of -inf only
    row = np.where(in_padding, np.maximum(first_row, 0), row)     # then its first real element
    col = np.where(in_padding, np.maximum(first_col, 0), col)
    return y, (row * w + col).astype(np.int64)


def max_pool_backward(grad, argmax, x_shape):
    n, c, h, w = x_shape
    outside = np.count_nonzero((argmax < 0) | (argmax >= h * w))
    if outside:
        return None, outside
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)       # where each plane starts
    dx = np.bincount((planes + argmax).ravel(), weights=grad.ravel(), minlength=n * c * h * w)
    return dx.astype(grad.dtype).reshape(x_shape), 0


def batch_major(rows, bias):
    y = np.empty((rows.shape[1], rows.shape[0]) + rows.shape[2:], rows.dtype)
    swapped = rows.swapaxes(0, 1)
    if bias is None:
        np.copyto(y, swapped)
    else:
        np.add(swapped, bias.reshape((-1,) + (1,) * (rows.ndim - 2)), out=y)
    return y


def channel_major(grad, need_sums):
    rows = np.ascontiguousarray(grad.swapaxes(0, 1))
    return rows, rows.reshape(len(rows), -1).sum(1) if need_sums else None


def winograd_tile_counts(oh, ow, m):
    """(TH, TW): how many m x m tiles of Winograd's convolution cover OH x OW outputs, each way
    (the last ones partly past the edge)."""
    return -(-oh // m), -(-ow // m)


def winograd_input(x, window, BT, m, out):
    n, c, h, w, _, _, _, _, _, _, top, left, oh, ow = window
    a = len(BT)
    th, tw = winograd_tile_counts(oh, ow, m)
    # the images in a frame of zeros covering every tile: tile (ty, tx) starts at (ty m, tx m);
    # the frame holds the padded images ((TH - 1) m + 8 >= OH + r - 1 = top + H + bottom)
    framed = np.zeros((n, c, (th - 1) * m + a, (tw - 1) * m + a), x.dtype)
    framed[:, :, top:top + h, left:left + w] = x
    s = framed.strides
    tiles = np.lib.stride_tricks.as_strided(framed, (n, c, th, tw, a, a),
                                            s[:2] + (m * s[2], m * s[3]) + s[2:])
    v = np.tensordot(np.tensordot(BT, tiles, (1, 4)), BT, (5, 1))     # (a, N, C, TH, TW, b)
    out.reshape(a, a, c, n, th, tw)[...] = v.transpose(0, 5, 2, 1, 3, 4)   # one copy, into out
    return out


def winograd_input_backward(dv, window, BT, m, out):
    n, c, h, w, _, _, _, _, _, _, top, left, oh, ow = window
    a = len(BT)
    th, tw = winograd_tile_counts(oh, ow, m)
    d = np.tensordot(np.tensordot(BT, dv.reshape(a, a, c, n, th, tw), (0, 0)), BT, (1, 0))
    d = d.transpose(2, 1, 3, 4, 0, 5)                                  # (N, C, TH, TW, p, q)
    framed = np.zeros((n, c, th * m + a, tw * m + a), dv.dtype)
    for p in range(0, a, m):             # the tiles overlap: add each m x m block of them in turn
        for q in range(0, a, m):
            block = d[..., p:p + m, q:q + m]
            bh, bw = block.shape[-2:]
            padded = np.zeros((n, c, th, tw, m, m), dv.dtype)
            padded[..., :bh, :bw] = block
            framed[:, :, p:p + th * m, q:q + tw * m] += padded.transpose(0, 1, 2, 4, 3, 5).reshape(
                n, c, th * m, tw * m)
    out[...] = framed[:, :, top:top + h, left:left + w]
    return out


def winograd_output(M, AT, bias, out):
    n, o, oh, ow = out.shape
    m, a = AT.shape
    th, tw = winograd_tile_counts(oh, ow, m)
    t = np.tensordot(np.tensordot(AT, M.reshape(a, a, o, n, th, tw), (1, 0)), AT, (1, 1))
    y = t.transpose(2, 1, 3, 0, 4, 5).reshape(n, o, th * m, tw * m)[:, :, :oh, :ow]   # (i, O, N, TH, TW, j)
    if bias is None:
        out[...] = y
    else:
        np.add(y, bias.reshape(-1, 1, 1), out=out)
    return out


def winograd_output_backward(grad, AT, out, sums, add):
    n, o, oh, ow = grad.shape
    m, a = AT.shape
    th, tw = winograd_tile_counts(oh, ow, m)
    framed = np.zeros((n, o, th * m, tw * m), grad.dtype)
    framed[:, :, :oh, :ow] = grad
    tiles = framed.reshape(n, o, th, m, tw, m)
    dm = np.tensordot(np.tensordot(AT, tiles, (0, 3)), AT, (5, 0))     # (a, N, O, TH, TW, b)
    out.reshape(a, a, o, n, th, tw)[...] = dm.transpose(0, 5, 2, 1, 3, 4)
    if sums is not None:
        totals = grad.sum((0, 2, 3), dtype=np.float64)
        sums[...] = sums + totals if add else totals
    return out, sums
