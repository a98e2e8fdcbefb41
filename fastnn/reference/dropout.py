"""Inverted dropout, the course's (Improving Deep Neural Networks, week 1):

    D = np.random.rand(*A.shape) < keep_prob
    A = A * D
    A = A / keep_prob

The draws come from the caller (the public layer draws them from the user's
generator, so every backend sees the same mask); this kernel compares and scales.
Arrays are flat (the public layer reshapes); see docs/KERNELS.md.
"""


def dropout_forward(x, draws, keep_prob):
    """(y, state): y = x * mask / keep_prob with mask = draws < keep_prob, in x's dtype.

    draws is None when keep_prob == 1: every element is kept (a draw in [0, 1) is
    always below 1), and y is a copy of x.
    """
    if draws is None:
        return x.copy(), (None, keep_prob)
    mask = draws < keep_prob
    y = x * mask
    y = y / x.dtype.type(keep_prob)
    return y, (mask, keep_prob)


def dropout_backward(dy, state):
    """dx = dy * mask / keep_prob: the kept elements' gradients, scaled like the forward."""
    mask, keep_prob = state
    if mask is None:
        return dy.copy()
    dx = dy * mask
    return dx / dy.dtype.type(keep_prob)
