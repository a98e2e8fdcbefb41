"""The demos of ``fastnn-train``: what each trains on, its default settings, and the run
that trains, evaluates and reports it (as plain data; :mod:`.cli` renders it)."""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import data, networks

OPTIMIZERS = ("adam", "sgd")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Demo:
    name: str
    summary: str
    defaults: dict            # epochs, batch_size, lr, optimizer
    quick: dict               # what --quick changes (epochs, max_train: training examples kept)
    bayes_error: float = None  # the course's proxy for Bayes error (human-level), None when unknown
    text: bool = False


DEMOS = {
    "lenet5": Demo("lenet5", "LeNet-5 on scikit-learn's real handwritten digits (32×32×1)",
                   dict(epochs=25, batch_size=32, lr=1e-3, optimizer="adam"),
                   dict(epochs=4), bayes_error=0.0),
    "resnet": Demo("resnet", "a small ResNet (identity + convolutional blocks, batch norm) on the digits",
                   dict(epochs=20, batch_size=32, lr=2e-3, optimizer="adam"),
                   dict(epochs=6), bayes_error=0.0),
    "char-lstm": Demo("char-lstm", "a character-level LSTM language model on the Python documentation "
                                   "(pydoc_data.topics)",
                      dict(epochs=10, batch_size=32, lr=3e-3, optimizer="adam"),
                      dict(epochs=2), text=True),
}

SEQ_LEN, EMBED, HIDDEN, VOCAB = 40, 32, 128, 64
SAMPLE_LENGTH, SAMPLE_PRIME = 300, "def "


@dataclass
class Options:
    demo: str
    epochs: int = None
    batch_size: int = None
    lr: float = None
    optimizer: str = None
    seed: int = 0
    threads: int = None
    backend: str = None
    quick: bool = False
    dtype: str = "float32"
    progress: bool = True
    temperature: float = 0.8
    max_train: int = None
    extra: dict = field(default_factory=dict)

    def resolved(self):
        """The options with every unset training setting taken from the demo (its
        quick settings under ``quick``)."""
        demo = DEMOS[self.demo]
        settings = dict(demo.defaults)
        if self.quick:
            settings.update(demo.quick)
        for key in ("epochs", "batch_size", "lr", "optimizer", "max_train"):
            if getattr(self, key) is not None:
                settings[key] = getattr(self, key)
        settings.setdefault("max_train", None)
        return settings


def diagnose(train_error, dev_error, bayes_error=None, tolerance=0.02):
    """Course 3's reading of train error against dev error: avoidable bias is train
    error − Bayes error (human-level as its proxy), variance is dev error − train error;
    the larger one, when over ``tolerance``, is what to work on. Returns a short hint."""
    variance = dev_error - train_error
    avoidable = None if bayes_error is None else train_error - bayes_error
    high_bias = avoidable is not None and avoidable > tolerance
    high_variance = variance > tolerance
    if high_bias and high_variance:
        return (f"high bias ({avoidable:.1%} avoidable) and high variance ({variance:.1%} dev gap): "
                "first a bigger network / longer training, then more data or regularisation")
    if high_bias:
        return (f"high bias ({avoidable:.1%} avoidable): a bigger network, longer training or a better "
                "optimizer")
    if high_variance:
        return (f"high variance (dev error {variance:.1%} above train): more data, regularisation "
                "(L2, dropout) or data augmentation")
    if avoidable is None:
        return (f"low variance (dev error at most {tolerance:.0%} above train); bias unknown: no human-level "
                "error for this task")
    return f"low bias and low variance (within {tolerance:.0%})"


def load_data(name, *, seed=0, dtype="float32"):
    """(Split, corpus or None) of a demo."""
    if DEMOS[name].text:
        return data.load_chars(seq_len=SEQ_LEN, max_vocab=VOCAB)
    return data.load_digits(seed=seed, dtype=dtype), None


def build_network(name, *, seed=0, dtype="float32", classes=10):
    dtype = np.dtype(dtype)
    if name == "lenet5":
        return networks.lenet5(classes=classes, rng=seed, dtype=dtype)
    if name == "resnet":
        return networks.small_resnet(classes=classes, rng=seed, dtype=dtype)
    return networks.char_lstm(vocab=classes, embed=EMBED, hidden=HIDDEN, rng=seed, dtype=dtype)


def make_optimizer(kind, params, lr):
    from .. import optim
    if kind == "adam":
        return optim.Adam(params, lr=lr)
    return optim.SGD(params, lr=lr, momentum=0.9)


def _curve(history, key):
    """A per-epoch series of a fit's history, whatever its container (a dict, or an
    object with a ``history`` dict or attributes); [] when absent."""
    for source in (getattr(history, "history", None), history):
        if isinstance(source, dict) and key in source:
            return [float(v) for v in source[key]]
    value = getattr(history, key, None)
    return [float(v) for v in value] if value is not None else []


def subset(X, y, n):
    return (X, y) if n is None or n >= len(y) else (X[:n], y[:n])


def softmax_sample(logits, temperature, rng):
    """One index drawn from softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def sample_text(model, corpus, *, length=SAMPLE_LENGTH, prime=SAMPLE_PRIME, temperature=0.8, rng=0,
                window=SEQ_LEN):
    """New text from the trained model: feed the last ``window`` characters, draw the
    next from the softmax of its last logits at ``temperature``, repeat."""
    rng = np.random.default_rng(rng)
    ids = list(corpus.encode(prime))
    for _ in range(length):
        context = np.asarray(ids[-window:], dtype=np.int64)[None, :]
        logits = model.predict(context)
        ids.append(softmax_sample(np.asarray(logits)[0, -1], temperature, rng))
    return corpus.decode(ids)


def run(options, on_ready=None):
    """Train and evaluate one demo; returns the result as plain data (see the keys
    below). ``on_ready(settings, split)`` is called once the data is loaded."""
    import fastnn
    from .. import nn

    name = options.demo
    demo = DEMOS[name]
    settings = options.resolved()
    if options.backend is not None:
        fastnn.set_backend(options.backend)
    if options.threads is not None:
        fastnn.set_num_threads(options.threads)
    split, corpus = load_data(name, seed=options.seed, dtype=options.dtype)
    classes = split.classes
    X_train, y_train = subset(split.X_train, split.y_train, settings["max_train"])
    if on_ready is not None:
        on_ready(settings, split)
    network = build_network(name, seed=options.seed, dtype=options.dtype, classes=classes)
    model = nn.Model(network, nn.SoftmaxCrossEntropy())
    optimizer = make_optimizer(settings["optimizer"], network.params, settings["lr"])
    start = time.perf_counter()
    history = model.fit(X_train, y_train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                        optimizer=optimizer, validation_data=(split.X_dev, split.y_dev),
                        rng=np.random.default_rng(options.seed), progress=options.progress)
    seconds = time.perf_counter() - start
    train = model.evaluate(X_train, y_train)
    dev = model.evaluate(split.X_dev, split.y_dev)
    test = model.evaluate(split.X_test, split.y_test)
    result = {
        "demo": name, "summary": demo.summary, "data": split.description,
        "sizes": {"train": len(y_train), "dev": len(split.y_dev), "test": len(split.y_test)},
        "settings": {**settings, "seed": options.seed, "dtype": options.dtype, "quick": options.quick,
                     "threads": fastnn.get_num_threads(), "backend": fastnn.get_backend()},
        "epochs": settings["epochs"], "time_s": seconds,
        "train_loss": float(train["loss"]), "train_error": 1.0 - float(train["accuracy"]),
        "dev_loss": float(dev["loss"]), "dev_error": 1.0 - float(dev["accuracy"]),
        "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"]),
        "curves": {"train_loss": _curve(history, "loss"), "dev_loss": _curve(history, "val_loss")},
        "model": model,
    }
    result["hint"] = diagnose(result["train_error"], result["dev_error"], demo.bayes_error)
    if demo.text:
        # the loss is the mean over characters: nats per character, perplexity its exponential
        result["per_char_loss"] = result["test_loss"]
        result["perplexity"] = math.exp(min(result["test_loss"], 700.0))
        result["sample"] = sample_text(model, corpus, temperature=options.temperature, rng=options.seed,
                                       length=100 if options.quick else SAMPLE_LENGTH)
        result["vocab"] = corpus.vocab
    return result
