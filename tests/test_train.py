"""fastnn-train: the data loaders, the command line, the demos end to end (tiny runs)."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.train import cli, data, demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_SKLEARN = cli._have("sklearn")
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn (fastnn[data]) not installed")


def _nn_has(*names):
    try:
        import fastnn.nn as nn
        for name in names:
            getattr(nn, name)
        return True
    except (ImportError, AttributeError):
        return False


needs_cnn = pytest.mark.skipif(not _nn_has("Model", "Conv2d", "MaxPool2d", "BatchNorm", "GlobalAvgPool2d"),
                               reason="fastnn.nn's convolution layers or Model are not there yet")
needs_rnn = pytest.mark.skipif(not _nn_has("Model", "Embedding", "LSTM", "TimeDistributed"),
                               reason="fastnn.nn's recurrent layers or Model are not there yet")


# --- data: digits ----------------------------------------------------------------------

def test_bilinear_matrix_half_pixel_centres():
    # 2 -> 4 with align_corners=False: source positions -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    expected = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    np.testing.assert_allclose(data.bilinear_matrix(2, 4), expected)
    m = data.bilinear_matrix(8, 28)
    assert m.shape == (28, 8) and (m >= 0).all()
    np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_resize_matches_pytorch_bilinear():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 17, (5, 8, 8)).astype(np.float64)
    ours = data.digits_to_lenet(images, dtype=np.float64)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(images / 16.0)[:, None], size=(28, 28),
                                             mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours[:, 2:30, 2:30, 0], theirs, atol=1e-12)
    assert (ours[:, :2] == 0).all() and (ours[:, 30:] == 0).all()
    assert (ours[:, :, :2] == 0).all() and (ours[:, :, 30:] == 0).all()


def test_resize_leaves_the_input_alone_and_checks_rank():
    images = np.full((2, 8, 8), 16.0)
    before = images.copy()
    out = data.digits_to_lenet(images)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_allclose(out[:, 2:30, 2:30, 0], 1.0)  # a constant image stays constant
    with pytest.raises(ValueError, match="digits_to_lenet"):
        data.digits_to_lenet(np.zeros((8, 8)))


@needs_sklearn
def test_digits_shapes_ranges_and_labels():
    split = data.load_digits()
    sizes = split.sizes()
    assert sum(sizes.values()) == 1797
    for X, y in ((split.X_train, split.y_train), (split.X_dev, split.y_dev), (split.X_test, split.y_test)):
        assert X.shape == (len(y), 32, 32, 1) and X.dtype == np.float32
        assert X.min() == 0.0 and X.max() <= 1.0 and X.max() > 0.99
        assert set(np.unique(y)) == set(range(10))
    assert data.load_digits(dtype="float64").X_test.dtype == np.float64
    with pytest.raises(TypeError, match="load_digits"):
        data.load_digits(dtype=np.int32)


@needs_sklearn
def test_digits_split_is_deterministic_and_seeded():
    a, b, c = data.load_digits(seed=0), data.load_digits(seed=0), data.load_digits(seed=1)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.X_test, c.X_test)


def test_stratified_split_disjoint_complete_and_stratified():
    y = np.repeat(np.arange(5), [50, 30, 20, 41, 9])
    train, dev, test = data.stratified_split(y, test_fraction=0.2, dev_fraction=0.1, seed=4)
    everything = np.concatenate([train, dev, test])
    assert len(everything) == len(y) and len(np.unique(everything)) == len(y)
    for label, n in zip(range(5), [50, 30, 20, 41, 9]):
        assert (y[test] == label).sum() == round(n * 0.2)
        assert (y[dev] == label).sum() == round(n * 0.1)
    again = data.stratified_split(y, test_fraction=0.2, dev_fraction=0.1, seed=4)
    for p, q in zip((train, dev, test), again):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="stratified_split"):
        data.stratified_split(y, test_fraction=0.6, dev_fraction=0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(y, test_fraction=-0.1)


def test_missing_scikit_learn_says_which_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` now fails as if absent
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(data.MissingExtra, match=r'pip install "fastnn\[data\]"'):
        data.load_digits()
    assert cli.main(["lenet5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "fastnn[data]"' in err and 'pip install ".[data]"' in err
    assert "Traceback" not in err


def test_missing_scikit_learn_in_a_fresh_process():
    # a process whose import system hides scikit-learn: exit status 2, the extra named, no traceback
    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'sklearn' or name.startswith('sklearn.'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from fastnn.train.cli import main\n"
            "sys.exit(main(['resnet', '--no-progress']))\n")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "fastnn[data]"' in proc.stderr and "Traceback" not in proc.stderr


# --- data: text ------------------------------------------------------------------------

def test_corpus_is_the_standard_library_docs_in_64_characters():
    corpus = data.load_text()
    assert len(corpus.ids) > 400_000
    assert len(corpus.vocab) == 64 and data.UNKNOWN in corpus.vocab
    assert len(set(corpus.vocab)) == 64 and corpus.vocab == "".join(sorted(corpus.vocab))
    assert corpus.ids.min() >= 0 and corpus.ids.max() < 64
    text = corpus.decode(corpus.ids[:2000])
    assert "the" in text and text == text.lower()
    # unknown characters are rare: the vocabulary covers the text
    assert (corpus.ids == corpus.vocab.index(data.UNKNOWN)).mean() < 0.01


def test_text_encoding_round_trip_and_unknown():
    # counts: a 12, space 9, b 9, c 6, newline 3, d 3, é 1: the 5 most frequent (ties by
    # code point: newline before d) and the unknown mark
    corpus = data.load_text(max_vocab=6, text="aaaa bbb cc d\n" * 3 + "é")
    assert corpus.vocab == "\n ?abc"
    assert corpus.decode(corpus.encode("abc ab")) == "abc ab"
    assert corpus.decode(corpus.encode("ABC d")) == "abc ?"            # lowercased; d is out
    assert corpus.decode(corpus.encode("\u201ca\u201d\u2014b")) == "?a??b"  # quotes become '"', not kept here
    assert data.normalise_text("\u201cA\u201d\u2014\u2019s\u2026") == '"a"-\'s...'
    with pytest.raises(ValueError, match="max_vocab"):
        data.build_vocab("abc", 1)


def test_char_windows_targets_are_the_next_characters():
    ids = np.arange(100)
    X, Y = data.char_windows(ids, 10)
    assert X.shape == Y.shape == (9, 10)
    np.testing.assert_array_equal(Y, X + 1)
    np.testing.assert_array_equal(X[:, 0], np.arange(0, 90, 10))
    X2, _ = data.char_windows(ids, 10, stride=5, limit=3)
    np.testing.assert_array_equal(X2[:, 0], [0, 5, 10])
    with pytest.raises(ValueError, match="char_windows"):
        data.char_windows(ids, 0)


def test_char_split_parts_are_contiguous_and_disjoint():
    text = "".join(chr(97 + i % 26) for i in range(5000))
    split, corpus = data.load_chars(seq_len=20, text=text, dev_fraction=0.1, test_fraction=0.1)
    assert split.X_train.shape[1] == 20 and split.classes == len(corpus.vocab)
    n = len(corpus.ids)
    # the windows of each part stay inside it: train ends before dev starts
    assert split.X_train.shape[0] == (int(n * 0.8) - 1 - 20) // 20 + 1
    assert split.X_dev.shape[0] == (int(n * 0.1) - 1 - 20) // 20 + 1


# --- the bias/variance hint ---------------------------------------------------------------

def test_diagnose_reads_bias_and_variance_the_course_way():
    assert "high bias" in demos.diagnose(0.15, 0.16, bayes_error=0.0)
    assert "high variance" in demos.diagnose(0.01, 0.11, bayes_error=0.0)
    both = demos.diagnose(0.15, 0.30, bayes_error=0.0)
    assert "high bias" in both and "high variance" in both
    assert "low bias and low variance" in demos.diagnose(0.01, 0.02, bayes_error=0.0)
    # human-level error close to train error: no avoidable bias, even at 15 %
    assert "high bias" not in demos.diagnose(0.15, 0.16, bayes_error=0.14)
    assert "no human-level" in demos.diagnose(0.45, 0.46) and "low variance" in demos.diagnose(0.45, 0.30)


# --- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["mnist"], "invalid choice: 'mnist'"),
    (["lenet5", "--epochs", "0"], "--epochs expects a positive integer, got '0'"),
    (["lenet5", "--epochs", "two"], "--epochs expects a positive integer, got 'two'"),
    (["lenet5", "--batch-size", "-3"], "--batch-size expects a positive integer"),
    (["lenet5", "--lr", "0"], "--lr expects a positive number, got '0'"),
    (["lenet5", "--lr", "nan"], "--lr expects a positive number, got 'nan'"),
    (["lenet5", "--threads", "0"], "--threads expects a positive integer"),
    (["lenet5", "--seed", "-1"], "--seed expects a non-negative integer"),
    (["lenet5", "--optimizer", "adagrad"], "invalid choice: 'adagrad'"),
    (["lenet5", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["lenet5", "--backend", "cuda"], "--backend 'cuda' is not available"),
    (["lenet5", "--save", "/no/such/folder/m.npz"], "--save: the folder"),
    ([], "the following arguments are required: DEMO"),
])
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_says_which_extra(monkeypatch, capsys):
    real = cli._have
    monkeypatch.setattr(cli, "_have", lambda module: False if module == "matplotlib" else real(module))
    assert cli.main(["lenet5", "--plot", "x.png"]) == 2
    assert 'pip install "fastnn[plot]"' in capsys.readouterr().err


def test_quick_settings_come_from_the_demo_and_options_win():
    quick = demos.Options("resnet", quick=True).resolved()
    assert quick["epochs"] == demos.DEMOS["resnet"].quick["epochs"]
    assert demos.Options("lenet5", epochs=7, quick=True).resolved()["epochs"] == 7
    assert demos.Options("lenet5").resolved() == {**demos.DEMOS["lenet5"].defaults, "max_train": None}


def test_summary_renders_plain_and_rich():
    result = {"demo": "char-lstm", "data": "d", "sizes": {"train": 10, "dev": 2, "test": 3},
              "settings": {"optimizer": "adam", "lr": 0.003, "batch_size": 32, "dtype": "float32", "threads": 2,
                           "backend": None, "temperature": 0.8},
              "epochs": 2, "time_s": 1.25, "train_loss": 1.5, "train_error": 0.4, "dev_error": 0.45,
              "test_accuracy": 0.55, "hint": "high variance", "per_char_loss": 1.6, "perplexity": 4.95,
              "vocab": "ab", "sample": "def hello"}
    text = cli.render_plain(result)
    for needle in ("train error | dev error", "40.00% | 45.00%", "test accuracy", "55.00%", "1.2 s",
                   "high variance", "perplexity", "4.95", "def hello"):
        assert needle in text
    import io
    out = io.StringIO()
    cli.render(result, out)
    assert "test accuracy" in out.getvalue() and "def hello" in out.getvalue()
    if cli._have("rich"):
        assert "┃" in out.getvalue() or "│" in out.getvalue()  # a rich table


def test_summary_is_plain_text_without_rich(monkeypatch):
    import io
    monkeypatch.setattr(cli, "_have", lambda module: False)
    result = {"demo": "lenet5", "data": "digits", "sizes": {"train": 10, "dev": 2, "test": 3},
              "settings": {"optimizer": "sgd", "lr": 0.1, "batch_size": 8, "dtype": "float64", "threads": 1,
                           "backend": "numba"},
              "epochs": 3, "time_s": 0.5, "train_loss": 0.25, "train_error": 0.0, "dev_error": 0.5,
              "test_accuracy": 0.5, "hint": "high variance"}
    out = io.StringIO()
    cli.render(result, out)
    text = out.getvalue()
    assert text.startswith("fastnn-train lenet5: summary") and "│" not in text
    assert "sgd, lr 0.1, batch 8, float64, 1 thread(s), backend numba" in text and "0.00% | 50.00%" in text


def test_sample_text_uses_the_model_and_temperature():
    corpus = data.load_text(max_vocab=8, text="abcabcabc d")

    class Always:  # a "model" whose logits always favour id 1 strongly
        def predict(self, x):
            logits = np.zeros(x.shape + (len(corpus.vocab),))
            logits[..., 1] = 50.0
            return logits
    text = demos.sample_text(Always(), corpus, length=5, prime="a", temperature=1.0, rng=0)
    assert text == "a" + corpus.vocab[1] * 5
    probs = []
    for t in (0.5, 5.0):
        rng = np.random.default_rng(0)
        draws = [demos.softmax_sample([0.0, 1.0], t, rng) for _ in range(2000)]
        probs.append(np.mean(draws))
    assert probs[0] > 0.8 > probs[1] > 0.5  # low temperature sharpens, high flattens


# --- the demos, end to end (tiny) --------------------------------------------------------

def _png(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@needs_sklearn
@needs_cnn
def test_lenet5_quick_in_a_subprocess_prints_the_table_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "120"}
    plot = tmp_path / "loss.png"
    proc = subprocess.run([sys.executable, "-m", "fastnn.train", "lenet5", "--quick", "--no-progress",
                           "--save", str(tmp_path / "m.npz"), "--plot", str(plot)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for needle in ("summary", "train error | dev error", "test accuracy", "bias / variance", "epochs"):
        assert needle in proc.stdout
    assert (tmp_path / "m.npz").exists()
    width, height = _png(plot)
    assert width > 100 and height > 100


@needs_sklearn
@needs_cnn
def test_search_in_a_subprocess_records_every_trial_and_saves_the_best(tmp_path):
    """fastnn-train DEMO --search N runs N trials on a local Dask cluster of worker
    processes, records each in the results file, prints them best first and saves the
    best model, which loads."""
    pytest.importorskip("distributed")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "120"}
    results, best = tmp_path / "trials.jsonl", tmp_path / "best.npz"
    proc = subprocess.run([sys.executable, "-m", "fastnn.train", "lenet5", "--quick", "--epochs", "1",
                           "--search", "2", "--workers", "2", "--no-progress", "--search-results", str(results),
                           "--save", str(best)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["trial"] for r in records) == [0, 1]
    assert all(1e-4 <= r["params"]["lr"] <= 1e-2 and r["params"]["batch_size"] in (16, 32, 64) for r in records)
    assert "best: trial" in proc.stdout
    model = nn.Model.load(str(best))
    assert model.predict(np.zeros((2, 32, 32, 1), np.float32)).shape == (2, 10)


def test_search_options_need_search_and_dask_is_named_when_absent(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["lenet5", "--workers", "2"])
    assert exc.value.code == 2
    assert "go with --search" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_have", lambda name: name != "distributed")
    assert cli.main(["lenet5", "--search", "2"]) == 2
    assert 'pip install "fastnn[dask]"' in capsys.readouterr().err


def _tiny(monkeypatch, name, **quick):
    demo = demos.DEMOS[name]
    monkeypatch.setitem(demos.DEMOS, name, demos.Demo(**{**demo.__dict__, "quick": quick}))


@needs_sklearn
@needs_cnn
def test_resnet_tiny_run_saves_a_model_that_predicts_identically(tmp_path, capsys, monkeypatch):
    _tiny(monkeypatch, "resnet", epochs=1, max_train=64)
    assert cli.main(["resnet", "--quick", "--no-progress", "--save", str(tmp_path / "cli.npz")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "resnet" in out and (tmp_path / "cli.npz").exists()
    result = demos.run(demos.Options("resnet", quick=True, progress=False))
    assert result["sizes"]["train"] == 64 and len(result["curves"]["train_loss"]) == 1
    split = data.load_digits()
    model = result["model"]
    before = model.predict(split.X_test[:40])
    model.save(str(tmp_path / "resnet.npz"))
    from fastnn.nn import Model
    loaded = Model.load(str(tmp_path / "resnet.npz"))
    np.testing.assert_array_equal(loaded.predict(split.X_test[:40]), before)
    assert before.shape == (40, 10)
    # the evaluation a reloaded model gives is the one the demo reported
    assert np.isclose(loaded.evaluate(split.X_test, split.y_test)["accuracy"], result["test_accuracy"])


@needs_rnn
def test_char_lstm_tiny_run_reports_perplexity_and_a_sample(monkeypatch):
    _tiny(monkeypatch, "char-lstm", epochs=1, max_train=64)
    result = demos.run(demos.Options("char-lstm", quick=True, progress=False))
    vocab = len(result["vocab"])
    assert result["epochs"] == 1 and result["sizes"]["train"] == 64
    # one epoch on 64 windows has not learnt much: perplexity between a good model's and uniform's (64)
    assert 1.0 < result["perplexity"] < 2.0 * vocab
    assert np.isclose(result["perplexity"], np.exp(result["per_char_loss"]))
    assert result["sample"].startswith(demos.SAMPLE_PRIME) and len(result["sample"]) == len(demos.SAMPLE_PRIME) + 100
    assert set(result["sample"]) <= set(result["vocab"])
    assert 0.0 <= result["train_error"] <= 1.0 and 0.0 <= result["test_accuracy"] <= 1.0


@needs_rnn
def test_char_lstm_command_prints_the_table_and_the_sample(monkeypatch, capsys):
    _tiny(monkeypatch, "char-lstm", epochs=1, max_train=32)
    assert cli.main(["char-lstm", "--quick", "--no-progress", "--temperature", "0.5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for needle in ("char-lstm", "test perplexity", "test loss per char", "train error | dev error",
                   "sample (temperature 0.5)", demos.SAMPLE_PRIME.strip()):
        assert needle in out
