"""User-defined cell experiments: your own grid point, run by ``simlab sweep``.

A spec may name ``experiment = "package.module:object"`` instead of a built-in
name. The object is either

* a class (or any object) following the **cell protocol** of
  :mod:`simlab.sweep.cells`:

  - ``PARAMS``: ``{name: (type, choices)}`` with ``type`` one of ``int``,
    ``float``, ``str``, ``bool`` and ``choices`` a tuple of allowed values or
    ``None``;
  - ``DEFAULTS``: ``{name: value}``, ``None`` meaning "required";
  - ``METRICS``: tuple of metric names;
  - ``evaluate(params_list, seeds, backend) -> {metric: array of len(params_list)}``,
    a whole batch of cells at once (``backend`` is ``"cpu"`` or ``"cuda"``);
  - optionally ``batch_key(params)``: cells with equal keys may share a batch;

* or a plain per-cell function decorated with :func:`cell`, which builds that
  protocol around it::

      from simlab.sweep import cell

      @cell(params={"n": int, "eta": float}, metrics=("loss",),
            defaults={"eta": 0.1})
      def my_cell(n, eta, seed):
          return {"loss": ...}

Guarantees (the same as for the built-in cells): the store is crash-safe and
resumable; a cell that raises is reported with its parameters and seed
(:class:`CellError`) while every other finished cell is kept; the store records
the user module's source hash and version, and resuming a store after that
source changed is refused unless ``restart`` (a ``module:object`` string alone
cannot tell that the code behind it changed). On Dask the module must be
importable on the workers: :func:`check_workers` checks it, with the same
source, before any cell is submitted.

Parameter values are checked by name with the library's rules
(:data:`simlab.sweep.spec.CONSTRAINTS`: a parameter called ``eta`` must be
positive, ``alpha`` in ``[0, 1]`` ...), whatever the experiment.
"""

import hashlib
import importlib
import importlib.metadata
import re
import sys
import traceback
from pathlib import Path

import numpy as np

__all__ = ["CellError", "cell", "check_workers", "is_reference", "load", "source_info"]

_TYPES = (int, float, str, bool)
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class CellError(RuntimeError):
    """Cells of a sweep raised; every other finished cell was saved.

    Attributes
    ----------
    failures : list of dict
        One per failed cell: ``params``, ``seed``, ``error`` (the exception as
        ``Type: message``) and ``traceback`` (text).
    saved : int
        Cells committed by this run.
    """

    def __init__(self, failures, saved, total):
        self.failures, self.saved, self.total = failures, saved, total
        lines = [f"{len(failures)} cell(s) raised; {saved} finished cell(s) of this "
                 f"run were saved ({total} cells in the sweep); rerun to retry the "
                 "failed ones"]
        for f in failures[:5]:
            lines.append(f"  cell {f['params']} (seed {f['seed']}): {f['error']}")
        if len(failures) > 5:
            lines.append(f"  ... and {len(failures) - 5} more")
        super().__init__("\n".join(lines))


def is_reference(name):
    """Whether ``name`` is a ``"module:object"`` reference (not a built-in name)."""
    return isinstance(name, str) and bool(_REF.match(name))


def _normalize_params(params):
    out = {}
    for name, kind in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"cell parameter names must be identifiers, got {name!r}")
        if isinstance(kind, type):
            kind = (kind, None)
        if (not isinstance(kind, tuple) or len(kind) != 2 or kind[0] not in _TYPES
                or not (kind[1] is None or isinstance(kind[1], tuple))):
            raise ValueError(f"cell parameter {name!r}: declare a type among int, "
                             f"float, str, bool, or (type, choices); got {kind!r}")
        out[name] = kind
    return out


def _check_protocol(obj, ref):
    """Raise ``ValueError`` naming what ``obj`` lacks of the cell protocol."""
    missing = [a for a in ("PARAMS", "DEFAULTS", "METRICS", "evaluate")
               if not hasattr(obj, a)]
    if missing:
        raise ValueError(f"experiment {ref!r} does not follow the cell protocol: it "
                         f"lacks {missing} (see simlab.sweep.user; or decorate a "
                         "per-cell function with @simlab.sweep.cell)")
    params = _normalize_params(obj.PARAMS)
    if not callable(obj.evaluate):
        raise ValueError(f"experiment {ref!r}: evaluate must be callable")
    metrics = tuple(obj.METRICS)
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise ValueError(f"experiment {ref!r}: METRICS must be a non-empty tuple of "
                         "names")
    extra = set(obj.DEFAULTS) - set(params)
    if extra:
        raise ValueError(f"experiment {ref!r}: DEFAULTS name parameters not in "
                         f"PARAMS: {sorted(extra)}")
    return params


def load(ref):
    """The cell experiment named by ``"module:object"``, protocol checked.

    Raises
    ------
    ValueError
        If the module cannot be imported, has no such object, or the object
        does not follow the cell protocol (the message says what is missing).
    """
    if not is_reference(ref):
        raise ValueError(f"experiment {ref!r} is neither a built-in cell experiment "
                         "nor a 'package.module:object' reference")
    module, _, name = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"experiment {ref!r}: cannot import {module!r} ({exc}); "
                         "is it installed or on PYTHONPATH?") from None
    obj = mod
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"experiment {ref!r}: module {module!r} has no "
                             f"attribute {name!r}")
        obj = getattr(obj, part)
    params = _check_protocol(obj, ref)
    if params != obj.PARAMS and not isinstance(obj, _CellFunction):
        obj = _with_params(obj, params)
    return obj


class _with_params:
    """A protocol object whose ``PARAMS`` were given as bare types: normalized."""

    def __init__(self, obj, params):
        self._obj, self.PARAMS = obj, params

    def __getattr__(self, name):
        return getattr(self._obj, name)


def source_info(ref):
    """``{"module", "source_sha256", "version"}`` of a user experiment's module.

    ``source_sha256`` hashes the bytes of the module's ``.py`` file (``None``
    when it has none, e.g. a compiled extension); ``version`` is the module's or its
    top-level package's ``__version__``, else the installed distribution's
    version, else ``None``.
    """
    module = ref.partition(":")[0]
    mod = importlib.import_module(module)
    path = getattr(mod, "__file__", None)
    try:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest() if (
            path and path.endswith(".py")) else None
    except OSError:
        sha = None
    top = module.split(".")[0]
    version = getattr(mod, "__version__", None) or getattr(
        sys.modules.get(top), "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            version = None
    return {"module": module, "source_sha256": sha,
            "version": None if version is None else str(version)}


def check_workers(client, ref):
    """Check that every Dask worker imports ``ref``'s module with the same source.

    Raises
    ------
    ValueError
        Naming the workers that cannot import it (and why) or that hold a
        different source (a stale copy would compute different cells).
    """
    local = source_info(ref)

    def _info(ref=ref):
        try:
            return source_info(ref)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            return {"error": f"{type(exc).__name__}: {exc}"}

    infos = client.run(_info)
    bad = {w: i["error"] for w, i in infos.items() if "error" in i}
    if bad:
        raise ValueError(f"experiment {ref!r}: its module cannot be imported on Dask "
                         f"workers {sorted(bad)} ({next(iter(bad.values()))}); install "
                         "it on the workers (or client.upload_file) and retry")
    stale = sorted(w for w, i in infos.items()
                   if i["source_sha256"] != local["source_sha256"])
    if stale:
        raise ValueError(f"experiment {ref!r}: Dask workers {stale} import a "
                         "different source of its module than this process; "
                         "update them and retry")


class _CellFunction:
    """The cell protocol around a per-cell function (see :func:`cell`)."""

    def __init__(self, fn, params, metrics, defaults, batch_key):
        self.fn = fn
        self.PARAMS = _normalize_params(params)
        self.METRICS = tuple(metrics)
        self.DEFAULTS = {k: defaults.get(k) for k in self.PARAMS}
        if batch_key is not None:
            self.batch_key = batch_key
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "cell")
        self.__module__ = getattr(fn, "__module__", None)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def evaluate(self, params_list, seeds, backend="cpu"):
        """Call the function once per cell (``backend`` is not passed on)."""
        out = {m: np.empty(len(params_list)) for m in self.METRICS}
        for i, (p, s) in enumerate(zip(params_list, seeds)):
            res = self.fn(**p, seed=int(s))
            if not isinstance(res, dict) or set(res) != set(self.METRICS):
                raise ValueError(f"cell function {self.__name__} must return a dict "
                                 f"with the keys {list(self.METRICS)}, got "
                                 f"{res!r:.200}")
            for m in self.METRICS:
                out[m][i] = float(res[m])
        return out


def cell(*, params, metrics, defaults=None, batch_key=None):
    """Register a plain per-cell function as a sweep cell experiment.

    Parameters
    ----------
    params : dict
        ``{name: type}`` or ``{name: (type, choices)}``; ``type`` among ``int``,
        ``float``, ``str``, ``bool``.
    metrics : sequence of str
        Keys of the dict the function returns.
    defaults : dict, optional
        Default values; parameters without one are required in the spec.
    batch_key : callable, optional
        ``params -> key``: cells with equal keys may share a batch.

    Returns
    -------
    decorator
        The decorated function becomes an object following the cell protocol
        (still callable as before): ``fn(**params, seed=seed) -> {metric:
        float}`` is called once per cell, with the cell's independent seed.

    Examples
    --------
    >>> @cell(params={"x": float}, metrics=("y",))
    ... def square(x, seed):
    ...     return {"y": x * x}
    >>> square.evaluate([{"x": 2.0}, {"x": 3.0}], [0, 1])["y"].tolist()
    [4.0, 9.0]
    """
    metrics = tuple(metrics)
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise ValueError("metrics must be a non-empty sequence of names")
    defaults = dict(defaults or {})
    extra = set(defaults) - set(params)
    if extra:
        raise ValueError(f"defaults name parameters not in params: {sorted(extra)}")

    def wrap(fn):
        if not callable(fn):
            raise ValueError("@cell decorates a function")
        return _CellFunction(fn, params, metrics, defaults, batch_key)

    return wrap


def evaluate_reporting(exp, params_list, seeds, backend):
    """Evaluate a batch; on an exception, evaluate its cells one by one.

    Returns
    -------
    ok : list of int
        Positions in the batch that produced values.
    values : dict
        ``{metric: array over ok}``.
    failures : list of dict
        The cells that raised (see :class:`CellError`).
    """
    try:
        values = exp.evaluate(params_list, seeds, backend=backend)
        return list(range(len(params_list))), values, []
    except Exception:  # noqa: BLE001 - narrowed to the failing cells below
        if len(params_list) == 1:
            exc_type, exc, _ = sys.exc_info()
            return [], {}, [{"params": dict(params_list[0]), "seed": int(seeds[0]),
                             "error": f"{exc_type.__name__}: {exc}",
                             "traceback": traceback.format_exc()}]
    ok, parts, failures = [], [], []
    for i, (p, s) in enumerate(zip(params_list, seeds)):
        o, v, f = evaluate_reporting(exp, [p], [s], backend)
        if o:
            ok.append(i)
            parts.append(v)
        failures.extend(f)
    values = {m: np.concatenate([np.asarray(v[m], dtype=np.float64).ravel()
                                 for v in parts]) for m in (parts[0] if parts else {})}
    return ok, values, failures
