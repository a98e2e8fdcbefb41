"""The CPU tier a run measures, and a lower tier emulated fairly on a bigger CPU.

fastnn's compiled kernels come in tiers (``avx512``, ``avx2``, ``generic``); the
highest the CPU has runs unless ``FASTNN_ISA`` (or ``--isa``) asks for a lower one.
A ratio measured with fastnn held to AVX2 while PyTorch, the BLAS and Numba still
use AVX-512 says nothing about an AVX2 machine, so a lower tier limits all of them
to the same level. They read their limits when they are loaded, so the limits are
environment variables that must be set before the process imports any of them:
:func:`required_environment` names them, the command line re-executes itself with
them (see ``cli.py``), and :func:`observe` asks the libraries what they run.
"""
import os

from .. import _backends

ISAS = _backends.ISAS  # lowest first

# What each library must be told to run at the tier's level: oneDNN (PyTorch's
# convolutions), ATen (PyTorch's own vectorised kernels), MKL (PyTorch's BLAS),
# OpenBLAS (NumPy's and SciPy's, which the numba backend calls) and Numba (the
# same settings fastnn gives it under FASTNN_ISA, _backends.NUMBA_TARGET).
EMULATION = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        **_backends.NUMBA_TARGET["avx2"],
    },
    "generic": {
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "OPENBLAS_CORETYPE": "Nehalem",
        **_backends.NUMBA_TARGET["generic"],
    },
}
EMULATION_VARIABLES = tuple(EMULATION["avx2"])
LEVEL_LABEL = {"avx512": "AVX-512", "avx2": "AVX2", "generic": "SSE4 (no AVX)"}
# Set in the environment of the re-executed benchmark, so that it never re-executes again.
REEXEC_GUARD = "FASTNN_BENCH_REEXEC"

def cpu_isa():
    """The highest tier this CPU can run (fastnn's own check of its features, through
    the compiled kernels; None without them)."""
    return _backends.cpu_isa()


def check_isa(name, option="--isa"):
    if name is None:
        return None
    if name.lower() not in ISAS:
        raise ValueError(f"{option} expects one of {', '.join(ISAS)}, got {name!r}")
    return name.lower()


def asked_isa(option=None, environ=os.environ):
    """The tier asked for: ``--isa``, else ``FASTNN_ISA``, else None (the highest)."""
    if option:
        return check_isa(option)
    return check_isa(environ.get("FASTNN_ISA") or None, "FASTNN_ISA")


def is_below(isa, top):
    return isa is not None and top is not None and ISAS.index(isa) < ISAS.index(top)


def required_environment(asked, top):
    """{variable: value} for a run at tier ``asked`` on a CPU whose highest is ``top``;
    a value of None means the variable must be unset. Below the top every library is
    limited to the tier; at the top nothing is (a leftover limit is removed)."""
    if is_below(asked, top):
        return {"FASTNN_ISA": asked, **EMULATION[asked]}
    return {"FASTNN_ISA": None, **{name: None for name in EMULATION_VARIABLES}}


def mismatches(required, environ=os.environ):
    """The variables of ``required`` whose value in ``environ`` differs."""
    return {name: value for name, value in required.items() if environ.get(name) != value}


def reexec_environment(required, environ=os.environ):
    """The environment to re-execute with, or None when ``environ`` already is what
    the tier needs or this process is itself a re-execution (never loop)."""
    if not mismatches(required, environ) or environ.get(REEXEC_GUARD):
        return None
    env = dict(environ)
    for name, value in required.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env[REEXEC_GUARD] = "1"
    return env


def observe(torch=None):
    """What the libraries report they run at: PyTorch's ATen capability, the OpenBLAS
    core of each package that ships one, and Numba's target CPU."""
    seen = {}
    if torch is not None:
        try:
            seen["torch"] = torch.backends.cpu.get_cpu_capability()
        except Exception:  # an older PyTorch without the query
            pass
    try:
        from threadpoolctl import threadpool_info
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
        seen["openblas"] = {_owner(lib.get("filepath", "")): lib.get("architecture")
                            for lib in threadpool_info() if lib.get("internal_api") == "openblas"}
    except ImportError:
        pass
    try:
        from numba.core import config
        seen["numba"] = {"cpu": config.CPU_NAME or "host", "features": config.CPU_FEATURES}
    except ImportError:
        pass
    return seen


def _owner(path):
    for part in path.replace("\\", "/").split("/"):
        name = part.split(".")[0]
        if name in ("numpy", "scipy", "torch"):
            return name
    return "other"


def tier_report(info, asked, top, environ=os.environ, observed=None):
    """The tier section of the JSON report. ``info`` is ``fastnn.cpu_info()``."""
    required = required_environment(asked, top)
    limits = {name: value for name, value in required.items() if value is not None and name != "FASTNN_ISA"}
    return {
        "isa": info.get("isa"), "isa_max": info.get("isa_max"), "isa_forced": info.get("isa_forced"),
        "cpu_isa": top, "asked": asked, "tier": asked or top,
        "limits": {name: environ.get(name) for name in limits},
        "missing": sorted(name for name in limits if environ.get(name) != limits[name]),
        "stray": {name: environ[name] for name in EMULATION_VARIABLES
                  if name in environ and name not in limits},
        "observed": observed or {},
    }


def tier_lines(tier):
    """The report header's account of the tier: which one ran, of which, and exactly
    what else was limited to it."""
    ran, top, asked = tier.get("isa"), tier.get("cpu_isa"), tier.get("tier")
    lines = []
    if tier.get("limits"):
        level = LEVEL_LABEL.get(asked, asked)
        missing = tier.get("missing") or []
        if not missing:
            how = f"PyTorch, BLAS and Numba limited to {level}"
        else:
            how = f"NOT fully limited to {level}: {', '.join(missing)} unset, those run at {top}"
        line = f"Tier {asked} (of {top}; {how})"
        lines.append(line)
        lines.append("Limited: " + _limits_text(tier))
    else:
        lines.append(f"Tier {asked}" + (f" (of {top})" if top and asked != top else ""))
        if tier.get("stray"):
            lines.append("Set in the environment: " + ", ".join(f"{k}={v}" for k, v in tier["stray"].items()))
    if ran and ran != asked:
        lines.append(f"fastnn reports tier {ran} (its highest: {tier.get('isa_max')}), not {asked}")
    return lines


def _limits_text(tier):
    limits, seen = tier["limits"], tier.get("observed") or {}
    parts = []
    aten = f"ATEN_CPU_CAPABILITY={limits.get('ATEN_CPU_CAPABILITY')}"
    if seen.get("torch"):
        aten += f" (PyTorch reports {seen['torch']})"
    parts += [aten, f"ONEDNN_MAX_CPU_ISA={limits.get('ONEDNN_MAX_CPU_ISA')}",
              f"MKL_ENABLE_INSTRUCTIONS={limits.get('MKL_ENABLE_INSTRUCTIONS')}"]
    openblas = f"OPENBLAS_CORETYPE={limits.get('OPENBLAS_CORETYPE')}"
    if seen.get("openblas"):
        openblas += " (" + ", ".join(f"{owner}'s OpenBLAS reports {arch}"
                                     for owner, arch in sorted(seen["openblas"].items())) + ")"
    parts.append(openblas)
    parts.append(f"NUMBA_CPU_NAME={limits.get('NUMBA_CPU_NAME')}, "
                 f"NUMBA_CPU_FEATURES={limits.get('NUMBA_CPU_FEATURES')}")
    return " · ".join(parts)
