"""Draw any sweep store: a heatmap over two dimensions or lines over one."""

import numpy as np


def _coerce(ds, dim, value):
    """``value`` (text from the command line) as a coordinate of ``dim``."""
    coord = ds[dim]
    try:
        typed = coord.dtype.type(value) if coord.dtype.kind in "iuf" else value
        found = bool((coord == typed).any())
    except (TypeError, ValueError):
        found = False
    if not found:
        shown = coord.values.tolist()
        shown = shown if len(shown) <= 12 else shown[:12] + ["..."]
        raise ValueError(f"sel: {dim}={value!r} is not on the axis (values: "
                         f"{shown})")
    return typed


def plot_store(ds, *, var, x, y=None, sel=None):
    """Heatmap of ``var`` over ``(x, y)``, or lines over ``x`` (one per replicate
    mean), after selecting ``sel`` and averaging every other dimension.

    Raises
    ------
    ValueError
        Naming the unknown variable or dimension, or saying that the store (or
        the selection) holds no finished cell yet: an empty figure is never
        drawn.
    """
    from matplotlib.figure import Figure

    if "done" not in ds.data_vars:
        raise ValueError("not a simlab sweep store (no 'done' variable)")
    n_done = int(ds["done"].sum())
    if n_done == 0:
        raise ValueError(f"the store has no finished cell yet (0/{ds['done'].size} "
                         "done); run or resume `simlab sweep` first")
    if var not in ds.data_vars:
        raise ValueError(f"var: unknown variable {var!r} (have {list(ds.data_vars)})")
    for name, d in (("x", x), ("y", y)):
        if d is not None and d not in ds.dims:
            raise ValueError(f"{name}: unknown dimension {d!r} (have {list(ds.dims)})")
    for k in sel or {}:
        if k not in ds.dims:
            raise ValueError(f"sel: unknown dimension {k!r} (have {list(ds.dims)})")
    sel = {k: _coerce(ds, k, v) for k, v in (sel or {}).items()}
    done = ds["done"].sel(sel)
    if int(done.sum()) == 0:
        raise ValueError(f"sel: no finished cell where {sel} (0/{done.size} done, "
                         f"{n_done}/{ds['done'].size} in the whole store)")
    da = ds[var].where(ds["done"] == 1).sel(sel)
    keep = [d for d in (y, x) if d is not None]
    other = [d for d in da.dims if d not in keep]
    da = da.mean(other) if other else da
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    if y is None:
        ax.plot(da[x].values, np.asarray(da.transpose(x).values), "o-")
        ax.set_ylabel(var)
    else:
        da = da.transpose(y, x)
        im = ax.pcolormesh(da[x].values, da[y].values, np.asarray(da.values),
                           shading="nearest")
        fig.colorbar(im, ax=ax, label=var)
        ax.set_ylabel(y)
    ax.set_xlabel(x)
    title = ", ".join(f"{k}={v}" for k, v in sel.items())
    ax.set_title(f"{var}" + (f" ({title})" if title else "") +
                 (f", mean over {other}" if other else ""), fontsize=9)
    return fig
