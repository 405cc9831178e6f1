"""Run a sweep into a resumable, crash-safe Zarr store.

Store layout (``xarray.open_zarr(STORE)`` reads it): one dimension per axis plus
``replicate``, one float64 variable per metric (NaN until computed), ``seed``
(the cell's seed) and ``done`` (int8). Attributes hold the spec (canonical
JSON), its hash, the experiment, simlab version and git revision.

Crash safety:

* The store is built in a hidden sibling folder (``.NAME.creating-*``) and
  renamed into place once complete, so a process killed at any moment leaves
  the store either absent or complete; leftovers of a killed creation are
  removed by the next run. ``restart`` builds the new store aside, moves the old
  one aside, renames the new one in and only then deletes the old one.
* Zarr's local store replaces chunk files atomically (write to a temporary
  file, then rename), and a batch is committed by writing its metrics first and
  its ``done`` flags last. A process killed while computing therefore leaves
  every cell either fully written and marked done, or not marked done (and
  recomputed on resume, overwriting whatever partial values it had). Metadata
  is written once at creation and never modified.
* One writer at a time: a run holds an exclusive lock (``filelock``) on the
  sibling file ``NAME.lock`` (an empty file, left in place) from before
  creation to its last commit; a second writer is refused with
  :class:`StoreLockedError`. Readers take no lock.

For tests, the environment variable ``SIMLAB_SWEEP_HOOK`` makes the process
kill (``kill@POINT``) or stop (``stop@POINT``) itself at a named point: one of
:data:`CREATION_POINTS`, or ``cells:K`` once K cells have been committed.
"""

import json
import math
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..dynamics.backends import BACKENDS as KERNEL_BACKENDS
from .cells import get_cell_experiment
from .spec import RENAMED, Spec, parse_spec
from .user import CellError, check_workers, evaluate_reporting

#: Kernel backends plus Dask (which submits batches of ``"cpu"`` work).
BACKENDS = (*KERNEL_BACKENDS, "dask")

#: Environment variable of the kill/stop test hook (see the module docstring).
HOOK_ENV = "SIMLAB_SWEEP_HOOK"

#: Named points of store creation, in order (``swapped`` only with restart).
CREATION_POINTS = ("create:locked", "create:aside", "create:unconsolidated",
                   "create:written", "create:swapped", "create:renamed")

_DEFAULT_BATCH = 64


class StoreError(ValueError):
    """A store that cannot be used for this sweep (names the store)."""


class StoreLockedError(StoreError):
    """Another process is writing the store."""


def _checkpoint(point, committed=0, before=0):
    """Test hook: kill or stop this process at ``point`` if ``$SIMLAB_SWEEP_HOOK``
    names it (``cells:K`` fires once, on the commit that reaches K cells)."""
    hook = os.environ.get(HOOK_ENV)
    if not hook:
        return
    action, _, where = hook.partition("@")
    if point == "cells":
        if not where.startswith("cells:"):
            return
        k = int(where.split(":", 1)[1])
        if not before < k <= committed:
            return
    elif where != point:
        return
    sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}[action]
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def check_batch_size(batch_size, name="batch_size"):
    """``None`` (use the spec's or the default) or an integer ``>= 1``."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"{name} must be a positive integer, got {batch_size}")
    return int(batch_size)


def _coords(spec):
    coords = {"replicate": np.arange(spec.replicates)}
    for axis in spec.axes:
        if len(axis.params) == 1:
            coords[axis.name] = np.asarray(axis.params[axis.name])
        else:
            coords[axis.name] = np.arange(axis.size)
            for name, values in axis.params.items():
                coords[name] = (axis.name, np.asarray(values))
    return coords


def _chunks(shape, target=4096):
    """Chunks of at most ``target`` cells, trailing dimensions whole first
    (cells are run in C order, so a batch touches few chunks)."""
    chunks, prod = [], 1
    for size in reversed(shape):
        c = size if prod * size <= target else max(1, target // prod)
        chunks.append(c)
        prod *= c
    return tuple(reversed(chunks))


def _write(spec, path):
    """Write a fresh store for ``spec`` at ``path`` (an empty folder)."""
    import zarr

    shape, dims = spec.shape, spec.dims
    chunks = _chunks(shape)
    data = {m: (dims, np.full(shape, np.nan)) for m in spec.metrics}
    data["done"] = (dims, np.zeros(shape, np.int8))
    data["seed"] = (dims, spec.cell_seeds().reshape(shape))
    ds = xr.Dataset(data, coords=_coords(spec))
    params = {"spec": json.loads(spec.canonical())}
    ds.attrs.update(provenance(params, spec.seed))
    ds.attrs.update(spec=spec.canonical(), spec_hash=spec.hash(),
                    experiment=spec.experiment)
    if spec.code is not None:          # a user experiment: which code computed it
        ds.attrs.update(experiment_module=spec.code["module"],
                        experiment_source_sha256=spec.code["source_sha256"] or "",
                        experiment_version=spec.code["version"] or "")
    enc = {v: {"chunks": chunks} for v in ds.data_vars}
    ds.to_zarr(path, mode="w", encoding=enc, zarr_format=2, consolidated=False)
    _checkpoint("create:unconsolidated")
    zarr.consolidate_metadata(str(path))


def _lock_path(store):
    return store.with_name(store.name + ".lock")


def _lock(store):
    """The store's exclusive writer lock, acquired (refuses at once if held)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(_lock_path(store)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StoreLockedError(
            f"{store} is being written by another simlab sweep (lock "
            f"{_lock_path(store)} is held); wait for it to finish or use another "
            "--out") from None
    except OSError as exc:
        raise StoreError(f"{store}: cannot take the writer lock "
                         f"{_lock_path(store)} ({exc.strerror or exc})") from None
    return lock


def _leftovers(store):
    prefixes = (f".{store.name}.creating-", f".{store.name}.old-")
    return [p for p in store.parent.iterdir() if p.name.startswith(prefixes)]


def _sibling(store, kind):
    """A new empty hidden folder beside ``store`` (removed by the next run if
    this one dies; the umask applies, unlike ``tempfile.mkdtemp``)."""
    path = store.with_name(f".{store.name}.{kind}-{os.getpid()}-"
                           f"{secrets.token_hex(4)}")
    path.mkdir()
    return path


def _keys(spec_json):
    """Every mapping key anywhere in a stored spec (canonical JSON)."""
    try:
        tree = json.loads(spec_json)
    except (TypeError, ValueError):
        return set()
    out, todo = set(), [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            out.update(node)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return out


def _check_existing(spec, store):
    """Raise :class:`StoreError` unless ``store`` is a complete store of ``spec``."""
    try:
        with xr.open_zarr(store) as ds:
            old = ds.attrs.get("spec_hash")
            old_spec = ds.attrs.get("spec", "{}")
            old_code = ds.attrs.get("experiment_source_sha256")
            names = set(ds.data_vars)
    except Exception as exc:  # noqa: BLE001 - any unreadable store
        raise StoreError(f"{store} exists but is not a simlab sweep store "
                         f"({exc}); pass restart=True (--restart) to "
                         "overwrite it") from None
    renamed = sorted(_keys(old_spec) & set(RENAMED))
    if old != spec.hash() and renamed:
        raise StoreError(
            f"{store} was written by an older simlab under parameter names that "
            "were renamed (" + ", ".join(f"{k!r} is now {RENAMED[k]!r}"
                                         for k in renamed)
            + "); its cells cannot be resumed under the new names: pass "
            "restart=True (--restart) to recompute, or keep it for reading")
    if old != spec.hash():
        raise StoreError(f"{store} holds a different sweep (spec hash {old}, "
                         f"this spec {spec.hash()}); pass restart=True "
                         "(--restart) to start over, or use another --out")
    new_code = (spec.code or {}).get("source_sha256") or ""
    if spec.code is not None and old_code != new_code:
        raise StoreError(
            f"{store}: the source of the cell experiment {spec.experiment!r} changed "
            f"since the store was written (module {spec.code['module']}, sha256 "
            f"{(old_code or 'unrecorded')[:12]} -> {new_code[:12] or 'unknown'}); "
            "its finished cells may not be what this code computes: pass "
            "restart=True (--restart) to recompute, or use another --out")
    missing = {"done", "seed", *spec.metrics} - names
    if missing:
        raise StoreError(f"{store} lacks the variables {sorted(missing)}; pass "
                         "restart=True (--restart) to start over")


def _open_locked(spec, store, restart):
    """:func:`open_store` body; the caller holds the writer lock."""
    for path in _leftovers(store):          # a killed creation's debris
        shutil.rmtree(path, ignore_errors=True)
    if store.exists() and not restart:
        _check_existing(spec, store)
        return store
    _checkpoint("create:locked")
    aside = _sibling(store, "creating")
    _checkpoint("create:aside")
    try:
        _write(spec, aside)
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)
        raise
    _checkpoint("create:written")
    old = None
    if store.exists():                      # restart: keep the old until replaced
        old = _sibling(store, "old")
        os.replace(store, old / "store")
        _checkpoint("create:swapped")
    os.replace(aside, store)
    _checkpoint("create:renamed")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return store


def _prepare(store):
    store = Path(store)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{store}: cannot create its folder {store.parent} "
                         f"({exc.strerror or exc})") from None
    if store.exists() and not store.is_dir():
        raise StoreError(f"{store} exists and is not a folder (a Zarr store is "
                         "one); use another --out")
    return store


def open_store(spec, store, *, restart=False):
    """Create ``store`` for ``spec``, or reopen it to resume.

    Creation is atomic (built aside, then renamed: the store is either absent
    or complete) and done under the store's writer lock.

    Raises
    ------
    StoreError
        If ``store`` holds a different spec and ``restart`` is False, or is
        not a sweep store (a ``ValueError``).
    StoreLockedError
        If another process is writing the store.
    """
    store = _prepare(store)
    lock = _lock(store)
    try:
        return _open_locked(spec, store, restart)
    finally:
        lock.release()


def _commit(group, spec, flat, values):
    """Write one batch: metrics first, ``done`` last (see module docstring)."""
    if not len(flat):
        return
    idx = np.unravel_index(np.asarray(flat), spec.shape)
    for m in spec.metrics:
        group[m].vindex[idx] = np.asarray(values[m], dtype=np.float64)
    group["done"].vindex[idx] = np.ones(len(flat), np.int8)


def _evaluate(experiment, params_list, seeds, backend):
    """Evaluate a batch of cells."""
    exp = get_cell_experiment(experiment)
    return exp.evaluate(params_list, seeds, backend=backend)


def _evaluate_reporting(experiment, params_list, seeds, backend):
    """``(ok, values, failures)`` of a batch, a raising cell isolated (see
    :func:`simlab.sweep.user.evaluate_reporting`); the function Dask workers run."""
    exp = get_cell_experiment(experiment)
    return evaluate_reporting(exp, params_list, seeds, backend)


def _commit_reported(group, spec, flat, result, failures):
    """Commit the cells of a batch that produced values; collect the others."""
    ok, values, failed = result
    _commit(group, spec, [flat[i] for i in ok], values)
    failures.extend(failed)
    return len(ok)


def _batches(spec, todo, seeds, batch_size):
    """Group pending cells by the experiment's batch key, then cut in batches."""
    exp = get_cell_experiment(spec.experiment)
    groups = {}
    for flat in todo:
        p = spec.cell_params(int(flat))
        key = exp.batch_key(p) if hasattr(exp, "batch_key") else None
        groups.setdefault(key, []).append((int(flat), p, int(seeds[flat])))
    for cells in groups.values():
        for i in range(0, len(cells), batch_size):
            chunk = cells[i:i + batch_size]
            yield ([c[0] for c in chunk], [c[1] for c in chunk],
                   [c[2] for c in chunk])


class _Progress:
    def __init__(self, total, initial, quiet):
        self.quiet = quiet
        self.total, self.done, self.start = total, initial, initial
        self.t0 = time.time()
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="cell",
                            desc="sweep", dynamic_ncols=True)

    def update(self, k):
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            return
        rate = (self.done - self.start) / max(time.time() - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"[sweep] {self.done}/{self.total} cells "
              f"({100 * self.done / self.total:.1f}%), {rate:.1f} cells/s, "
              f"ETA {eta:.0f} s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_sweep(spec, store, *, backend="cpu", client=None, restart=False, quiet=True,
              batch_size=None):
    """Run (or resume) a sweep and return the store as an ``xarray.Dataset``.

    Parameters
    ----------
    spec : Spec, dict or str
        A parsed spec, a dict, or TOML text (see :mod:`simlab.sweep.spec`).
    store : path
        Zarr store directory. Existing stores of the same spec are resumed:
        finished cells are never recomputed.
    backend : {"cpu", "cuda", "dask"}
        ``cpu`` runs batches in this process (Numba across all cores);
        ``cuda`` runs the simulators' CUDA kernels; ``dask`` submits ``cpu``
        batches to ``client``.
    client : dask.distributed.Client, optional
        Required for ``backend="dask"``; never created here.
    restart : bool
        Overwrite a store that holds a different spec.
    quiet : bool
        Log lines instead of a progress bar.
    batch_size : int, optional
        Cells per batch, ``>= 1`` (default: the spec's ``batch_size`` or 64).

    Returns
    -------
    xarray.Dataset
        Lazily opened store.

    Raises
    ------
    SpecError, ValueError
        Bad spec or arguments; raised before the store is touched.
    StoreError
        The store holds another sweep or is not a sweep store.
    StoreLockedError
        Another process is writing the store (checked before any work).
    CellError
        After the run, if cells raised: every other cell was committed; the
        error lists each failed cell's parameters, seed and exception (they
        stay pending and are retried by the next run).
    """
    import zarr

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dask" and client is None:
        raise ValueError("backend='dask' needs a dask.distributed client")
    batch_size = check_batch_size(batch_size)
    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    batch_size = batch_size or spec.batch_size or _DEFAULT_BATCH
    store = _prepare(store)
    lock = _lock(store)
    try:
        _open_locked(spec, store, restart)
        group = zarr.open_group(str(store), mode="r+")
        done = np.asarray(group["done"][...]).ravel()
        seeds = np.asarray(group["seed"][...]).ravel()
        todo = np.flatnonzero(done == 0)
        progress = _Progress(spec.n_cells, spec.n_cells - len(todo), quiet)
        batches = _batches(spec, todo, seeds, batch_size)
        failures = []
        try:
            if backend == "dask":
                if spec.code is not None:
                    check_workers(client, spec.experiment)
                committed = _run_dask(client, spec, group, batches, progress, failures)
            else:
                committed = 0
                for flat, params, cell_seeds in batches:
                    res = _evaluate_reporting(spec.experiment, params, cell_seeds,
                                              backend)
                    k = _commit_reported(group, spec, flat, res, failures)
                    progress.update(len(flat))
                    committed += k
                    _checkpoint("cells", committed, committed - k)
        finally:
            progress.close()
    finally:
        lock.release()
    if failures:
        raise CellError(failures, committed, spec.n_cells)
    return xr.open_zarr(store)


def _run_dask(client, spec, group, batches, progress, failures):
    from distributed import as_completed

    futures = {}
    for flat, params, cell_seeds in batches:
        fut = client.submit(_evaluate_reporting, spec.experiment, params, cell_seeds,
                            "cpu", pure=False)
        futures[fut] = flat
    committed = 0
    for fut in as_completed(list(futures)):
        flat = futures.pop(fut)
        k = _commit_reported(group, spec, flat, fut.result(), failures)
        progress.update(len(flat))
        committed += k
        _checkpoint("cells", committed, committed - k)
    return committed


#: Sample cells are first timed with ``steps`` capped at ``_SAMPLE_STEPS``,
#: then at 8x more steps until the difference reaches ``_MIN_TIMED`` seconds or
#: the cells' own ``steps``; cost is taken as affine in ``steps``.
_SAMPLE_STEPS = 16
_MIN_TIMED = 0.1
_clock = time.perf_counter


@dataclass(frozen=True)
class SweepEstimate:
    """What a run would do: see :func:`estimate`."""

    n_cells: int
    n_done: int
    n_batches: int
    batch_size: int
    sample: int
    seconds: float | None

    def summary(self):
        """One line for ``simlab sweep --dry-run``."""
        todo = self.n_cells - self.n_done
        line = (f"{self.n_cells} cells ({self.n_done} done, {todo} to run) in "
                f"{self.n_batches} batches of up to {self.batch_size}")
        if self.seconds is not None:
            line += (f"; estimated run time {_duration(self.seconds)} (from "
                     f"{self.sample} timed sample cells)")
        return line


def _duration(sec):
    if sec < 120:
        return f"{sec:.3g} s"
    if sec < 2 * 3600:
        return f"{sec / 60:.3g} min"
    if sec < 2 * 86400:
        return f"{sec / 3600:.3g} h"
    return f"{sec / 86400:.3g} days"


def _time_cells(spec, cells, backend):
    """Seconds to evaluate ``cells`` [(flat, params, seed)] in batches by key."""
    exp = get_cell_experiment(spec.experiment)
    groups = {}
    for c in cells:
        key = exp.batch_key(c[1]) if hasattr(exp, "batch_key") else None
        groups.setdefault(key, []).append(c)
    total = 0.0
    for group in groups.values():
        t0 = _clock()
        _evaluate(spec.experiment, [c[1] for c in group], [c[2] for c in group],
                  backend)
        total += _clock() - t0
    return total


def estimate(spec, store=None, *, batch_size=None, backend="cpu", restart=False,
             sample=8):
    """Cell count, batches and estimated run time of a sweep, without running it.

    Nothing is written. Up to ``sample`` pending cells (drawn with a fixed
    seed) are evaluated in this process to time them, after one warm-up cell
    (compilation), in batches as a run would.

    Parameters
    ----------
    spec : Spec, dict or str
    store : path, optional
        An existing store of this spec: count only the cells still to run.
    batch_size : int, optional
        As in :func:`run_sweep` (``>= 1``).
    backend : {"cpu", "cuda", "dask"}
        ``dask`` is timed on ``cpu`` in this process.
    restart : bool
        As in :func:`run_sweep` (the store's cells are not counted as done).
    sample : int
        Cells to time; 0 gives no time estimate (``seconds`` is None).

    Notes
    -----
    Timing caps the sample cells' ``steps`` at 16, then at 8x more, until the
    two timings differ by 0.1 s or reach the cells' own ``steps``, fits
    ``seconds = fixed + per_step * steps`` per cell (every cell experiment's
    cost is fixed work plus work per step) and sums it over the pending cells.
    An absurd ``steps`` therefore shows up in the estimate instead of hanging
    it.

    Returns
    -------
    SweepEstimate
        ``n_cells``, ``n_done``, ``n_batches``, ``batch_size``, ``sample``,
        ``seconds``; ``.summary()`` is a one-line description.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    batch_size = check_batch_size(batch_size)
    sample = check_batch_size(sample, "sample") if sample else 0
    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    batch_size = batch_size or spec.batch_size or _DEFAULT_BATCH
    seeds = spec.cell_seeds()
    todo = np.arange(spec.n_cells)
    if store is not None and Path(store).exists() and not restart:
        store = Path(store)
        _check_existing(spec, store)
        with xr.open_zarr(store) as ds:
            todo = np.flatnonzero(np.asarray(ds["done"].values).ravel() == 0)
    exp = get_cell_experiment(spec.experiment)
    sizes, total_steps = {}, 0
    for flat in todo:
        p = spec.cell_params(int(flat))
        key = exp.batch_key(p) if hasattr(exp, "batch_key") else None
        sizes[key] = sizes.get(key, 0) + 1
        total_steps += p.get("steps", 0)
    n_batches = sum(math.ceil(k / batch_size) for k in sizes.values())
    seconds = None
    k = min(sample, len(todo))
    if k:
        pick = np.sort(np.random.default_rng(0).choice(todo, k, replace=False))
        cells = [(int(f), spec.cell_params(int(f)), int(seeds[f])) for f in pick]
        run_backend = "cpu" if backend == "dask" else backend
        fixed, per_step = _time_sample(spec, cells, run_backend)
        seconds = float(fixed * len(todo) + per_step * total_steps)
    return SweepEstimate(n_cells=spec.n_cells, n_done=spec.n_cells - len(todo),
                         n_batches=n_batches, batch_size=batch_size, sample=k,
                         seconds=seconds)


def _time_sample(spec, cells, backend):
    """``(fixed, per_step)`` seconds per cell, timed on ``cells``: cost is
    ``fixed + per_step * steps`` (``per_step = 0`` if steps do not vary)."""
    steps = np.array([c[1].get("steps", 0) for c in cells], dtype=float)
    k, top = len(cells), steps.max()

    def timed(cap):
        return _time_cells(spec, [_at_steps(c, cap) for c in cells], backend)

    _time_cells(spec, [_at_steps(cells[0], _SAMPLE_STEPS)], backend)   # warm-up
    lo = hi = _SAMPLE_STEPS
    t_lo = t_hi = timed(lo)
    while hi < top and t_hi - t_lo < _MIN_TIMED:
        hi = int(min(top, hi * 8))
        t_hi = timed(hi)
    work_lo, work_hi = np.minimum(steps, lo).sum(), np.minimum(steps, hi).sum()
    if work_hi == work_lo:                 # every cell ran at its own size
        return t_lo / k, 0.0
    per_step = max(t_hi - t_lo, 0.0) / (work_hi - work_lo)
    return max(t_lo - per_step * work_lo, 0.0) / k, per_step


def _at_steps(cell, steps):
    """``cell`` with ``steps`` lowered to at most ``steps`` (if it has any)."""
    flat, params, seed = cell
    if "steps" not in params or params["steps"] <= steps:
        return cell
    return flat, {**params, "steps": steps}, seed
