"""The demos' data: real data that ships inside installed packages, never downloaded.

* Handwritten digits: scikit-learn's ``load_digits`` (1,797 real 8×8 scans of digits
  written by 43 people, UCI "optdigits", inside the scikit-learn wheel), made into
  LeNet-5's 32×32×1 input: pixel values 0..16 scaled to [0, 1], each image resized
  bilinearly to 28×28 (MNIST's size; half-pixel centres, the rule of PyTorch's
  ``interpolate(mode="bilinear", align_corners=False)``) then zero-padded by 2 pixels on
  every side, as LeNet-5 pads MNIST. NHWC ``(N, 32, 32, 1)``.
  Split stratified and deterministic: per class, a seeded permutation gives 20 % to
  test, 10 % to dev and the rest to train.
* Text: the CPython standard library's ``pydoc_data.topics`` (the Python documentation's
  topics, about 465,000 characters; in every Python installation), lowercased, with
  typographic quotes and dashes written plainly, restricted to its ``max_vocab`` most
  frequent characters (64 by default, the vocabulary of benchmark case E2); every other
  character becomes ``UNKNOWN``.
"""
import collections
from dataclasses import dataclass

import numpy as np

EXTRA_DATA = "data"
UNKNOWN = "?"
DIGIT_SIZE = 28          # the bilinear resize, before the padding
DIGIT_PAD = 2            # 28 + 2 + 2 = LeNet-5's 32
TEST_FRACTION, DEV_FRACTION = 0.2, 0.1


class MissingExtra(ImportError):
    """A demo's data needs a package that is not installed; the message says which
    extra of fastnn brings it."""

    def __init__(self, package, extra, purpose):
        self.package, self.extra = package, extra
        super().__init__(f"{purpose} needs {package}, which is not installed: "
                         f'pip install "fastnn[{extra}]" (or, from a checkout, pip install ".[{extra}]")')


@dataclass
class Split:
    """Train, dev and test sets of one data set (inputs ``X_*``, integer labels ``y_*``)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_dev: np.ndarray
    y_dev: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: int
    description: str = ""

    def sizes(self):
        return {"train": len(self.y_train), "dev": len(self.y_dev), "test": len(self.y_test)}


def _check_fraction(function, name, value):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{function}: {name} must be in [0, 1), got {value!r}")


def stratified_split(y, *, test_fraction=TEST_FRACTION, dev_fraction=DEV_FRACTION, seed=0):
    """Index arrays (train, dev, test) of ``y``: per class, a permutation drawn from
    ``seed`` gives ``round(n_c · test_fraction)`` examples to test, ``round(n_c ·
    dev_fraction)`` to dev and the rest to train. Each array sorted; together they are
    every index once."""
    _check_fraction("stratified_split", "test_fraction", test_fraction)
    _check_fraction("stratified_split", "dev_fraction", dev_fraction)
    if test_fraction + dev_fraction >= 1.0:
        raise ValueError(f"stratified_split: test_fraction + dev_fraction must be below 1, got "
                         f"{test_fraction} + {dev_fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction))
        n_dev = int(round(len(members) * dev_fraction))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_dev])
        parts[0].append(members[n_test + n_dev:])
    return tuple(np.sort(np.concatenate(p)) if p else np.empty(0, np.intp) for p in parts)


def bilinear_matrix(n_in, n_out):
    """(n_out, n_in) matrix of 1-D linear interpolation with half-pixel centres
    (align_corners=False, edges clamped): each row's weights are >= 0 and sum to 1."""
    scale = n_in / n_out
    src = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def digits_to_lenet(images, size=DIGIT_SIZE, pad=DIGIT_PAD, dtype=np.float32):
    """8×8 images with values 0..16 -> ``(N, size + 2·pad, size + 2·pad, 1)`` in [0, 1]:
    scaled, resized bilinearly (a separable pair of interpolation matrices), padded."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"digits_to_lenet: images must be (N, H, W), got shape {images.shape}")
    rows = bilinear_matrix(images.shape[1], size)
    cols = bilinear_matrix(images.shape[2], size)
    resized = np.einsum("ih,nhw,jw->nij", rows, images / 16.0, cols)
    out = np.zeros((len(images), size + 2 * pad, size + 2 * pad, 1), dtype=dtype)
    out[:, pad:pad + size, pad:pad + size, 0] = np.clip(resized, 0.0, 1.0)
    return out


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        if getattr(exc, "name", "") and not str(exc.name).startswith("sklearn"):
            raise  # scikit-learn is there but one of its own imports fails: say that, not "install"
        raise MissingExtra("scikit-learn", EXTRA_DATA, "the handwritten digits (lenet5, resnet)") from None
    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits(*, seed=0, test_fraction=TEST_FRACTION, dev_fraction=DEV_FRACTION, dtype=np.float32):
    """scikit-learn's real handwritten digits as LeNet-5 input, split train/dev/test
    (see the module's doc). Raises :class:`MissingExtra` without scikit-learn."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"load_digits: dtype must be float32 or float64, got {dtype}")
    images, labels = _sklearn_digits()
    X = digits_to_lenet(images, dtype=dtype)
    y = np.asarray(labels, dtype=np.int64)
    train, dev, test = stratified_split(y, test_fraction=test_fraction, dev_fraction=dev_fraction, seed=seed)
    return Split(X[train], y[train], X[dev], y[dev], X[test], y[test], classes=10,
                 description=f"scikit-learn digits, 8×8 → bilinear {DIGIT_SIZE}×{DIGIT_SIZE} + pad {DIGIT_PAD} "
                             f"(32×32×1, [0, 1]); stratified split seed {seed}")


# --- text ---------------------------------------------------------------------------

_PLAIN = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-", "…": "...", "\t": " ",
                        "\u00a0": " "})


def corpus_text():
    """The Python documentation's topics from the standard library, topics in sorted
    order, as one string."""
    from pydoc_data.topics import topics
    return "\n".join(topics[key] for key in sorted(topics))


@dataclass
class Corpus:
    """A text as integer ids over ``vocab`` (``vocab[i]`` is the character of id i)."""

    ids: np.ndarray
    vocab: str
    source: str

    @property
    def size(self):
        return len(self.vocab)

    def encode(self, text):
        index = {ch: i for i, ch in enumerate(self.vocab)}
        unknown = index[UNKNOWN]
        return np.array([index.get(ch, unknown) for ch in normalise_text(text)], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).ravel())


def normalise_text(text):
    return text.lower().translate(_PLAIN)


def build_vocab(text, max_vocab=64):
    """The ``max_vocab - 1`` most frequent characters of ``text`` (ties by code point)
    and ``UNKNOWN``, sorted by code point."""
    if int(max_vocab) < 2:
        raise ValueError(f"build_vocab: max_vocab must be at least 2, got {max_vocab!r}")
    counts = collections.Counter(text)
    counts.pop(UNKNOWN, None)
    ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))[:int(max_vocab) - 1]
    return "".join(sorted(ranked + [UNKNOWN]))


def load_text(max_vocab=64, text=None):
    """The corpus (default: ``pydoc_data.topics``) as a :class:`Corpus`."""
    source = "pydoc_data.topics (CPython's documentation topics)" if text is None else "given text"
    plain = normalise_text(corpus_text() if text is None else text)
    vocab = build_vocab(plain, max_vocab)
    corpus = Corpus(np.empty(0, np.int64), vocab, source)
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = index[UNKNOWN]
    table = np.full(max(map(ord, plain), default=0) + 1, unknown, dtype=np.int64)
    for ch, i in index.items():
        if ord(ch) < len(table):
            table[ord(ch)] = i
    codes = np.frombuffer(plain.encode("utf-32-le"), dtype=np.uint32)
    corpus.ids = table[codes]
    return corpus


def char_windows(ids, seq_len, *, stride=None, limit=None):
    """Inputs ``(N, seq_len)`` and next-character targets ``(N, seq_len)`` from
    consecutive windows of ``ids`` (``stride`` apart, default ``seq_len``: no overlap),
    the first ``limit`` windows when given."""
    ids = np.asarray(ids)
    seq_len = int(seq_len)
    stride = seq_len if stride is None else int(stride)
    if seq_len < 1 or stride < 1:
        raise ValueError(f"char_windows: seq_len and stride must be >= 1, got {seq_len}, {stride}")
    n = max(0, (len(ids) - 1 - seq_len) // stride + 1)
    if limit is not None:
        n = min(n, int(limit))
    starts = np.arange(n) * stride
    offsets = np.arange(seq_len)
    X = ids[starts[:, None] + offsets]
    Y = ids[starts[:, None] + offsets + 1]
    return X, Y


def load_chars(*, seq_len=40, max_vocab=64, dev_fraction=0.05, test_fraction=0.05, stride=None,
               max_train=None, text=None):
    """The corpus cut in contiguous parts (train first, then dev, then test: no window
    crosses a part), each in windows of ``seq_len`` characters. Returns (Split, Corpus)."""
    _check_fraction("load_chars", "dev_fraction", dev_fraction)
    _check_fraction("load_chars", "test_fraction", test_fraction)
    corpus = load_text(max_vocab, text)
    n = len(corpus.ids)
    n_test, n_dev = int(n * test_fraction), int(n * dev_fraction)
    n_train = n - n_dev - n_test
    parts = corpus.ids[:n_train], corpus.ids[n_train:n_train + n_dev], corpus.ids[n_train + n_dev:]
    X_train, y_train = char_windows(parts[0], seq_len, stride=stride, limit=max_train)
    X_dev, y_dev = char_windows(parts[1], seq_len)
    X_test, y_test = char_windows(parts[2], seq_len)
    split = Split(X_train, y_train, X_dev, y_dev, X_test, y_test, classes=corpus.size,
                  description=f"{corpus.source}: {n:,} characters, vocabulary {corpus.size}, "
                              f"windows of {seq_len}")
    return split, corpus
