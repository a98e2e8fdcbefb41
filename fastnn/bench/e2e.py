"""End-to-end cases E1-E3 of PERF.md (group "E"): one epoch of training a course
network with fastnn (its ``fastnn.nn`` layers, loss and fused Adam) against the same
network in PyTorch, started from the same weights (copied from fastnn), fed the same
batches in the same order, with PyTorch's thread count set to the case's.

Random data is used for timing (the work of an epoch does not depend on the values).
E1 also trains the first steps of both in float64 and compares the losses, which
must agree to 1e-4: the check that the two really are the same network.

Slow (seconds per epoch): never part of the quick or default suite; ``fastnn-bench
--cases E`` (or ``E1,E3``) runs them.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .timing import Plan, measure

GROUP = "E"
TARGET_RATIO = 1.0          # fastnn / PyTorch, each case, each thread count
SCALING_TARGET = 1.5        # time at 1 thread / time at 2 threads
LOSS_TOLERANCE = 1e-4       # E1, float64: |loss_fastnn - loss_torch| of the first steps
LOSS_STEPS = 5
# an epoch lasts seconds: a warm-up epoch, then 3 timed ones at most (2 at least) per implementation
PLAN = Plan(repeat=3, min_repeat=2, warmup=1, min_sample_s=0.0, budget_s=20.0)
QUICK_PLAN = Plan(repeat=2, min_repeat=1, warmup=1, min_sample_s=0.0, budget_s=5.0)


@dataclass(frozen=True)
class EndToEndCase:
    id: str
    network: str
    dims: dict = field(hash=False)
    note: str = ""

    @property
    def steps(self):
        return -(-self.dims["examples"] // self.dims["batch"])


CASES = {
    "E1": EndToEndCase("E1", "lenet5", dict(examples=2048, batch=64, H=32, W=32, C=1, classes=10),
                       "LeNet-5, 32×32×1, Adam"),
    "E2": EndToEndCase("E2", "char_lstm", dict(examples=2048, batch=32, T=40, vocab=64, n_a=128),
                       "one-hot chars → LSTM → TimeDistributed Linear, Adam"),
    "E3": EndToEndCase("E3", "resnet", dict(examples=1024, batch=32, H=32, W=32, C=3, classes=10, width=16),
                       "stem + identity, convolutional (stride 2), identity block, BN, Adam"),
}


def describe(case):
    d = case.dims
    if case.network == "char_lstm":
        shape = f"vocab {d['vocab']}, n_a {d['n_a']}, T {d['T']}"
    else:
        shape = f"{d['H']}×{d['W']}×{d['C']}"
    return f"{case.note}: {shape}, batch {d['batch']}, {d['examples']} examples ({case.steps} steps)"


def split_spec(spec):
    """(E case ids, the rest of a ``--cases`` spec) : ``"E"`` or ``"e2e"`` is every E case."""
    if not spec:
        return [], spec
    wanted, rest = set(), []
    for token in (t.strip() for t in spec.split(",")):
        if token.upper() in ("E", "E2E"):
            wanted.update(CASES)
        elif token.upper() in CASES:
            wanted.add(token.upper())
        elif token:
            rest.append(token)
    return [c for c in CASES if c in wanted], ",".join(rest)


# --- data ----------------------------------------------------------------------------

def make_data(case, dtype="float32", seed=0):
    """(X, y) of one epoch, in fastnn's layout (NHWC images; (N, T, vocab) one-hot)."""
    rng = np.random.default_rng([seed, sum(map(ord, case.id))])
    d = case.dims
    if case.network == "char_lstm":
        ids = rng.integers(0, d["vocab"], (d["examples"], d["T"] + 1))
        X = np.eye(d["vocab"], dtype=dtype)[ids[:, :-1]]
        return X, ids[:, 1:]
    X = rng.random((d["examples"], d["H"], d["W"], d["C"])).astype(dtype)
    return X, rng.integers(0, d["classes"], d["examples"])


def batches(X, y, batch):
    return [(X[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]


# --- fastnn ----------------------------------------------------------------------------

def fastnn_network(case, dtype="float32", seed=0):
    from .. import nn
    from ..train import networks
    d = case.dims
    if case.network == "lenet5":
        return networks.lenet5(in_channels=d["C"], classes=d["classes"], rng=seed, dtype=dtype)
    if case.network == "resnet":
        return networks.small_resnet(in_channels=d["C"], classes=d["classes"], width=d["width"], rng=seed,
                                     dtype=dtype)
    rng = np.random.default_rng(seed)
    return nn.Sequential(("lstm", nn.LSTM(d["vocab"], d["n_a"], return_sequences=True, rng=rng, dtype=dtype)),
                         ("out", nn.TimeDistributed(nn.Linear(d["n_a"], d["vocab"], init="xavier", rng=rng,
                                                              dtype=dtype))))


class FastnnTrainer:
    """One epoch over fixed batches: forward, loss, backward, one fused Adam step each."""

    def __init__(self, network, data, lr=1e-3):
        from .. import nn, optim
        self.network, self.batches = network, data
        self.loss = nn.SoftmaxCrossEntropy()
        self.optimizer = optim.Adam(network.params, lr=lr)
        network.train()

    def step(self, x, y):
        loss = self.loss.forward(self.network.forward(x, training=True), y)
        self.network.backward_params(self.loss.backward())  # as Model.fit: no gradient of the data
        self.optimizer.step(self.network.grads)
        return loss

    def epoch(self):
        for x, y in self.batches:
            self.step(x, y)

    def losses(self, steps):
        return [float(self.step(x, y)) for x, y in self.batches[:steps]]


# --- PyTorch -------------------------------------------------------------------------------

def _param_groups(params):
    """fastnn's parameters grouped by layer, in the network's order: [(prefix, {name: array})]."""
    groups = {}
    for full, array in params.items():
        prefix, _, name = full.rpartition(".")
        groups.setdefault(prefix, {})[name] = array
    return list(groups.items())


def _pick(arrays, ndim, where):
    found = [a for a in arrays.values() if a.ndim == ndim]
    if len(found) != 1:
        raise ValueError(f"bench E: cannot match the parameters of {where} "
                         f"({ {k: v.shape for k, v in arrays.items()} })")
    return found[0]


def _bn_pick(arrays, names, where):
    for key, value in arrays.items():
        if key.lower() in names:
            return value
    raise ValueError(f"bench E: no {'/'.join(names)} among the parameters of {where} ({list(arrays)})")


def copy_weights(network, module, torch, flatten_hwc=None):
    """fastnn's initial weights into the PyTorch mirror, layer by layer in order, in
    PyTorch's layouts: conv (kh, kw, C_in, C_out) → (C_out, C_in, kh, kw); LSTM rows
    [f; u; c; o] acting on [h, x] → PyTorch's [i; f; g; o] split into weight_ih / weight_hh
    (bias_hh zero and frozen); the first Linear after a flatten of ``flatten_hwc = (H, W, C)``
    has its columns permuted from NHWC's (h, w, c) order to NCHW's (c, h, w)."""
    layers = [m for m in module.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.LSTM))]
    groups = _param_groups(network.params)
    if len(layers) != len(groups):
        raise ValueError(f"bench E: {len(groups)} parametric fastnn layers ({[g for g, _ in groups]}) "
                         f"but {len(layers)} in the PyTorch mirror")
    first_linear = True

    def put(tensor, array):
        value = torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype)
        if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(f"bench E: shape {tuple(value.shape)} from fastnn for {tuple(tensor.shape)}")
        tensor.copy_(value)

    with torch.no_grad():
        for layer, (prefix, arrays) in zip(layers, groups):
            if isinstance(layer, torch.nn.Conv2d):
                put(layer.weight, _pick(arrays, 4, prefix).transpose(3, 2, 0, 1))
                if layer.bias is not None:
                    put(layer.bias, _pick(arrays, 1, prefix).ravel())
            elif isinstance(layer, torch.nn.Linear):
                w = _pick(arrays, 2, prefix)
                if first_linear and flatten_hwc is not None:
                    H, W, C = flatten_hwc
                    w = w.reshape(w.shape[0], H, W, C).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
                first_linear = False
                put(layer.weight, w)
                put(layer.bias, [a for a in arrays.values() if a.ndim == 1 or a.ndim == 0][0].ravel())
            elif isinstance(layer, torch.nn.BatchNorm2d):
                put(layer.weight, _bn_pick(arrays, ("gamma", "weight", "scale"), prefix))
                put(layer.bias, _bn_pick(arrays, ("beta", "bias", "shift"), prefix))
            else:
                W, b = _pick(arrays, 2, prefix), _pick(arrays, 1, prefix)
                n_a = layer.hidden_size
                f, u, c, o = (slice(k * n_a, (k + 1) * n_a) for k in range(4))
                order = np.r_[np.arange(4 * n_a)[u], np.arange(4 * n_a)[f], np.arange(4 * n_a)[c],
                              np.arange(4 * n_a)[o]]
                put(layer.weight_hh_l0, W[order, :n_a])
                put(layer.weight_ih_l0, W[order, n_a:])
                put(layer.bias_ih_l0, b[order])
                # fastnn has one bias: PyTorch's second one stays at zero, untrained (two
                # biases trained by Adam move their sum twice as fast)
                layer.bias_hh_l0.zero_()
                layer.bias_hh_l0.requires_grad_(False)


def torch_module(case, torch):
    nn = torch.nn
    d = case.dims
    if case.network == "lenet5":
        return nn.Sequential(nn.Conv2d(d["C"], 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, d["classes"]))
    if case.network == "resnet":
        return _torch_resnet(torch, d["C"], d["classes"], d["width"])
    return _TorchCharLSTM(torch, d["vocab"], d["n_a"])


def _torch_resnet(torch, c_in, classes, width):
    nn = torch.nn

    def conv_bn(a, b, k, s, p):
        # momentum 0.1 in PyTorch's convention is fastnn's (the course's) 0.9
        return [nn.Conv2d(a, b, k, stride=s, padding=p, bias=False), nn.BatchNorm2d(b, momentum=0.1)]

    class Block(nn.Module):
        def __init__(self, c, filters, stride, shortcut):
            super().__init__()
            f1, f2, f3 = filters
            self.main = nn.Sequential(*conv_bn(c, f1, 1, stride, 0), nn.ReLU(), *conv_bn(f1, f2, 3, 1, 1), nn.ReLU(),
                                      *conv_bn(f2, f3, 1, 1, 0))
            self.shortcut = nn.Sequential(*conv_bn(c, f3, 1, stride, 0)) if shortcut else None

        def forward(self, x):
            y = self.main(x) + (x if self.shortcut is None else self.shortcut(x))
            return torch.relu(y)

    w, w2 = width, 2 * width
    return nn.Sequential(*conv_bn(c_in, w, 3, 1, 1), nn.ReLU(),
                         Block(w, (w // 2, w // 2, w), 1, False),
                         Block(w, (w, w, w2), 2, True),
                         Block(w2, (w, w, w2), 1, False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w2, classes))


def _TorchCharLSTM(torch, vocab, n_a):
    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(vocab, n_a, batch_first=True)
            self.out = torch.nn.Linear(n_a, vocab)

        def forward(self, x):
            return self.out(self.lstm(x)[0])
    return CharLSTM()


class TorchTrainer:
    def __init__(self, case, network, data, torch, lr=1e-3):
        self.torch = torch
        module = torch_module(case, torch)
        dtype = torch.float64 if data[0][0].dtype == np.float64 else torch.float32
        module = module.to(dtype)
        flatten = (5, 5, 16) if case.network == "lenet5" else None
        copy_weights(network, module, torch, flatten_hwc=flatten)
        self.module = module.train()
        image = case.network != "char_lstm"
        self.batches = [(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if image else x)),
                         torch.from_numpy(np.asarray(y, dtype=np.int64))) for x, y in data]
        self.optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)

    def step(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.module(x)
        loss = self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def epoch(self):
        for x, y in self.batches:
            self.step(x, y)

    def losses(self, steps):
        return [float(self.step(x, y)) for x, y in self.batches[:steps]]


# --- the measurement ---------------------------------------------------------------------

def loss_check(case, torch, steps=LOSS_STEPS, seed=0):
    """The first ``steps`` training losses of fastnn and PyTorch in float64, same weights, same batches."""
    X, y = make_data(case, "float64", seed)
    data = batches(X, y, case.dims["batch"])
    network = fastnn_network(case, "float64", seed)
    theirs = TorchTrainer(case, network, data, torch)   # copies the weights before fastnn trains them
    ours = FastnnTrainer(network, data)
    a, b = ours.losses(steps), theirs.losses(steps)
    diff = max(abs(p - q) for p, q in zip(a, b))
    return {"steps": steps, "fastnn": a, "torch": b, "max_abs_diff": diff, "tolerance": LOSS_TOLERANCE,
            "verdict": "pass" if diff <= LOSS_TOLERANCE else "miss"}


def profile(case, dtype="float32", seed=0, threads=1):
    """Where fastnn's epoch goes: seconds of forward and backward per top-level layer,
    the loss and the optimizer step, over one epoch (after a warm-up epoch)."""
    import fastnn
    fastnn.set_num_threads(threads)
    X, y = make_data(case, dtype, seed)
    network = fastnn_network(case, dtype, seed)
    trainer = FastnnTrainer(network, batches(X, y, case.dims["batch"]))
    trainer.epoch()
    totals = {}
    children = _children(network)

    def timed(name, kind, func):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                totals[(name, kind)] = totals.get((name, kind), 0.0) + time.perf_counter() - start
        return wrapper

    # the first layer's backward runs as backward_params (the data needs no gradient)
    backwards = ["backward_params"] + ["backward"] * (len(children) - 1)
    for (name, layer), method in zip(children, backwards):
        layer.forward = timed(name, "forward", layer.forward)
        setattr(layer, method, timed(name, "backward", getattr(layer, method)))
    trainer.loss.forward = timed("loss", "forward", trainer.loss.forward)
    trainer.loss.backward = timed("loss", "backward", trainer.loss.backward)
    trainer.optimizer.step = timed("Adam", "step", trainer.optimizer.step)
    try:
        start = time.perf_counter()
        trainer.epoch()
        total = time.perf_counter() - start
    finally:
        for (_, layer), method in zip(children, backwards):
            del layer.forward
            delattr(layer, method)
    rows = []
    for name in [n for n, _ in children] + ["loss", "Adam"]:
        fwd = totals.get((name, "forward"), totals.get((name, "step"), 0.0))
        bwd = totals.get((name, "backward"), 0.0)
        rows.append({"layer": name, "forward_s": fwd, "backward_s": bwd, "share": (fwd + bwd) / total})
    return {"case": case.id, "dtype": dtype, "threads": threads, "epoch_s": total, "rows": rows}


def _children(network):
    """(name, layer) of a container's direct children, whatever it keeps them in."""
    for attr in ("named_children", "children", "named_layers"):
        value = getattr(network, attr, None)
        if callable(value):
            value = value()
        if value:
            items = list(value.items()) if isinstance(value, dict) else list(value)
            if items and isinstance(items[0], tuple):
                return items
    layers = getattr(network, "layers", None)
    if isinstance(layers, dict):
        return list(layers.items())
    if layers:
        items = list(layers)
        return items if isinstance(items[0], tuple) else [(f"layer{i}", l) for i, l in enumerate(items)]
    return [(type(network).__name__.lower(), network)]


def run(case_ids, threads, torch, *, quick=False, seed=0, dtype="float32", check_losses=True, progress=None):
    """Time each case's epoch with fastnn and PyTorch at each thread count (one rotation
    per case and count), check E1's losses, profile fastnn at the first count.
    Returns plain JSON data."""
    import fastnn
    plan = QUICK_PLAN if quick else PLAN
    say = progress or (lambda message: None)
    previous = fastnn.get_num_threads()
    out = {"plan": {"repeat": plan.repeat, "min_repeat": plan.min_repeat, "warmup": plan.warmup},
           "dtype": dtype, "threads": list(threads), "torch": torch is not None, "cases": []}
    try:
        for case_id in case_ids:
            case = CASES[case_id]
            entry = {"id": case.id, "describe": describe(case), "dims": dict(case.dims), "timings": []}
            X, y = make_data(case, dtype, seed)
            data = batches(X, y, case.dims["batch"])
            for n in threads:
                say(f"{case.id} {describe(case)}, {n} thread(s)")
                fastnn.set_num_threads(n)
                network = fastnn_network(case, dtype, seed)
                funcs, before = {}, {}
                if torch is not None:
                    torch.set_num_threads(n)
                    theirs = TorchTrainer(case, network, data, torch)
                    funcs["torch"], before["torch"] = theirs.epoch, (lambda n=n: torch.set_num_threads(n))
                ours = FastnnTrainer(network, data)
                funcs["fastnn"], before["fastnn"] = ours.epoch, (lambda n=n: fastnn.set_num_threads(n))
                timed = measure(funcs, plan, before=before)
                for impl, result in timed.items():
                    entry["timings"].append({"impl": impl, "threads": n, **result})
            if case.id == "E1" and torch is not None and check_losses:
                say(f"{case.id}: the first {LOSS_STEPS} losses in float64 against PyTorch's")
                fastnn.set_num_threads(threads[0])
                torch.set_num_threads(threads[0])
                try:
                    entry["losses"] = loss_check(case, torch, seed=seed)
                except Exception as exc:  # report, never hide: the comparison did not run
                    entry["losses"] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"{case.id}: per-layer profile at {threads[0]} thread(s)")
            try:
                entry["profile"] = profile(case, dtype, seed, threads[0])
            except Exception as exc:
                entry["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
            out["cases"].append(entry)
    finally:
        fastnn.set_num_threads(previous)
    summarise(out)
    return out


def summarise(out):
    """Ratios fastnn / PyTorch per case and thread count, and the 1 → 2 thread speed-ups."""
    for entry in out["cases"]:
        times = {(t["impl"], t["threads"]): t.get("median_s") for t in entry["timings"]}
        rows = []
        for n in out["threads"]:
            ours, theirs = times.get(("fastnn", n)), times.get(("torch", n))
            ratio = ours / theirs if ours and theirs else None
            rows.append({"threads": n, "fastnn_s": ours, "torch_s": theirs, "ratio": ratio,
                         "verdict": "n/a" if ratio is None else ("pass" if ratio <= TARGET_RATIO else "miss")})
        entry["ratios"] = rows
        scaling = {}
        for impl in ("fastnn", "torch"):
            one, two = times.get((impl, 1)), times.get((impl, 2))
            scaling[impl] = one / two if one and two else None
        entry["scaling"] = scaling
    return out


def render_markdown(out):
    env = out.get("environment") or {}
    cpu = env.get("cpu") or {}
    lines = ["## End to end (E1-E3): one training epoch, fastnn / PyTorch", ""]
    if env:
        start, end = env.get("loadavg_start"), env.get("loadavg")
        load = f", 1-minute load average {start[0]:.1f} before, {end[0]:.1f} after" if start and end else ""
        lines += [f"{env.get('date', '')}, {cpu.get('cpu', '?')}, tier {cpu.get('isa', '?')}, "
                  f"{cpu.get('cpus', '?')} CPUs, PyTorch {env.get('torch')}, fastnn {env.get('fastnn')}{load}", ""]
    lines += [f"{out['dtype']}, timings are the median of {out['plan']['min_repeat']}-{out['plan']['repeat']} "
             f"epochs after {out['plan']['warmup']} warm-up; target ratio ≤ {TARGET_RATIO:g}, "
             f"speed-up 1 → 2 threads ≥ {SCALING_TARGET:g}×.", "",
             "| case | work | threads | fastnn s/epoch | PyTorch s/epoch | ratio | verdict |",
             "|---|---|---|---|---|---|---|"]
    for entry in out["cases"]:
        for row in entry["ratios"]:
            lines.append(f"| {entry['id']} | {entry['describe']} | {row['threads']} | {_s(row['fastnn_s'])} | "
                         f"{_s(row['torch_s'])} | {_r(row['ratio'])} | {row['verdict']} |")
    lines += ["", "| case | fastnn 1 → 2 threads | PyTorch 1 → 2 threads |", "|---|---|---|"]
    for entry in out["cases"]:
        s = entry["scaling"]
        lines.append(f"| {entry['id']} | {_x(s['fastnn'])} | {_x(s['torch'])} |")
    for entry in out["cases"]:
        if "losses" in entry:
            lo = entry["losses"]
            if "error" in lo:
                lines += ["", f"{entry['id']} loss check: did not run ({lo['error']})"]
            else:
                lines += ["", f"{entry['id']} loss check (float64, first {lo['steps']} steps, same weights and "
                              f"batches): max |fastnn − PyTorch| = {lo['max_abs_diff']:.2e} "
                              f"(tolerance {lo['tolerance']:g}): {lo['verdict']}"]
    for entry in out["cases"]:
        prof = entry.get("profile")
        if not prof:
            continue
        if "error" in prof:
            lines += ["", f"{entry['id']} profile: did not run ({prof['error']})"]
            continue
        lines += ["", f"{entry['id']} where fastnn's epoch goes ({prof['threads']} thread(s), "
                      f"{prof['epoch_s']:.3f} s):", "",
                  "| layer | forward s | backward s | share |", "|---|---|---|---|"]
        for row in prof["rows"]:
            lines.append(f"| {row['layer']} | {row['forward_s']:.3f} | {row['backward_s']:.3f} | "
                         f"{row['share']:.0%} |")
    return "\n".join(lines)


def _s(value):
    return "—" if value is None else f"{value:.3f}"


def _r(value):
    return "—" if value is None else f"{value:.2f}"


def _x(value):
    return "—" if value is None else f"{value:.2f}×"
