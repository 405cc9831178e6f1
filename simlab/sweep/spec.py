"""Sweep specifications: TOML -> validated grid of cells.

A spec names a registered cell experiment (:mod:`simlab.sweep.cells`) or a
user's own (``experiment = "package.module:object"``, :mod:`simlab.sweep.user`), fixed
parameters, axes, replicates and the metrics to keep::

    experiment = "linearized-dial"
    seed = 0
    replicates = 2            # independent seeds per grid point
    metrics = ["rho", "escape_fraction"]

    [fixed]
    n = 40
    eta = 0.5

    [axes]
    s = { range = [1, 41, 4] }            # start, stop[, step] (stop excluded)
    batch = { values = [1, 2, 4, 8, 16] }
    alpha = { linspace = [0.0, 0.4, 5] }  # start, stop, num
    # eta = { logspace = [-2, 0, 5] }     # base-10 exponents, num

    [[zip]]                  # axes that vary together: one dimension "n+d"
    n = [50, 100]
    d = [200, 1000]

Every error names the field and, where it can be found, the line of the file.
Values are checked against the same rules the library applies at run time
(:data:`CONSTRAINTS`: ``eta > 0``, ``batch >= 1``, ``alpha`` in ``[0, 1]``, ...,
and :data:`AT_MOST`: ``s <= n``, ``batch <= n``), so that a bad value stops the
sweep before any store is created, not in the middle of it.
"""

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import (
    check_alpha,
    check_escape_factor,
    check_eta,
    check_int,
    check_positive,
    check_seed,
)

_TOP_KEYS = {"experiment", "seed", "replicates", "metrics", "fixed", "axes", "zip",
             "batch_size"}
_AXIS_KINDS = {"values", "range", "linspace", "logspace"}

#: Largest grid (cells, replicates included) a spec may describe: the store
#: holds a few float64 arrays of this size in memory when it is created.
MAX_CELLS = 10_000_000


def _int_at_least(low):
    return lambda v, name: check_int(v, name, low=low)


def _p_flip(v, name):
    v = check_positive(v, name, allow_zero=True)
    if not v < 0.5:
        raise ValueError(f"{name} must lie in [0, 0.5), got {v}")
    return v


#: Parameter name -> check ``(value, name) -> value`` raising ``ValueError``.
#: The same rule for a name in every cell experiment (the library's own checks
#: from ``simlab._validation``); :data:`EXPERIMENT_CONSTRAINTS` refines it.
CONSTRAINTS = {
    "n": _int_at_least(1), "s": _int_at_least(1), "p": _int_at_least(1),
    "d": _int_at_least(2), "m": _int_at_least(1), "n_test": _int_at_least(1),
    "batch": _int_at_least(1),
    "forget_batch": _int_at_least(0),          # 0: the experiment's default
    "steps": _int_at_least(0), "trajectories": _int_at_least(1),
    "family_seed": lambda v, name: check_seed(v, name),
    "eta": lambda v, name: check_eta(v, name),
    "eta_rel": lambda v, name: check_positive(v, name),
    "alpha": lambda v, name: check_alpha(v, name),
    "escape_factor": lambda v, name: check_escape_factor(v, name),
    "sigma_p": lambda v, name: check_positive(v, name),
    "sigma0": lambda v, name: check_positive(v, name, allow_zero=True),
    "mu_norm": lambda v, name: check_positive(v, name, allow_zero=True),
    "p_flip": _p_flip,
}

#: Experiment -> {parameter: check} overriding :data:`CONSTRAINTS`.
EXPERIMENT_CONSTRAINTS = {
    "cnn-train": {"steps": _int_at_least(1)},   # history is recorded at `steps`
}

#: ``(a, b)``: in every cell, ``a <= b`` (checked where the experiment has both;
#: ``forget_batch = 0`` means "the default" and is skipped).
AT_MOST = (("s", "n"), ("batch", "n"), ("forget_batch", "n"))

#: Parameter names that were renamed: old -> new (issue 8 vocabulary).
RENAMED = {"lr": "eta"}


class SpecError(ValueError):
    """An invalid sweep spec; the message names the field (and line)."""


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: a name and, per parameter, its values."""

    name: str
    params: dict          # param name -> list of values (all the same length)

    @property
    def size(self):
        return len(next(iter(self.params.values())))


@dataclass(frozen=True)
class Spec:
    """A validated sweep spec."""

    experiment: str
    fixed: dict
    axes: tuple
    metrics: tuple
    seed: int = 0
    replicates: int = 1
    batch_size: int | None = None
    source: dict = field(default_factory=dict, compare=False)
    #: For a user experiment (``"module:object"``): its module's source hash and
    #: version (:func:`simlab.sweep.user.source_info`); ``None`` for built-ins.
    code: dict | None = field(default=None, compare=False)

    @property
    def shape(self):
        return tuple(a.size for a in self.axes) + (self.replicates,)

    @property
    def dims(self):
        return tuple(a.name for a in self.axes) + ("replicate",)

    @property
    def n_cells(self):
        return int(np.prod(self.shape))

    def canonical(self):
        """JSON text identifying the work (not the batch size, a run detail)."""
        return json.dumps({
            "experiment": self.experiment, "fixed": self.fixed,
            "axes": [[a.name, a.params] for a in self.axes],
            "metrics": list(self.metrics), "seed": self.seed,
            "replicates": self.replicates}, sort_keys=True, default=_jsonable)

    def hash(self):
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def cell_params(self, flat):
        """Parameters of the cell with flat (C-order) index ``flat``."""
        idx = np.unravel_index(flat, self.shape)
        params = dict(self.fixed)
        for axis, i in zip(self.axes, idx[:-1]):
            for name, values in axis.params.items():
                params[name] = values[i]
        return params

    def cell_seeds(self):
        """One independent 63-bit seed per cell, from ``SeedSequence(seed)``."""
        state = np.random.SeedSequence(self.seed).generate_state(
            self.n_cells, dtype=np.uint64)
        return (state >> np.uint64(1)).astype(np.int64)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def _line_locator(text):
    """Map ``(table, key)`` -> 1-based line number of its definition."""
    where, table = {}, ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        m = re.match(r"^\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?", s)
        if m:
            table = m.group(1)
            where.setdefault((table, None), lineno)
            continue
        m = re.match(r"^([A-Za-z0-9_\-\"']+)\s*=", s)
        if m:
            where.setdefault((table, m.group(1).strip("\"'")), lineno)
    return where


class _Errors:
    def __init__(self, path, text):
        self.path = path
        self.where = _line_locator(text)

    def __call__(self, table, key, msg):
        line = self.where.get((table, key)) or self.where.get((table, None))
        loc = f"{self.path}:{line}" if line else str(self.path)
        name = f"{table}.{key}" if table and key else (key or table)
        return SpecError(f"{loc}: {name}: {msg}")


def _axis_values(kind, arg, err, key):
    if kind == "values":
        if not isinstance(arg, list):
            raise err("axes", key, "'values' must be a list")
        return list(arg)
    if not isinstance(arg, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in arg):
        raise err("axes", key, f"'{kind}' must be a list of numbers")
    if kind == "range":
        if len(arg) not in (2, 3) or not all(isinstance(v, int) for v in arg):
            raise err("axes", key, "'range' takes [start, stop] or [start, stop, step]"
                      " integers")
        if len(arg) == 3 and arg[2] == 0:
            raise err("axes", key, "'range' step must not be 0")
        size = len(range(*arg))
    else:
        if len(arg) != 3 or not isinstance(arg[2], int) or arg[2] < 0:
            raise err("axes", key, f"'{kind}' takes [start, stop, num] with integer "
                      "num >= 0")
        size = arg[2]
    if size > MAX_CELLS:
        raise err("axes", key, f"{size} values, more than a sweep may hold "
                  f"({MAX_CELLS}); split the sweep")
    if kind == "range":
        return list(range(*arg))
    fn = np.linspace if kind == "linspace" else np.logspace
    with np.errstate(over="ignore"):         # inf is refused by the value check
        return [float(v) for v in fn(arg[0], arg[1], arg[2])]


def _check_value(name, value, kind, err, table, key, rule=None):
    """Check one parameter value against the experiment's declared type and,
    if given, its value rule (see :data:`CONSTRAINTS`)."""
    typ, choices = kind
    ok = (isinstance(value, typ) and not isinstance(value, bool)) or (
        typ is float and isinstance(value, int) and not isinstance(value, bool))
    if typ is bool:
        ok = isinstance(value, bool)
    if not ok:
        raise err(table, key, f"parameter {name!r} must be {typ.__name__}, got "
                  f"{value!r}")
    if choices is not None and value not in choices:
        raise err(table, key, f"parameter {name!r} must be one of {choices}, got "
                  f"{value!r}")
    value = float(value) if typ is float else value
    if rule is not None:
        try:
            rule(value, name)
        except ValueError as exc:
            raise err(table, key, str(exc)) from None
    return value


def _unknown(key, experiment, params):
    new = RENAMED.get(key)
    if new is not None and new in params:
        return f"parameter {key!r} is now called {new!r} (simlab 0.x vocabulary)"
    return f"unknown parameter for {experiment!r} (known: {sorted(params)})"


def _grid_value(spec, name):
    """``name``'s values broadcast over the grid dimensions (no replicates)."""
    if name in spec.fixed:
        return np.asarray(spec.fixed[name])
    ndim = len(spec.axes)
    for i, axis in enumerate(spec.axes):
        if name in axis.params:
            shape = [1] * ndim
            shape[i] = axis.size
            return np.asarray(axis.params[name]).reshape(shape)
    return None


def _check_at_most(spec, origin, err):
    """Every cell satisfies :data:`AT_MOST` (broadcast: no loop over cells)."""
    for a, b in AT_MOST:
        va, vb = _grid_value(spec, a), _grid_value(spec, b)
        if va is None or vb is None:
            continue
        va, vb = np.broadcast_arrays(va, vb)
        bad = (va > vb) & ~((va == 0) if a == "forget_batch" else False)
        if np.any(bad):
            i = np.unravel_index(np.argmax(bad), bad.shape)
            table, key = origin[a]
            raise err(table, key, f"{a} = {va[i]} exceeds {b} = {vb[i]} in some "
                      f"cells (needs {a} <= {b})")


def parse_spec(source, path="<spec>"):
    """Validate a spec given as TOML text or a dict; return a :class:`Spec`."""
    from .cells import CELL_EXPERIMENTS, get_cell_experiment

    text = source if isinstance(source, str) else ""
    err = _Errors(path, text)
    if isinstance(source, str):
        try:
            raw = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: invalid TOML: {exc}") from None
    else:
        raw = dict(source)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise err("", k, f"unknown field (allowed: {sorted(_TOP_KEYS)})")
    if "experiment" not in raw:
        raise err("", "experiment", "missing: name a registered cell experiment")
    try:
        exp = get_cell_experiment(raw["experiment"])
    except ValueError as exc:
        raise err("", "experiment", str(exc)) from None
    params = exp.PARAMS
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise err("", "seed", f"must be a non-negative integer, got {seed!r}")
    reps = raw.get("replicates", 1)
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
        raise err("", "replicates", f"must be a positive integer, got {reps!r}")
    bs = raw.get("batch_size")
    if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
        raise err("", "batch_size", f"must be a positive integer, got {bs!r}")
    metrics = raw.get("metrics", list(exp.METRICS))
    if not isinstance(metrics, list) or not metrics:
        raise err("", "metrics", "must be a non-empty list")
    for m in metrics:
        if m not in exp.METRICS:
            raise err("", "metrics", f"unknown metric {m!r} for experiment "
                      f"{raw['experiment']!r} (known: {list(exp.METRICS)})")

    rules = {k: CONSTRAINTS.get(k) for k in params}
    rules.update(EXPERIMENT_CONSTRAINTS.get(raw["experiment"], {}))
    fixed, origin = {}, {}
    for key, value in (raw.get("fixed") or {}).items():
        if key not in params:
            raise err("fixed", key, _unknown(key, raw["experiment"], params))
        fixed[key] = _check_value(key, value, params[key], err, "fixed", key,
                                  rules[key])
        origin[key] = ("fixed", key)

    axes, seen = [], set(fixed)
    for key, desc in (raw.get("axes") or {}).items():
        if key not in params:
            raise err("axes", key, _unknown(key, raw["experiment"], params))
        if key in seen:
            raise err("axes", key, "parameter given twice (fixed and axes?)")
        if not isinstance(desc, dict) or len(desc) != 1 or \
                next(iter(desc)) not in _AXIS_KINDS:
            raise err("axes", key, f"must be a table with one of {sorted(_AXIS_KINDS)}")
        kind, arg = next(iter(desc.items()))
        values = _axis_values(kind, arg, err, key)
        if not values:
            raise err("axes", key, "empty axis")
        values = [_check_value(key, v, params[key], err, "axes", key, rules[key])
                  for v in values]
        axes.append(Axis(key, {key: values}))
        seen.add(key)
        origin[key] = ("axes", key)
    for group in raw.get("zip") or []:
        if not isinstance(group, dict) or len(group) < 2:
            raise err("zip", None, "each [[zip]] needs at least two parameters")
        lengths = set()
        vals = {}
        for key, values in group.items():
            if key not in params:
                raise err("zip", key, _unknown(key, raw["experiment"], params))
            if key in seen:
                raise err("zip", key, "parameter given twice")
            if not isinstance(values, list) or not values:
                raise err("zip", key, "empty axis")
            vals[key] = [_check_value(key, v, params[key], err, "zip", key,
                                      rules[key]) for v in values]
            lengths.add(len(values))
            seen.add(key)
            origin[key] = ("zip", key)
        if len(lengths) != 1:
            raise err("zip", next(iter(group)), "zipped lists differ in length")
        axes.append(Axis("+".join(group), vals))
    missing = [k for k, v in exp.DEFAULTS.items() if v is None and k not in seen]
    if missing:
        raise err("fixed", None, f"missing required parameters {missing}")
    for k, v in exp.DEFAULTS.items():
        if k not in seen:
            fixed[k] = v
            origin[k] = ("fixed", None)
    n_cells = math.prod(a.size for a in axes) * reps
    if n_cells > MAX_CELLS:
        raise err("axes", None, f"the grid has {n_cells} cells (axes "
                  f"{ {a.name: a.size for a in axes} } x {reps} replicates), more "
                  f"than a sweep may hold ({MAX_CELLS}); split the sweep")
    code = None
    if raw["experiment"] not in CELL_EXPERIMENTS:
        from .user import source_info

        code = source_info(raw["experiment"])
    spec = Spec(experiment=raw["experiment"], fixed=fixed, axes=tuple(axes),
                metrics=tuple(metrics), seed=seed, replicates=reps, batch_size=bs,
                source=raw, code=code)
    _check_at_most(spec, origin, err)
    return spec


def load_spec(path):
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc})") from None
    return parse_spec(text, str(path))

