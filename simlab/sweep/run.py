"""Run a sweep into a resumable, crash-safe Zarr store.

Store layout (``xarray.open_zarr(STORE)`` reads it): one dimension per axis plus
``replicate``, one float64 variable per metric (NaN until computed), ``seed``
(the cell's seed) and ``done`` (int8). Attributes hold the spec (canonical
JSON), its hash, the experiment, simlab version and git revision.

Crash safety: Zarr's local store replaces chunk files atomically (write to a
temporary file, then rename), and a batch is committed by writing its metrics
first and its ``done`` flags last. A process killed at any moment therefore
leaves every cell either fully written and marked done, or not marked done (and
recomputed on resume, overwriting whatever partial values it had). Metadata is
written once at creation and never modified.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .._provenance import provenance
from .cells import get_cell_experiment
from .spec import Spec, parse_spec

BACKENDS = ("cpu", "cuda", "dask")


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


def _create(spec, store):
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
    enc = {v: {"chunks": chunks} for v in ds.data_vars}
    ds.to_zarr(store, mode="w", encoding=enc, zarr_format=2, consolidated=True)


def open_store(spec, store, *, restart=False):
    """Create ``store`` for ``spec``, or reopen it to resume.

    Raises
    ------
    ValueError
        If ``store`` holds a different spec and ``restart`` is False.
    """
    store = Path(store)
    if store.exists() and not restart:
        try:
            with xr.open_zarr(store) as ds:
                old = ds.attrs.get("spec_hash")
        except Exception as exc:  # noqa: BLE001 - any unreadable store
            raise ValueError(f"{store} exists but is not a simlab sweep store "
                             f"({exc}); pass restart=True (--restart) to "
                             "overwrite it") from None
        if old != spec.hash():
            raise ValueError(f"{store} holds a different sweep (spec hash {old}, "
                             f"this spec {spec.hash()}); pass restart=True "
                             "(--restart) to start over, or use another --out")
        return store
    _create(spec, store)
    return store


def _commit(group, spec, flat, values):
    """Write one batch: metrics first, ``done`` last (see module docstring)."""
    idx = np.unravel_index(np.asarray(flat), spec.shape)
    for m in spec.metrics:
        group[m].vindex[idx] = np.asarray(values[m], dtype=np.float64)
    group["done"].vindex[idx] = np.ones(len(flat), np.int8)


def _evaluate(experiment, params_list, seeds, backend):
    """Evaluate a batch of cells (also the function Dask workers run)."""
    exp = get_cell_experiment(experiment)
    return exp.evaluate(params_list, seeds, backend=backend)


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
        Cells per batch (default: the spec's ``batch_size`` or 64).

    Returns
    -------
    xarray.Dataset
        Lazily opened store.
    """
    import zarr

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dask" and client is None:
        raise ValueError("backend='dask' needs a dask.distributed client")
    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    batch_size = batch_size or spec.batch_size or 64
    store = open_store(spec, store, restart=restart)
    group = zarr.open_group(str(store), mode="r+")
    done = np.asarray(group["done"][...]).ravel()
    seeds = np.asarray(group["seed"][...]).ravel()
    todo = np.flatnonzero(done == 0)
    progress = _Progress(spec.n_cells, spec.n_cells - len(todo), quiet)
    batches = _batches(spec, todo, seeds, batch_size)
    try:
        if backend == "dask":
            _run_dask(client, spec, group, batches, progress)
        else:
            for flat, params, cell_seeds in batches:
                values = _evaluate(spec.experiment, params, cell_seeds, backend)
                _commit(group, spec, flat, values)
                progress.update(len(flat))
    finally:
        progress.close()
    return xr.open_zarr(store)


def _run_dask(client, spec, group, batches, progress):
    from distributed import as_completed

    futures = {}
    for flat, params, cell_seeds in batches:
        fut = client.submit(_evaluate, spec.experiment, params, cell_seeds, "cpu",
                            pure=False)
        futures[fut] = flat
    for fut in as_completed(list(futures)):
        flat = futures.pop(fut)
        _commit(group, spec, flat, fut.result())
        progress.update(len(flat))
