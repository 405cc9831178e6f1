"""Command line: ``simlab reproduce | sweep | plot | list | info | threshold | check``.

A user mistake (a bad option value, a path that cannot be read or written, an
unreachable Dask scheduler, ``--backend cuda`` without a GPU, ...) ends with one
line ``simlab <command>: error: ...`` on stderr and exit status 2. ``--debug``
(or ``SIMLAB_DEBUG=1``) shows the full traceback instead. Any other exception is
a bug and keeps its traceback; see :func:`_is_user_error` for the rule.
"""

import argparse
import gc
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .dynamics.backends import BACKENDS as KERNEL_BACKENDS

#: Default output folder of ``simlab reproduce`` (paper size) ...
FIGURES = "figures"
#: ... and of ``simlab reproduce --quick``: quick figures never overwrite the
#: paper-size ones.
QUICK_FIGURES = "simlab-figures-quick"


class UsageError(Exception):
    """A user mistake found by the CLI itself; :func:`main` prints one line."""


def _is_user_error(exc):
    """Whether ``exc`` is a user mistake (one line, exit 2) rather than a bug.

    User mistakes are: :class:`UsageError`; a sweep-spec error; a ``ValueError``
    raised by a ``raise`` statement in simlab itself (the public-boundary checks
    that name the offending argument); an operating-system error about a named
    path (missing, not a folder, not writable, ...) or a full/read-only disk.
    A ``ValueError`` raised inside numpy, xarray, ... (or by a C call in simlab),
    a ``TypeError``, ``KeyError``, ``RuntimeError`` ... is a bug: traceback.
    """
    import errno
    import linecache

    from .sweep.spec import SpecError

    if isinstance(exc, (UsageError, SpecError)):
        return True
    if isinstance(exc, OSError):
        return exc.filename is not None or exc.errno in (
            errno.ENOSPC, errno.EROFS, errno.EDQUOT)
    if not isinstance(exc, ValueError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    if not where.is_relative_to(Path(__file__).resolve().parent):
        return False
    line = linecache.getline(str(where), tb.tb_lineno).lstrip()
    return line.startswith("raise ")


def _one_line(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _int_at_least(text, low):
    """An integer ``>= low`` from argparse text."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def _nonnegative_int(text):
    """argparse type: an integer >= 0 (a seed)."""
    return _int_at_least(text, 0)


def _positive_int(text):
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def _positive_float(text):
    """argparse type: a finite number > 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
    return value


def _check_writable(path, option, *, folder=False):
    """Refuse an output ``path`` that cannot be created: one of its parents is
    a file, the nearest existing parent is not writable, or (``folder``) the
    path itself is an existing file. Creates nothing."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{option} {path}: folder {parent} is not writable")
            return


def _require_cuda():
    """Fail early, in one line, when ``--backend cuda`` has no CUDA device."""
    from ._jit import cuda_module

    try:
        cuda_module()
    except RuntimeError as exc:
        raise UsageError(f"--backend cuda: {exc}") from None


def _cmd_list(args):
    from . import experiments

    for name in experiments.REGISTRY:
        try:
            mod = experiments.get(name)
        except ImportError as exc:
            print(f"{name:22s} (unavailable: {exc})")
            continue
        print(f"{name:22s} {mod.CLAIM}")
    return 0


def _write_manifest(out, done):
    """(Re)write ``out/README.md``: figure -> command -> claim -> what it shows."""
    from . import experiments

    path = out / "README.md"
    lines = ["# Figures", "",
             "Generated by `simlab reproduce`; each figure has its data next to it "
             "(`<name>.nc`, with parameters, seed, versions and git revision in the "
             "attributes). Regenerate one with the command shown.", "",
             "| figure | command | claim | verdict tested | what it shows | last run |",
             "|---|---|---|---|---|---|"]
    for name in experiments.REGISTRY:
        try:
            mod = experiments.get(name)
        except ImportError as exc:  # listed, never dropped silently
            lines.append(f"| {name} | `simlab reproduce {name}` | unavailable: "
                         f"{str(exc).replace('|', '/')} | | | |")
            continue
        summary = done.get(name)
        if summary is None and (out / f"{name}.nc").exists():
            import xarray as xr

            with xr.open_dataset(out / f"{name}.nc") as ds:
                summary = ds.attrs.get("summary", "")
                summary += " (quick)" if ds.attrs.get("quick") else ""
        summary = (summary or "").replace("\n", "<br>").replace("|", "/")
        lines.append(f"| [{name}.png]({name}.png) | `simlab reproduce {name}` | "
                     f"{mod.CLAIM} | {mod.TESTED} | {mod.DESCRIPTION} | "
                     f"{summary or 'not run'} |")
    path.write_text("\n".join(lines) + "\n")


def _cmd_reproduce(args):
    from . import experiments

    names = args.names or experiments.available()
    for name in names:  # fail fast: unknown names, missing backends, bad --out
        mod = experiments.get(name)
        if (args.backend != "cpu"
                and "backend" not in inspect.signature(mod.run).parameters):
            raise UsageError(f"--backend {args.backend}: experiment {name!r} "
                             "runs on the cpu backend only")
    if args.backend == "cuda":
        _require_cuda()
    out = Path(args.out or (QUICK_FIGURES if args.quick else FIGURES))
    _check_writable(out, "--out", folder=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})"
                         ) from None
    done = {}
    # The objects of the imports live to the end: keep the cyclic garbage
    # collector from scanning them again and again (0.3 s of the paper-size
    # hessian-test run).
    gc.freeze()
    for name in names:
        mod = experiments.get(name)
        t0 = time.perf_counter()
        print(f"[{name}] running ({'quick' if args.quick else 'full'} size)...",
              flush=True)
        kw = {}
        if args.backend != "cpu":
            kw["backend"] = args.backend
        ds = mod.run(quick=args.quick, seed=args.seed, **kw)
        ds.attrs["quick"] = int(args.quick)
        fig = mod.plot(ds)
        stem = out / name.replace("/", "_")
        tmp = stem.with_suffix(".nc.tmp")
        ds.to_netcdf(tmp, engine="scipy")
        os.replace(tmp, stem.with_suffix(".nc"))   # never a half-written file
        fig.savefig(stem.with_suffix(".png"), dpi=130)
        fig.savefig(stem.with_suffix(".pdf"))
        done[name] = ds.attrs.get("summary", "") + (" (quick)" if args.quick else "")
        print(f"[{name}] {time.perf_counter() - t0:.1f} s -> {stem}.png/.pdf/.nc\n"
              f"[{name}] {ds.attrs.get('summary', '')}", flush=True)
    _write_manifest(out, done)
    return 0


def _cmd_info(args):
    import numba
    import numpy
    import scipy

    from . import __version__, config
    from ._provenance import git_revision

    try:
        from numba import cuda

        cuda_ok = bool(cuda.is_available())
    except Exception:  # pragma: no cover - depends on the machine
        cuda_ok = False
    info = {
        "simlab": __version__,
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_cache": config.NUMBA_CACHE,
        "cuda_available": cuda_ok,
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:15s} {v}")
    return 0


def _cmd_threshold(args):
    from ._validation import check_size
    from .curvature import coherence_dial
    from .stability import (
        coherence_bound_lr,
        critical_lr,
        kappa_plus,
        unlearning_bound_lr,
        unlearning_direction_bound_lr,
    )
    from .theory import dial_critical_lr

    if args.s > args.n:
        raise UsageError(f"--s must be <= --n = {args.n}, got {args.s}")
    # the exact operator needs at least the (n, p) factors and the (n, n) Gram
    # matrix: refuse before allocating anything
    check_size((args.n, 2 * args.n - args.s + 1),
               f"threshold --n {args.n} --s {args.s}")
    H = coherence_dial(args.n, args.s)
    kw = dict(scheme=args.scheme)
    if args.alpha:
        kw.update(forget=H, forget_batch=args.batch, alpha=args.alpha)
    exact = critical_lr(H, args.batch, **kw)
    closed = dial_critical_lr(args.n, args.s, args.batch, scheme=args.scheme,
                              alpha=args.alpha)
    print(f"coherence dial n={args.n} s={args.s} B={args.batch} "
          f"scheme={args.scheme} alpha={args.alpha} (retain = forget = family)")
    print(f"critical eta (exact operator) {exact:.12g}")
    print(f"critical eta (closed form)    {closed:.12g}")
    if args.alpha:
        kappa = kappa_plus(H, forget=H, alpha=args.alpha)
        print(f"net ascent curvature kappa_+  {kappa:.6g}")
        if args.scheme == "bernoulli":
            bound = unlearning_bound_lr(H, args.batch, forget=H, alpha=args.alpha)
            print(f"unlearning coherence bound   {bound:.12g}")
        direction = unlearning_direction_bound_lr(H, args.batch, forget=H,
                                                  alpha=args.alpha, scheme=args.scheme)
        print(f"unlearning direction bound   {direction:.12g}")
    elif args.batch < args.n and args.scheme == "bernoulli":
        print(f"coherence bound (Dexter)      {coherence_bound_lr(H, args.batch):.12g}")
    return 0


def _cmd_check(args):
    from .check import check_family, load_pair

    retain, forget = load_pair(args.retain, args.forget, kind=args.kind)
    if args.forget is None and args.alpha:
        raise UsageError(f"--alpha {args.alpha:g} needs a forget set (--forget FILE)")
    if args.forget is None and args.forget_batch is not None:
        raise UsageError(f"--forget-batch {args.forget_batch} needs a forget set "
                         "(--forget FILE)")
    result = check_family(retain, forget=forget, batch=args.batch, eta=args.eta,
                          eta_rel=args.eta_rel, forget_batch=args.forget_batch,
                          scheme=args.scheme, alpha=args.alpha,
                          escape_factor=args.escape_factor, horizon=args.horizon,
                          law=args.law)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(result.table())
    return 0


def _cmd_sweep(args):
    from .sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    if args.backend == "cuda":
        _require_cuda()
    if args.dry_run:
        from .sweep import estimate

        print(f"{args.out}: " + estimate(spec, args.out, batch_size=args.batch_size,
                                         backend=args.backend,
                                         restart=args.restart).summary())
        return 0
    _check_writable(args.out, "--out", folder=True)
    client = None
    if args.backend == "dask":
        from distributed import Client, LocalCluster

        if args.scheduler:
            print(f"connecting to {args.scheduler} (timeout "
                  f"{args.scheduler_timeout:g} s)...", flush=True)
            try:
                client = Client(args.scheduler, timeout=args.scheduler_timeout)
            except (OSError, ValueError, TypeError) as exc:  # unreachable, bad address
                raise UsageError(f"--scheduler {args.scheduler}: cannot connect "
                                 f"({' '.join(str(exc).split())})") from None
        else:
            client = Client(LocalCluster(dashboard_address=None, processes=True))
    from .sweep import CellError

    try:
        ds = run_sweep(spec, args.out, backend=args.backend, client=client,
                       restart=args.restart, quiet=args.quiet,
                       batch_size=args.batch_size)
    except CellError as exc:         # the cells' own errors: reported, work kept
        print(f"simlab sweep: {args.out}: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    done = int(ds["done"].sum())
    print(f"{args.out}: {done}/{spec.n_cells} cells done "
          f"(experiment {spec.experiment}, spec hash {spec.hash()})")
    return 0


def _cmd_plot(args):
    import xarray as xr

    from .sweep.plot import plot_store

    if args.y is not None and args.y == args.x:
        raise UsageError(f"--x and --y are both {args.x!r}; a heatmap needs two "
                         "different dimensions (leave out --y for lines)")
    sel = {}
    for item in args.sel:
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise UsageError(f"--sel {item}: expected DIM=VALUE, e.g. alpha=0.1")
        if name in (args.x, args.y):
            raise UsageError(f"--sel {item}: {name!r} is already on the plot's axes")
        sel[name] = value
    store = Path(args.store)
    if not store.is_dir():
        raise UsageError(f"{store}: no such sweep store" if not store.exists() else
                         f"{store}: not a sweep store (a Zarr folder)")
    out = Path(args.output or f"{store.with_suffix('')}_{args.var}.png")
    _check_writable(out, "--output")
    try:
        ds = xr.open_zarr(store)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{store}: not a sweep store ({exc})") from None
    with ds:
        if "done" not in ds.data_vars:
            raise UsageError(f"{store}: not a sweep store (no 'done' variable)")
        sel = {k: _sel_value(ds, k, v) for k, v in sel.items()}
        fig = plot_store(ds, var=args.var, x=args.x, y=args.y, sel=sel)
    fig.savefig(out, dpi=130)
    print(out)
    return 0


def _sel_value(ds, name, text):
    """The coordinate value of dimension ``name`` that ``--sel name=text`` means."""
    import numpy as np

    if name not in ds.dims:
        raise UsageError(f"--sel {name}={text}: {name!r} is not a dimension of "
                         f"the store (have {list(ds.dims)})")
    coord = ds[name].values
    if coord.dtype.kind in "iuf":
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"--sel {name}={text}: not a number") from None
        # floats in the store come from a spec (linspace, logspace): match the
        # typed decimal to 1e-9 relative, then select the stored value exactly
        hit = np.flatnonzero(np.isclose(coord, value, rtol=1e-9, atol=0.0))
    else:
        hit = np.flatnonzero(coord.astype(str) == text)
    if hit.size == 0:
        shown = ", ".join(str(v) for v in coord[:12]) + (", ..." if coord.size > 12
                                                         else "")
        raise UsageError(f"--sel {name}={text}: {text} is not on the {name} axis "
                         f"(values: {shown})")
    return coord[hit[0]].item()


CHECK_HELP = """\
Exact mean-square verdict (THEORY sections 2-6) for your own per-sample
curvature: coherence and its blocks, rho(T), critical learning rate, kappa_+,
the coherence and direction bounds with their tightness, and the escape time
from a stated law of delta_0. Python: simlab.check.check_family.

Files (one set per file):
  .npz key 'factors'   rank-k factors (n, k, p): H_i = sum_j g_ij g_ij^T
  .npz key 'rank_one'  rank-one factors (n, p): H_i = g_i g_i^T
  .npz key 'hessians'  dense PSD Hessians (n, p, p)
  .npy 2-D (n, p)      rank-one factors
  .npy 3-D             needs --kind factors or --kind dense

check vs threshold: two commands with disjoint inputs. 'threshold' builds the
coherence dial of THEORY section 7 from --n/--s and compares the exact
threshold with its closed form; 'check' reads your family from files (the dial
saved to a file gives the same exact numbers).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``simlab sweep: error: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    ap = _Parser(prog="simlab", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", default=False,
                    help="show the full traceback of any error (also: SIMLAB_DEBUG=1)")
    # "--debug" is accepted after the command as well
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reproduce", parents=[common],
                       help="regenerate figures of the catalogue")
    p.add_argument("names", nargs="*", help="experiments (default: all)")
    p.add_argument("--quick", action="store_true", help="reduced size, fast")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: {FIGURES}/, with --quick "
                        f"{QUICK_FIGURES}/ so that quick runs never overwrite the "
                        "paper-size figures)")
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--backend", default="cpu", choices=KERNEL_BACKENDS,
                   help="simulator backend for experiments that have several")
    p.set_defaults(fn=_cmd_reproduce)
    p = sub.add_parser("sweep", parents=[common],
                       help="run or resume a sweep from a TOML spec")
    p.add_argument("spec", help="sweep spec (TOML)")
    p.add_argument("--out", required=True, help="Zarr store (created or resumed)")
    p.add_argument("--backend", default="cpu", choices=[*KERNEL_BACKENDS, "dask"])
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument("--scheduler-timeout", type=_positive_float, default=10.0,
                   metavar="SECONDS",
                   help="give up connecting to --scheduler after this (default 10)")
    p.add_argument("--restart", action="store_true",
                   help="overwrite a store that holds a different spec")
    p.add_argument("--quiet", action="store_true", help="log lines, no bar")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="print the cell count and an estimated run time; write nothing")
    p.set_defaults(fn=_cmd_sweep)
    p = sub.add_parser("plot", parents=[common],
                       help="heatmap or line plot of a sweep store")
    p.add_argument("store")
    p.add_argument("--var", required=True, help="metric to draw")
    p.add_argument("--x", required=True, help="dimension on the x axis")
    p.add_argument("--y", default=None, help="dimension on the y axis (heatmap)")
    p.add_argument("--sel", nargs="*", default=[], metavar="DIM=VALUE",
                   help="fix other dimensions (default: mean over them)")
    p.add_argument("-o", "--output", default=None)
    p.set_defaults(fn=_cmd_plot)
    p = sub.add_parser("list", parents=[common], help="list the figure catalogue")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("info", parents=[common],
                       help="versions, threads, CUDA availability")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("threshold", parents=[common],
                       help="exact thresholds of the coherence dial (for your "
                            "own family: check)")
    p.add_argument("--n", type=_positive_int, required=True)
    p.add_argument("--s", type=_positive_int, required=True)
    p.add_argument("--batch", type=_positive_int, required=True)
    p.add_argument("--scheme", default="bernoulli",
                   choices=["bernoulli", "with", "without"])
    p.add_argument("--alpha", type=float, default=0.0)
    p.set_defaults(fn=_cmd_threshold)
    p = sub.add_parser(
        "check", parents=[common],
        help="exact verdict for your own curvature family (files)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CHECK_HELP)
    p.add_argument("--retain", required=True, metavar="FILE",
                   help="retain-set curvature (.npy or .npz; formats below)")
    p.add_argument("--forget", default=None, metavar="FILE",
                   help="forget-set curvature, same representation as --retain")
    p.add_argument("--kind", default=None, choices=["rank-one", "factors", "dense"],
                   help="how to read a 3-D .npy: rank-k factors (n, k, p) or dense "
                        "(n, p, p); required there, never guessed")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--eta", type=_positive_float, help="learning rate")
    g.add_argument("--eta-rel", type=_positive_float, metavar="C",
                   help="learning rate as C times the critical learning rate")
    p.add_argument("--batch", type=_positive_int, required=True,
                   help="retain batch size B_r")
    p.add_argument("--forget-batch", type=_positive_int, default=None,
                   help="forget batch size B_f (default: the retain fraction)")
    p.add_argument("--scheme", default="without",
                   choices=["bernoulli", "with", "without"])
    p.add_argument("--alpha", type=float, default=0.0,
                   help="descent-ascent mixing weight (needs --forget when > 0)")
    p.add_argument("--escape-factor", type=_positive_float, default=1e3,
                   metavar="K", help="escape when E|delta_t|^2 >= K E|delta_0|^2")
    p.add_argument("--horizon", type=_positive_int, default=1000,
                   help="steps searched for the escape (default 1000)")
    p.add_argument("--law", default="range", choices=["range", "isotropic"],
                   help="law of delta_0: isotropic Gaussian on U = range(sum H_i) "
                        "(default) or N(0, I_p)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object (non-finite numbers as \"inf\"/\"nan\")")
    p.set_defaults(fn=_cmd_check)
    return ap


def main(argv=None):
    """Run the command line; returns the exit status (2 for a user mistake)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error printed in one line
        return exc.code
    debug = args.debug or os.environ.get("SIMLAB_DEBUG", "") not in ("", "0")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"simlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not _is_user_error(exc):
            raise
        print(f"simlab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
