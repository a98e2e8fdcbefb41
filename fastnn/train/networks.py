"""The demos' networks, built from :mod:`fastnn.nn` layers (also the fastnn side of
benchmark cases E1-E3). Every builder takes ``rng`` (a seed or a Generator, drawn in
layer order) and ``dtype``."""
import numpy as np


def _nn():
    from .. import nn  # imported late: `fastnn-train --help` works before anything is built
    return nn


def lenet5(*, in_channels=1, classes=10, rng=0, dtype=np.float32):
    """The course's LeNet-5 for a 32×32 input: conv 5×5 (6) → max pool 2 → conv 5×5 (16)
    → max pool 2 → FC 120 → FC 84 → 10 logits (softmax in the loss). ReLU after each
    convolution and hidden FC layer, He initialisation (the course's modern variant of
    the 1998 tanh/average-pool network)."""
    nn = _nn()
    rng = np.random.default_rng(rng)
    common = dict(rng=rng, dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, activation="relu", init="he", **common),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, activation="relu", init="he", **common),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, activation="relu", init="he", **common),
        nn.Linear(120, 84, activation="relu", init="he", **common),
        nn.Linear(84, classes, init="xavier", **common),
    )


def _conv_bn(nn, c_in, c_out, k, stride, padding, common):
    """conv without bias (batch norm's beta is the bias) → batch norm."""
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False, init="he", **common),
            nn.BatchNorm(c_out, dtype=common["dtype"])]


def identity_block(c, filters, *, f=3, rng=0, dtype=np.float32):
    """The course's identity block (course 4, week 2): conv 1×1 (F1) → BN → ReLU →
    conv f×f "same" (F2) → BN → ReLU → conv 1×1 (F3 = c) → BN, plus the input; ReLU
    after the addition."""
    nn = _nn()
    common = dict(rng=np.random.default_rng(rng), dtype=dtype)
    f1, f2 = filters
    main = nn.Sequential(*_conv_bn(nn, c, f1, 1, 1, 0, common), nn.ReLU(),
                         *_conv_bn(nn, f1, f2, f, 1, f // 2, common), nn.ReLU(),
                         *_conv_bn(nn, f2, c, 1, 1, 0, common))
    return nn.Residual(main)


def convolutional_block(c_in, filters, *, f=3, stride=2, rng=0, dtype=np.float32):
    """The course's convolutional block: the identity block's main path with stride
    ``stride`` on its first 1×1 conv and F3 channels out, and a shortcut of conv 1×1
    stride ``stride`` → BN; ReLU after the addition."""
    nn = _nn()
    common = dict(rng=np.random.default_rng(rng), dtype=dtype)
    f1, f2, f3 = filters
    main = nn.Sequential(*_conv_bn(nn, c_in, f1, 1, stride, 0, common), nn.ReLU(),
                         *_conv_bn(nn, f1, f2, f, 1, f // 2, common), nn.ReLU(),
                         *_conv_bn(nn, f2, f3, 1, 1, 0, common))
    shortcut = nn.Sequential(*_conv_bn(nn, c_in, f3, 1, stride, 0, common))
    return nn.Residual(main, shortcut)


def small_resnet(*, in_channels=1, classes=10, width=16, rng=0, dtype=np.float32):
    """A small ResNet of the course's blocks: stem conv 3×3 (width) → BN → ReLU,
    identity block, convolutional block (stride 2, 2·width channels), identity block,
    global average pool, FC to the logits. 2 identity + 1 convolutional block: the
    network of benchmark case E3."""
    nn = _nn()
    rng = np.random.default_rng(rng)
    common = dict(rng=rng, dtype=dtype)
    w, w2 = width, 2 * width
    return nn.Sequential(
        ("stem", nn.Sequential(*_conv_bn(nn, in_channels, w, 3, 1, 1, common), nn.ReLU())),
        ("block1", identity_block(w, (w // 2, w // 2), rng=rng, dtype=dtype)),
        ("block2", convolutional_block(w, (w, w, w2), rng=rng, dtype=dtype)),
        ("block3", identity_block(w2, (w, w), rng=rng, dtype=dtype)),
        ("pool", nn.GlobalAvgPool2d()),
        ("fc", nn.Linear(w2, classes, init="xavier", **common)),
    )


def char_lstm(*, vocab=64, embed=32, hidden=128, rng=0, dtype=np.float32):
    """Character language model: Embedding (vocab → embed) → LSTM (n_a = hidden, every
    step's output) → TimeDistributed Linear (hidden → vocab logits)."""
    nn = _nn()
    rng = np.random.default_rng(rng)
    common = dict(rng=rng, dtype=dtype)
    return nn.Sequential(
        ("embedding", nn.Embedding(vocab, embed, **common)),
        ("lstm", nn.LSTM(embed, hidden, return_sequences=True, **common)),
        ("out", nn.TimeDistributed(nn.Linear(hidden, vocab, init="xavier", **common))),
    )
