"""Draw any sweep store: a heatmap over two dimensions or lines over one."""

import numpy as np


def _coerce(ds, dim, value):
    dtype = ds[dim].dtype
    return dtype.type(value) if dtype.kind in "iuf" else value


def plot_store(ds, *, var, x, y=None, sel=None):
    """Heatmap of ``var`` over ``(x, y)``, or lines over ``x`` (one per replicate
    mean), after selecting ``sel`` and averaging every other dimension.

    Raises
    ------
    ValueError
        Naming the unknown variable or dimension.
    """
    from matplotlib.figure import Figure

    if var not in ds.data_vars:
        raise ValueError(f"var: unknown variable {var!r} (have {list(ds.data_vars)})")
    for name, d in (("x", x), ("y", y)):
        if d is not None and d not in ds.dims:
            raise ValueError(f"{name}: unknown dimension {d!r} (have {list(ds.dims)})")
    sel = {k: _coerce(ds, k, v) for k, v in (sel or {}).items()}
    for k in sel:
        if k not in ds.dims:
            raise ValueError(f"sel: unknown dimension {k!r}")
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
