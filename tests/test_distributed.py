"""fastnn.distributed on a real Dask LocalCluster (2 worker processes, one thread
each, started here): search against the same trials run one after another, resuming
from the results file, DataParallel against single-process Model.fit, predict against
Model.predict, a worker killed mid-search and mid-epoch, bad arguments. No mocks."""
import json
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

import fastnn  # noqa: E402
import fastnn.distributed as fd  # noqa: E402
from fastnn import nn, optim  # noqa: E402
from fastnn.nn.callbacks import Callback  # noqa: E402
from fastnn.nn.model import Model  # noqa: E402

SPACE = {"lr": fd.loguniform(1e-3, 3e-2), "batch_size": fd.choice([16, 32]), "width": fd.choice([4, 6])}
EPOCHS = 2


def small_lenet(params, seed):
    """A LeNet-shaped network small enough for tests: conv 3x3 -> max pool -> linear ->
    linear, on 8x8x1 inputs (NHWC)."""
    rng = np.random.default_rng(seed)
    width = params.get("width", 4)
    net = nn.Sequential(nn.Conv2d(1, width, 3, activation="relu", rng=rng), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(9 * width, 16, activation="relu", rng=rng), nn.Linear(16, 3, rng=rng))
    return Model(net, nn.SoftmaxCrossEntropy())


def build_trial(params, seed):
    model = small_lenet(params, seed)
    return model, {"optimizer": "adam", "lr": params["lr"], "batch_size": params["batch_size"]}


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 8, 8, 1)).astype(np.float32)
    X[np.arange(n), y * 2 + 1, y * 2 + 1, 0] += 3.0  # a learnable signal: a bright pixel per class
    return X, y


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    from fastnn.distributed._plugin import OneThreadPerWorker
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
                           silence_logs=40)
    c = Client(cluster)
    c.register_plugin(OneThreadPerWorker(1))
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def direct_client(client):
    """A second client of the same cluster that talks to the workers directly (as the
    embedded cluster's does; the first one goes through the scheduler, Dask's default).
    Closed after the test: while a second client is open in this process, results of
    the first one's tasks reached as_completed seconds late (all at once), and the
    search kill test found no trial left running to kill."""
    from distributed import Client
    c = Client(client.scheduler.address, direct_to_workers=True)
    yield c
    c.close()


@pytest.fixture(params=["through-scheduler", "direct"])
def any_client(request, client):
    return client if request.param == "through-scheduler" else request.getfixturevalue("direct_client")


@pytest.fixture(scope="module")
def data():
    X, y = _data()
    return X[:120], y[:120], X[120:], y[120:]


def _serial(params, seed, data, epochs=EPOCHS):
    """One trial trained here with plain fastnn (Model.fit + evaluate), one thread."""
    X, y, Xv, yv = data
    model = small_lenet(params, seed)
    model.fit(X, y, epochs=epochs, batch_size=params["batch_size"], optimizer="adam", lr=params["lr"], rng=seed,
              progress=False)
    return model, model.evaluate(Xv, yv)


@pytest.fixture(scope="module")
def serial_threads():
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(before)


def test_workers_run_fastnn_on_one_thread(client):
    threads = client.run(fastnn.get_num_threads)
    assert len(threads) == 2 and set(threads.values()) == {1}
    assert {w["nthreads"] for w in client.scheduler_info()["workers"].values()} == {1}


def test_search_equals_the_same_trials_run_serially(client, data, tmp_path, serial_threads):
    results = tmp_path / "trials.jsonl"
    out = fd.search(build_trial, SPACE, data, n_trials=4, epochs=EPOCHS, client=client, results=results, seed=3,
                    progress=False)
    assert [r["trial"] for r in out.trials] == [0, 1, 2, 3]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["trial"] for r in lines) == [0, 1, 2, 3]
    serial = {}
    for record in out.trials:
        p = record["params"]
        assert 1e-3 <= p["lr"] <= 3e-2 and p["batch_size"] in (16, 32) and p["width"] in (4, 6)
        assert record["seed"] == 3
        model, metrics = _serial(p, record["trial_seed"], data)
        serial[record["trial"]] = (model, metrics)
        np.testing.assert_allclose(record["metrics"]["val_loss"], metrics["loss"], rtol=1e-5)
        assert record["metrics"]["val_accuracy"] == metrics["accuracy"]
    # the trials differ from one another (params and seeds are drawn per trial)
    assert len({r["trial_seed"] for r in out.trials}) == 4
    assert len({r["params"]["lr"] for r in out.trials}) == 4
    # the best: highest serial val accuracy, ties to the lower index
    best = max(serial, key=lambda i: (serial[i][1]["accuracy"], -i))
    assert out.best_trial == best
    assert isinstance(out.best_model, Model)
    for k, v in serial[best][0].network.params.items():
        np.testing.assert_allclose(out.best_model.network.params[k], v, rtol=1e-5, atol=1e-6)
    # trial i's params depend on (seed, i) only: a longer search starts with the same trials
    longer = fd.trials(SPACE, 6, seed=3)
    assert [t[1] for t in longer[:4]] == [r["params"] for r in out.trials]
    assert [t[2] for t in longer[:4]] == [r["trial_seed"] for r in out.trials]


class _Stop(Exception):
    pass


def test_an_interrupted_search_resumes_without_redoing_finished_trials(client, data, tmp_path):
    results = tmp_path / "trials.jsonl"
    seen = []

    def interrupt(record):
        seen.append(record["trial"])
        if len(seen) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fd.search(build_trial, SPACE, data, n_trials=5, epochs=1, client=client, results=results, seed=1,
                  progress=False, callback=interrupt)
    first = [json.loads(line)["trial"] for line in results.read_text().splitlines()]
    assert sorted(first) == sorted(seen) and len(first) == 2
    ran = []
    out = fd.search(build_trial, SPACE, data, n_trials=5, epochs=1, client=client, results=results, seed=1,
                    progress=False, callback=lambda r: ran.append(r["trial"]))
    assert sorted(ran) == sorted(set(range(5)) - set(first))
    assert out.resumed == 2
    assert [r["trial"] for r in out.trials] == [0, 1, 2, 3, 4]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["trial"] for r in lines) == [0, 1, 2, 3, 4]
    # a third run has nothing left to train
    again = []
    out3 = fd.search(build_trial, SPACE, data, n_trials=5, epochs=1, client=client, results=results, seed=1,
                     progress=False, callback=lambda r: again.append(r))
    assert again == [] and out3.resumed == 5 and out3.best_trial == out.best_trial
    for k, v in out.best_model.network.params.items():
        np.testing.assert_array_equal(out3.best_model.network.params[k], v)
    # a file of another search is refused
    with pytest.raises(ValueError, match="another search"):
        fd.search(build_trial, SPACE, data, n_trials=5, epochs=1, client=client, results=results, seed=2,
                  progress=False)


def test_a_torn_last_line_is_ignored_on_resume(client, data, tmp_path):
    results = tmp_path / "trials.jsonl"
    fd.search(build_trial, SPACE, data, n_trials=1, epochs=1, client=client, results=results, seed=4,
              progress=False)
    with open(results, "a") as f:
        f.write('{"trial": 1, "seed": 4, "par')  # a crash in the middle of a write
    ran = []
    out = fd.search(build_trial, SPACE, data, n_trials=2, epochs=1, client=client, results=results, seed=4,
                    progress=False, callback=lambda r: ran.append(r["trial"]))
    assert ran == [1] and out.resumed == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]  # the torn line was cut off
    assert [r["trial"] for r in lines] == [0, 1]
    with pytest.raises(ValueError, match=r"search: results=.*the directory .* does not exist"):
        fd.search(build_trial, SPACE, data, n_trials=1, client=client, results=tmp_path / "no" / "r.jsonl")


def _twin_models(seed=5):
    net = lambda: nn.Sequential(nn.Conv2d(1, 3, 3, activation="relu", rng=seed), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(27, 12, activation="tanh", rng=seed + 1), nn.Linear(12, 3, rng=seed + 2))
    return Model(net(), nn.SoftmaxCrossEntropy()), Model(net(), nn.SoftmaxCrossEntropy())


@pytest.mark.parametrize("batch_size, make_opt", [(25, lambda p: optim.SGD(p, 0.1, momentum=0.9)),
                                                  (32, lambda p: optim.Adam(p, 1e-2))])
def test_data_parallel_equals_single_process_training(any_client, batch_size, make_opt):
    client = any_client
    X, y = _data(110, seed=1)
    single, parallel = _twin_models()
    for k, v in single.network.params.items():
        np.testing.assert_array_equal(parallel.network.params[k], v)
    X_before = X.copy()
    h1 = single.fit(X, y, epochs=2, batch_size=batch_size, optimizer=make_opt(single.network.params), rng=11,
                    progress=False)
    dp = fd.DataParallel(parallel, client)
    h2 = dp.fit(X, y, epochs=2, batch_size=batch_size, optimizer=make_opt(parallel.network.params), rng=11,
                progress=False)
    np.testing.assert_array_equal(X, X_before)
    moved = 0.0
    for k, v in single.network.params.items():
        np.testing.assert_allclose(parallel.network.params[k], v, rtol=2e-5, atol=2e-6)
        moved = max(moved, float(np.abs(v - _twin_models()[0].network.params[k]).max()))
    assert moved > 1e-2  # training changed the parameters, so the equality above says something
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-5)
    assert h2.history["accuracy"] == h1.history["accuracy"]
    assert parallel.epoch == 2 and len(parallel.history.epoch) == 2
    # a client that talks to the workers directly sends the steps over the driver's own
    # connections to the actors; one that goes through the scheduler, as Dask actor calls
    channels = [c is not None for c in dp._pool.channels]
    assert channels == ([True, True] if client.direct_to_workers else [False, False])


def test_a_step_that_raises_on_a_worker_raises_from_fit(any_client):
    # a label out of range fails in the loss on the worker that gets it, in the third
    # batch: fit raises the loss's own error (a step that fails on a direct connection is
    # done again as a Dask actor call, which raises it)
    X, y = _data(60, seed=3)
    y = y.copy()
    y[45] = 7
    _, model = _twin_models()
    dp = fd.DataParallel(model, any_client)
    with pytest.raises(ValueError, match=r"target must be in \[0, 3\)"):
        dp.fit(X, y, epochs=1, batch_size=20, shuffle=False, optimizer=optim.SGD(model.network.params, 0.1),
               progress=False)
    assert model.epoch == 0
    # the direct connections stay up: the step failed, not the connection
    assert [c is not None for c in dp._pool.channels] == [bool(any_client.direct_to_workers)] * 2
    dp.close()


def test_a_direct_connection_needs_the_actor_token(direct_client):
    import socket
    X, y = _data(40, seed=5)
    _, model = _twin_models()
    dp = fd.DataParallel(model, direct_client)
    dp.fit(X, y, epochs=1, batch_size=20, optimizer=optim.SGD(model.network.params, 0.1), progress=False)
    actor = dp._pool.actors[0]
    host, port = actor.open_channel(b"k" * 32).result()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"x" * 32)  # not the token: the actor closes the connection
        assert sock.recv(1) == b""
    with pytest.raises(OSError):  # and listens no more
        socket.create_connection((host, port), timeout=10).close()
    # the pool's own connections still work
    before = {k: v.copy() for k, v in model.network.params.items()}
    dp.fit(X, y, epochs=1, batch_size=20, optimizer=optim.SGD(model.network.params, 0.1), progress=False)
    assert any(not np.array_equal(before[k], v) for k, v in model.network.params.items())
    assert all(c is not None for c in dp._pool.channels)
    dp.close()


def test_data_parallel_shards_are_weighted_by_size(client):
    # 3 examples per batch on 2 workers: shards of 2 and 1; an unweighted mean of the two
    # shards' gradients would differ from the batch's mean gradient
    X, y = _data(9, seed=2)
    single, parallel = _twin_models(seed=8)
    single.fit(X, y, epochs=1, batch_size=3, optimizer=optim.SGD(single.network.params, 0.5), rng=0,
               shuffle=False, progress=False)
    fd.DataParallel(parallel, client).fit(X, y, epochs=1, batch_size=3, shuffle=False, rng=0,
                                          optimizer=optim.SGD(parallel.network.params, 0.5), progress=False)
    for k, v in single.network.params.items():
        np.testing.assert_allclose(parallel.network.params[k], v, rtol=2e-5, atol=2e-6)


def test_data_parallel_fits_again_on_the_data_it_is_given(client):
    # one epoch per fit (the replicas and the scattered data are kept between fits on the
    # same data); the data changed in place, then for other arrays: each fit trains on
    # what it is given, as Model.fit does
    X, y = _data(60, seed=6)
    single, parallel = _twin_models(seed=4)
    opt1, opt2 = optim.Adam(single.network.params, 1e-2), optim.Adam(parallel.network.params, 1e-2)
    dp = fd.DataParallel(parallel, client)
    pools = []
    for step in range(4):
        if step == 2:
            X *= -1.0  # in place: the same array object, other contents
        if step == 3:
            X, y = _data(50, seed=7)
        single.fit(X, y, epochs=1, batch_size=16, optimizer=opt1, rng=step, progress=False)
        dp.fit(X, y, epochs=1, batch_size=16, optimizer=opt2, rng=step, progress=False)
        pools.append(dp._pool)
        for k, v in single.network.params.items():
            np.testing.assert_allclose(parallel.network.params[k], v, rtol=2e-5, atol=2e-6)
    assert pools[0] is pools[1] and pools[2] is not pools[1] and pools[3] is not pools[2]
    dp.close()
    assert dp._pool is None and pools[3].futures == [] and pools[3].data is None


def test_predict_equals_model_predict(client):
    import dask.array as da
    X, y = _data(150, seed=3)
    model = small_lenet({"width": 4}, 9)
    model.fit(X, y, epochs=1, batch_size=32, optimizer="adam", rng=0, progress=False)
    expected = model.predict(X)
    lazy = fd.predict(model, da.from_array(X, chunks=(37, 4, 8, 1)), client=client, batch_size=16)
    assert isinstance(lazy, da.Array) and lazy.shape == (150, 3) and lazy.chunks[0] == (37, 37, 37, 37, 2)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-5, atol=1e-6)
    now = fd.predict(model, X, client=client, compute=True)
    assert isinstance(now, np.ndarray)
    np.testing.assert_allclose(now, expected, rtol=1e-5, atol=1e-6)
    # each worker rebuilt the model once per call, not once per chunk
    cached = client.run(lambda: len(__import__("fastnn.distributed._wire", fromlist=["_cache"])._cache))
    assert all(1 <= n <= 2 for n in cached.values())


def _worker_pids(client):
    return client.run(os.getpid)


def _kill_a_busy_worker(client, log):
    """SIGKILL a worker process that is running a task now (False when none is)."""
    pids = _worker_pids(client)
    busy = [w for w, keys in client.processing().items() if keys and w in pids]
    if busy:
        os.kill(pids[busy[0]], signal.SIGKILL)
        log.append((busy[0], pids[busy[0]]))
    return bool(busy)


def test_a_worker_killed_mid_search_loses_nothing(client, data, tmp_path, serial_threads):
    client.wait_for_workers(2, timeout=60)
    killed = []

    def kill_once(record):
        if not killed:
            _kill_a_busy_worker(client, killed)

    # 40 epochs: a trial of this small network trains in ~0.1 s, so the others are still
    # running when the first one's record reaches the callback (at 6 epochs, ~15 ms each,
    # all six could be done by then, and nothing was left to kill)
    results = tmp_path / "trials.jsonl"
    out = fd.search(build_trial, SPACE, data, n_trials=6, epochs=40, client=client, results=results, seed=3,
                    progress=False, callback=kill_once)
    assert len(killed) == 1  # a worker died while running a trial
    assert killed[0][0] not in client.scheduler_info()["workers"] or killed[0][1] not in _worker_pids(
        client).values()
    assert [r["trial"] for r in out.trials] == list(range(6))
    assert len(results.read_text().splitlines()) == 6
    for record in out.trials:  # every trial's result is what a serial run gives
        _, metrics = _serial(record["params"], record["trial_seed"], data, epochs=40)
        np.testing.assert_allclose(record["metrics"]["val_loss"], metrics["loss"], rtol=1e-5)
    client.wait_for_workers(2, timeout=60)


def slow_trial(params, seed):
    """build_trial after a pause: trials long enough that the last one can be caught
    running (the pause changes no weight: results equal _serial's)."""
    time.sleep(0.8)
    return build_trial(params, seed)


def _dependencies_who_has(key, dask_scheduler=None):
    """{dependency key: [workers holding it]} of a task, read from the scheduler."""
    ts = dask_scheduler.tasks[key]
    return {d.key: sorted(ws.address for ws in d.who_has or ()) for d in ts.dependencies}


def test_a_worker_killed_with_the_only_copy_of_the_search_data_loses_nothing(client, data, tmp_path,
                                                                           serial_threads):
    # The data goes to both workers (broadcast), but once the last trial is running no
    # other task waits for it, and Dask's active memory manager drops the copy on the
    # idle worker. The worker running the last trial then holds the only copy; killed,
    # it takes the data with it: the scheduler cannot compute scattered data again and
    # cancels the trial that needed it.
    client.wait_for_workers(2, timeout=60)
    seen, killed = [], []

    def kill_the_only_holder(record):
        seen.append(record["trial"])
        if len(seen) != 2:
            return
        deadline = time.monotonic() + 5
        while True:  # the last trial starts as soon as a worker is free
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if len(busy) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(busy) == 1 and len(next(iter(busy.values()))) == 1, busy
        (worker, (key,)), = busy.items()
        client.amm.run_once()
        deadline = time.monotonic() + 10
        while True:
            holders = client.run_on_scheduler(_dependencies_who_has, key)
            if all(h == [worker] for h in holders.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(holders) == 4 and all(h == [worker] for h in holders.values()), holders  # X, y, X_val, y_val
        pid = _worker_pids(client)[worker]
        os.kill(pid, signal.SIGKILL)
        killed.append((worker, pid))

    results = tmp_path / "trials.jsonl"
    start = time.monotonic()
    out = fd.search(slow_trial, SPACE, data, n_trials=3, epochs=EPOCHS, client=client, results=results, seed=8,
                    progress=False, callback=kill_the_only_holder)
    assert time.monotonic() - start < 30
    assert len(killed) == 1
    worker, pid = killed[0]
    removed = [msg for _, msg in client.get_events(worker) if isinstance(msg, dict)
               and msg.get("action") == "remove-worker"]
    assert removed and len(removed[-1]["lost-scattered-tasks"]) == 4  # the data really was lost with it
    assert out.resubmitted == 1
    assert [r["trial"] for r in out.trials] == [0, 1, 2]
    assert sorted(json.loads(line)["trial"] for line in results.read_text().splitlines()) == [0, 1, 2]
    for record in out.trials:  # every trial's result is what a serial run gives
        _, metrics = _serial(record["params"], record["trial_seed"], data)
        np.testing.assert_allclose(record["metrics"]["val_loss"], metrics["loss"], rtol=1e-5)
        assert record["metrics"]["val_accuracy"] == metrics["accuracy"]
    client.wait_for_workers(2, timeout=60)


class _KillAtBatch(Callback):
    def __init__(self, client, batch):
        super().__init__()
        self.client, self.batch, self.killed = client, batch, []

    def on_batch_begin(self, batch, logs=None):
        if batch == self.batch and not self.killed:
            pids = _worker_pids(self.client)
            worker = sorted(pids)[0]
            os.kill(pids[worker], signal.SIGKILL)  # dies as this batch's shard tasks go out
            self.killed.append(worker)


def test_a_worker_killed_mid_epoch_loses_nothing(any_client):
    client = any_client
    client.wait_for_workers(2, timeout=60)
    X, y = _data(120, seed=4)
    single, parallel = _twin_models(seed=3)
    single.fit(X, y, epochs=1, batch_size=20, optimizer=optim.SGD(single.network.params, 0.2), rng=2,
               progress=False)
    killer = _KillAtBatch(client, 2)
    dp = fd.DataParallel(parallel, client)
    dp.fit(X, y, epochs=1, batch_size=20, rng=2, progress=False, optimizer=optim.SGD(parallel.network.params, 0.2),
           callbacks=[killer])
    assert killer.killed
    assert dp.replaced == 1  # the dead worker's replica was made again elsewhere and its shard redone
    if client.direct_to_workers:  # the new replica has its direct connection too
        assert all(c is not None for c in dp._pool.channels)
    for k, v in single.network.params.items():
        np.testing.assert_allclose(parallel.network.params[k], v, rtol=2e-5, atol=2e-6)
    client.wait_for_workers(2, timeout=60)


class _KillWorker(Callback):
    def __init__(self, pid, batch):
        super().__init__()
        self.pid, self.batch, self.killed = pid, batch, False

    def on_batch_begin(self, batch, logs=None):
        if batch == self.batch and not self.killed:
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True


def test_a_worker_killed_with_the_only_copy_of_the_data_loses_nothing(any_client):
    # Dask's active memory manager drops the extra replicas of scattered data no task
    # waits for (every 2 s): the actors hold the arrays, but the scheduler keeps one
    # worker's copy. Killing that worker must not lose the data (with the steps as Dask
    # actor calls, and over direct connections: there the closed connection sends the
    # step through Dask, which finds the worker gone).
    client = any_client
    client.wait_for_workers(2, timeout=60)
    X, y = _data(120, seed=5)
    single, parallel = _twin_models(seed=2)
    dp = fd.DataParallel(parallel, client)
    opt1, opt2 = optim.SGD(single.network.params, 0.2), optim.SGD(parallel.network.params, 0.2)
    single.fit(X, y, epochs=2, batch_size=20, optimizer=opt1, rng=3, progress=False)
    dp.fit(X, y, epochs=1, batch_size=20, optimizer=opt2, rng=3, progress=False)
    client.amm.run_once()
    deadline = time.monotonic() + 10
    while max(len(w) for w in client.who_has(dp._pool.data).values()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    copies = client.who_has(dp._pool.data)
    assert [len(copies[f.key]) for f in dp._pool.data] == [1, 1]  # one copy of X and of y left
    killer = _KillWorker(_worker_pids(client)[copies[dp._pool.data[0].key][0]], 1)  # X's only copy
    dp.fit(X, y, epochs=2, initial_epoch=1, batch_size=20, optimizer=opt2, progress=False, callbacks=[killer])
    assert killer.killed and dp.replaced >= 1
    for k, v in single.network.params.items():
        np.testing.assert_allclose(parallel.network.params[k], v, rtol=2e-5, atol=2e-6)
    assert [c is not None for c in dp._pool.channels] == [bool(client.direct_to_workers)] * 2
    dp.close()
    client.wait_for_workers(2, timeout=60)


# ---------------------------------------------------------------- bad arguments (no cluster needed)

@pytest.mark.parametrize("space, match", [
    ({}, r"search: space is empty"),
    ({"lr": ("normal", 0.0, 1.0)}, r"search: space\['lr'\] names an unknown distribution 'normal'"),
    ({"lr": 0.1}, r"search: space\['lr'\] is not a distribution: got 0.1"),
    ({"lr": ("loguniform", 0, 0.1)}, r"search: space\['lr'\] = \('loguniform', 0, 0.1\): .*loguniform: both bounds "
                                     r"must be > 0.*low=0, high=0.1"),
])
def test_bad_spaces_are_value_errors(space, match, data):
    with pytest.raises(ValueError, match=match):
        fd.search(build_trial, space, data, n_trials=2)


def test_bad_distributions_and_counts(data):
    with pytest.raises(ValueError, match=r"loguniform: both bounds must be > 0.*low=-1, high=1"):
        fd.loguniform(-1, 1)
    with pytest.raises(ValueError, match=r"loguniform: low must be < high, got low=0.1, high=0.01"):
        fd.loguniform(0.1, 0.01)
    with pytest.raises(ValueError, match=r"uniform: low must be < high"):
        fd.uniform(1, 1)
    with pytest.raises(ValueError, match=r"choice: options must not be empty"):
        fd.choice([])
    with pytest.raises(ValueError, match=r"choice: every option must be a JSON scalar"):
        fd.choice([object()])
    for n in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match=rf"search: n_trials must be an integer >= 1, got {n!r}"):
            fd.search(build_trial, SPACE, data, n_trials=n)
    with pytest.raises(ValueError, match=r"search: data must be \(X, y\) or \(X, y, X_val, y_val\)"):
        fd.search(build_trial, SPACE, data[:3], n_trials=1)
    with pytest.raises(ValueError, match=r"search: mode must be 'min' or 'max', got 'up'"):
        fd.search(build_trial, SPACE, data, n_trials=1, mode="up")
    with pytest.raises(TypeError, match=r"search: build must be a callable"):
        fd.search("lenet", SPACE, data, n_trials=1)


def test_bad_predict_and_data_parallel_arguments(client):
    model = small_lenet({}, 0)
    with pytest.raises(TypeError, match=r"predict: model must be a fastnn.nn.Model"):
        fd.predict("model", np.zeros((2, 8, 8, 1), np.float32), client=client)
    with pytest.raises(TypeError, match=r"predict: X must be a dask.array.Array"):
        fd.predict(model, [[1.0]], client=client)
    with pytest.raises(TypeError, match=r"DataParallel: model must be a fastnn.nn.Model"):
        fd.DataParallel(model.network, client)
    with pytest.raises(ValueError, match=r"give client= or address=, not both"):
        fd.DataParallel(model, client, address="tcp://127.0.0.1:1")
    X, y = _data(10)
    with pytest.raises(ValueError, match=r"DataParallel.fit: optimizer is required"):
        fd.DataParallel(model, client).fit(X, y, epochs=1)


def _mmapped_megabyte():
    """Whether glibc serves a fresh 1 MiB array with its own mmap (the IS_MMAPPED bit
    of the chunk's size word, just before the pointer malloc returned)."""
    import ctypes
    a = np.empty(1 << 20, np.uint8)
    return bool(ctypes.c_size_t.from_address(a.ctypes.data - ctypes.sizeof(ctypes.c_size_t)).value & 2)


def test_the_embedded_default_is_a_local_cluster_of_one_thread_workers(client):
    try:
        c = fd.get_client("test")
        workers = c.scheduler_info()["workers"]
        cores = len(os.sched_getaffinity(0))
        assert len(workers) == cores
        assert {w["nthreads"] for w in workers.values()} == {1}
        assert set(c.run(fastnn.get_num_threads).values()) == {1}
        assert fd.get_client("test") is c  # kept for the process
        if os.uname().sysname == "Linux" and os.confstr("CS_GNU_LIBC_VERSION"):
            # a plain Dask worker runs under MALLOC_TRIM_THRESHOLD_ (its Nanny's), which
            # fixes glibc's mmap threshold at 128 KiB: every activation array is an mmap;
            # the embedded cluster's workers serve them from the heap again
            assert set(client.run(_mmapped_megabyte).values()) == {True}
            assert set(c.run(_mmapped_megabyte).values()) == {False}
            assert set(c.gather(c.map(lambda i: _mmapped_megabyte(), range(4), pure=False))) == {False}
    finally:
        fd.shutdown()


def test_address_reaches_the_same_cluster_as_client(client, data):
    try:
        by_address = fd.search(build_trial, SPACE, data, n_trials=2, epochs=1, address=client.scheduler.address,
                               seed=6, progress=False)
    finally:
        fd.shutdown()
    by_client = fd.search(build_trial, SPACE, data, n_trials=2, epochs=1, client=client, seed=6, progress=False)
    assert [r["params"] for r in by_address.trials] == [r["params"] for r in by_client.trials]
    for a, b in zip(by_address.trials, by_client.trials):
        np.testing.assert_allclose(a["metrics"]["val_loss"], b["metrics"]["val_loss"], rtol=1e-5)


def test_data_parallel_by_address_and_on_the_embedded_cluster(client):
    X, y = _data(64, seed=9)
    single, by_address = _twin_models(seed=6)
    _, embedded = _twin_models(seed=6)
    single.fit(X, y, epochs=2, batch_size=16, optimizer=optim.Adam(single.network.params, 1e-2), rng=1,
               progress=False)
    try:
        for model, where in ((by_address, {"address": client.scheduler.address}), (embedded, {})):
            fd.DataParallel(model, **where).fit(X, y, epochs=2, batch_size=16, rng=1, progress=False,
                                                optimizer=optim.Adam(model.network.params, 1e-2))
            for k, v in single.network.params.items():
                np.testing.assert_allclose(model.network.params[k], v, rtol=2e-5, atol=2e-6)
    finally:
        fd.shutdown()


def _demo_network(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8, activation="relu", rng=rng), nn.Linear(8, 3, rng=rng))


def test_search_demo_prints_the_trials_best_first(client, data, tmp_path):
    import io
    from fastnn.distributed.cli import search_demo
    text = io.StringIO()
    out = search_demo(_demo_network, data, 3, epochs=1, client=client, results=tmp_path / "r.jsonl",
                      progress=False, out=text)
    lines = text.getvalue().splitlines()
    assert lines[0].split() == ["trial", "batch_size", "lr", "val_accuracy", "time"]
    assert len(lines) == 5 and lines[-1].startswith(f"best: trial {out.best_trial} ")
    assert int(lines[1].split()[0]) == out.best_trial
    accuracies = [float(line.split()[3]) for line in lines[1:4]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
