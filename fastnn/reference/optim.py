"""Reference optimizer steps: the course's update rules, one array at a time in NumPy.

Kernel signatures as docs/KERNELS.md states them: lists of C-contiguous arrays of
one dtype (parameters, gradients, and the optimizer's state arrays, all of matching
shapes), updated in place; gradients are only read. The arithmetic is the arrays'
dtype: the hyperparameters are Python floats, which NumPy rounds to that dtype
(``1 - beta`` is formed in double first, as the compiled kernels do).
"""
import numpy as np


def _decayed(g, w, weight_decay):
    """dW with L2 weight decay added (nothing added when weight_decay is 0, so an
    infinite W does not make 0 * W = NaN)."""
    return g + weight_decay * w if weight_decay != 0 else g


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """Gradient descent W -= lr dW; with momentum (velocity not None) the course's
    v = beta v + (1 - beta) dW, W -= lr v; Nesterov W -= lr (beta v + (1 - beta) dW)
    with the updated v."""
    beta = momentum
    for i, (w, g) in enumerate(zip(params, grads)):
        dw = _decayed(g, w, weight_decay)
        if velocity is None:
            w -= lr * dw
            continue
        v = velocity[i]
        v[...] = beta * v + (1 - beta) * dw
        if nesterov:
            w -= lr * (beta * v + (1 - beta) * dw)
        else:
            w -= lr * v


def rmsprop_step(params, grads, square_avg, lr, beta, eps, weight_decay):
    """The course's RMSprop: s = beta s + (1 - beta) dW^2, W -= lr dW / (sqrt(s) + eps)."""
    for w, g, s in zip(params, grads, square_avg):
        dw = _decayed(g, w, weight_decay)
        s[...] = beta * s + (1 - beta) * dw**2
        w -= lr * dw / (np.sqrt(s) + eps)


def adam_step(params, grads, v, s, t, lr, beta1, beta2, eps, weight_decay):
    """The course's Adam at step t (counted from 1): v = beta1 v + (1 - beta1) dW,
    s = beta2 s + (1 - beta2) dW^2, v^ = v / (1 - beta1^t), s^ = s / (1 - beta2^t),
    W -= lr v^ / (sqrt(s^) + eps)."""
    for w, g, vw, sw in zip(params, grads, v, s):
        dw = _decayed(g, w, weight_decay)
        vw[...] = beta1 * vw + (1 - beta1) * dw
        sw[...] = beta2 * sw + (1 - beta2) * dw**2
        v_hat = vw / (1 - beta1**t)
        s_hat = sw / (1 - beta2**t)
        w -= lr * v_hat / (np.sqrt(s_hat) + eps)
