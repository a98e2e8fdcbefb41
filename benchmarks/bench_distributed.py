"""Benchmarks of fastnn.distributed (run by hand, on an otherwise idle machine):

    python benchmarks/bench_distributed.py [--quick] [--json out.json]

1. search: 8 small LeNet-5 trials (32x32x1 inputs, synthetic 10-class data) on a
   2-worker LocalCluster (one thread each) against the same 8 trials run one after
   another in this process (fastnn.distributed.run_trial) at 1 and at 2 threads.
2. DataParallel: one epoch of LeNet-5 at batch 256 on 2 workers against Model.fit in
   one process with 2 threads (and 1), on the same 2 cores; the overhead is
   DataParallel's epoch time over the single process's, minus one.

The configurations run in rounds (each round runs every configuration once, in turn;
the search 3 rounds, the epochs 5, after a warm-up), so that all of them meet the same
disturbances of a machine shared with other jobs. Reported: the fastest run of each
(the least disturbed), and the median over rounds of the ratio within a round; every
run is kept in the JSON.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastnn  # noqa: E402
import fastnn.distributed as fd  # noqa: E402
from fastnn import nn, optim  # noqa: E402
from fastnn.nn.model import Model  # noqa: E402


def lenet5(seed=0, classes=10):
    """The course's LeNet-5 (conv 5x5x6 -> max pool -> conv 5x5x16 -> max pool -> 120 ->
    84 -> 10), ReLU, He init, NHWC."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, activation="relu", init="he", rng=rng), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, activation="relu", init="he", rng=rng), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120, activation="relu", init="he", rng=rng),
        nn.Linear(120, 84, activation="relu", init="he", rng=rng),
        nn.Linear(84, classes, init="xavier", rng=rng))


def build(params, seed):
    model = Model(lenet5(seed), nn.SoftmaxCrossEntropy())
    return model, {"optimizer": "adam", "lr": params["lr"], "batch_size": params["batch_size"]}


def synthetic(n, seed=0):
    """10 classes of 32x32 images: a class's bright 4x4 square on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.standard_normal((n, 32, 32, 1)).astype(np.float32) * 0.5
    for c in range(10):
        r, q = divmod(c, 4)
        X[y == c, 4 + 7 * r:8 + 7 * r, 4 + 7 * q:8 + 7 * q, 0] += 2.0
    return X, y


SPACE = {"lr": fd.loguniform(1e-4, 1e-2), "batch_size": fd.choice([32, 64])}


def _rounds(fitters, repeats):
    """{name: [seconds per round]}: every round runs each fitter once, in turn, so that
    all of them meet the same disturbances of a shared machine (the fastest of a
    config's runs, and the median over rounds of a ratio taken within one round, are
    both reported)."""
    times = {name: [] for name in fitters}
    for _ in range(repeats):
        for name, (threads, run) in fitters.items():
            fastnn.set_num_threads(threads)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    fastnn.set_num_threads(2)
    return times


def bench_search(args, client):
    X, y = synthetic(args.train + 256, seed=1)
    data = (X[:args.train], y[:args.train], X[args.train:], y[args.train:])
    planned = fd.trials(SPACE, args.trials, seed=0)
    out = {}
    results = {}

    def serial(threads):
        def run():
            results[f"serial_{threads}t"] = [fd.run_trial(build, p, data, trial_seed=s, epochs=args.epochs)
                                             for _, p, s in planned]
        return threads, run

    def parallel():
        results["search"] = fd.search(build, SPACE, data, n_trials=args.trials, epochs=args.epochs, client=client,
                                      progress=False, seed=0)

    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        fd.run_trial(build, planned[0][1], data, trial_seed=planned[0][2], epochs=1, return_model=False)  # warm
    fd.search(build, SPACE, data, n_trials=2, epochs=1, client=client, progress=False, seed=99)  # warm workers
    times = _rounds({"serial_1t": serial(1), "serial_2t": serial(2), "search_2w": (2, parallel)},
                    args.search_repeats)
    for name, runs in times.items():
        out[f"{name}_s"], out[f"{name}_runs"] = min(runs), runs
    for threads in (1, 2):
        out[f"serial_{threads}t_metrics"] = [r["metrics"]["val_accuracy"] for r in results[f"serial_{threads}t"]]
    out["search_metrics"] = [r["metrics"]["val_accuracy"] for r in results["search"].trials]
    out["same_metrics_as_serial"] = out["search_metrics"] == out["serial_1t_metrics"]
    out["speedup_vs_1t"] = out["serial_1t_s"] / out["search_2w_s"]
    out["speedup_vs_2t"] = out["serial_2t_s"] / out["search_2w_s"]
    for t in (1, 2):
        out[f"speedup_vs_{t}t_median_of_rounds"] = float(np.median(
            [a / b for a, b in zip(times[f"serial_{t}t"], times["search_2w"])]))
    return out


def bench_data_parallel(args, client):
    X, y = synthetic(args.dp_examples, seed=2)
    out = {}

    def fitter(threads, make):
        model = Model(lenet5(0), nn.SoftmaxCrossEntropy())
        opt = optim.Adam(model.network.params, 1e-3)
        trainer = make(model)
        run = lambda: trainer.fit(X, y, epochs=1, batch_size=256, optimizer=opt, rng=0, progress=False)  # noqa: E731
        fastnn.set_num_threads(threads)
        run()  # warm-up epoch
        return threads, run

    fitters = {"single_2t": fitter(2, lambda m: m), "single_1t": fitter(1, lambda m: m),
               "dp_2w": fitter(2, lambda m: fd.DataParallel(m, client))}
    times = _rounds(fitters, args.repeats)
    for name, runs in times.items():
        out[f"{name}_epoch_s"], out[f"{name}_epochs"] = min(runs), runs
    out["overhead_vs_2t"] = out["dp_2w_epoch_s"] / out["single_2t_epoch_s"] - 1
    out["overhead_vs_1t"] = out["dp_2w_epoch_s"] / out["single_1t_epoch_s"] - 1
    for t in (1, 2):
        out[f"overhead_vs_{t}t_median_of_rounds"] = float(np.median(
            [a / b - 1 for a, b in zip(times["dp_2w"], times[f"single_{t}t"])]))
    out["steps_per_epoch"] = -(-args.dp_examples // 256)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller run (a smoke test of the script)")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--only", choices=("search", "dp"))
    args = p.parse_args()
    args.trials, args.epochs, args.train = 8, 3, 1024
    args.dp_examples, args.repeats, args.search_repeats = 4096, 5, 3
    if args.quick:
        args.epochs, args.train, args.dp_examples, args.repeats, args.search_repeats = 1, 256, 1024, 1, 1
    start = time.perf_counter()
    cluster, client = fd.local_cluster(2)
    startup = time.perf_counter() - start
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": _cpu(), "cores": os.cpu_count(),
            "python": platform.python_version(), "fastnn": fastnn.__version__, "backend": fastnn.get_backend(),
            "cluster": "LocalCluster 2 worker processes x 1 thread (fastnn threads 1)",
            "cluster_startup_s": startup, "loadavg_before": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    try:
        if args.only in (None, "search"):
            info["search"] = bench_search(args, client)
            s = info["search"]
            print(f"search {args.trials} LeNet-5 trials x {args.epochs} epochs on {args.train} examples: "
                  f"serial 1 thread {s['serial_1t_s']:.2f}s, serial 2 threads {s['serial_2t_s']:.2f}s, "
                  f"2 workers {s['search_2w_s']:.2f}s -> {s['speedup_vs_1t']:.2f}x vs 1 thread, "
                  f"{s['speedup_vs_2t']:.2f}x vs 2 threads (median of rounds {s['speedup_vs_1t_median_of_rounds']:.2f}x, "
                  f"{s['speedup_vs_2t_median_of_rounds']:.2f}x)", flush=True)
        if args.only in (None, "dp"):
            info["data_parallel"] = d = bench_data_parallel(args, client)
            print(f"DataParallel LeNet-5 batch 256, {args.dp_examples} examples ({d['steps_per_epoch']} steps): "
                  f"single 2 threads {d['single_2t_epoch_s']:.3f}s/epoch, single 1 thread "
                  f"{d['single_1t_epoch_s']:.3f}s, 2 workers {d['dp_2w_epoch_s']:.3f}s -> overhead "
                  f"{100 * d['overhead_vs_2t']:+.1f}% vs 2 threads ({100 * d['overhead_vs_1t']:+.1f}% vs 1 thread); "
                  f"median of rounds {100 * d['overhead_vs_2t_median_of_rounds']:+.1f}% "
                  f"({100 * d['overhead_vs_1t_median_of_rounds']:+.1f}%)", flush=True)
    finally:
        client.close()
        cluster.close()
    info["loadavg_after"] = os.getloadavg()
    print(f"load average before {info['loadavg_before'][0]:.2f}, after {info['loadavg_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return info


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
