"""The only place where Numba options are set, and the one compile path.

Kernels are written once, as plain Python functions that call one another by
name ("step bodies"), and compiled here for each target:

``jit`` / ``pjit``
    decorators for CPU-only functions (``nopython``, ``cache`` unless
    ``SIMLAB_NUMBA_CACHE=0``, ``fastmath=False``, ``nogil``; ``pjit`` adds
    ``parallel=True`` for drivers that use ``prange``).
:func:`compile_family`
    compiles a family of step bodies for ``"cpu"`` (inlined into their
    compiled callers unless named ``outlined``, with ``prange`` drivers; a
    specialized copy with globals frozen to ``constants``) or ``"cuda"``
    (device functions). Each compiled function is a copy of the body whose globals bind
    every family name to its compiled version, so a CUDA device function only
    ever calls device functions and a CPU body only compiled CPU code.
:func:`cuda_kernel`
    compiles a CUDA kernel body against a family compiled for ``"cuda"``.

The copies keep their code object and have no closure, so Numba's on-disk cache
keys a CPU copy by the body's source file and bytecode: the cache is valid
across processes and any edit to a body invalidates it. The body modules
themselves import no Numba and run uncompiled in Python (tests, debugging).
"""

import types

import numba

from . import config

__all__ = ["compile_family", "cuda_kernel", "cuda_module", "dynamic_chunks", "jit",
           "num_threads", "pjit", "prange"]

prange = numba.prange

#: The compile targets of :func:`compile_family`.
TARGETS = ("cpu", "cuda")


def _options(**extra):
    opts = {"cache": config.NUMBA_CACHE, "fastmath": False, "nogil": True}
    opts.update(extra)
    return opts


def jit(fn=None, *, inline=False):
    """Compile ``fn`` for the CPU with simlab's Numba defaults.

    ``inline=True`` inlines it into its compiled callers at the Numba IR level,
    which removes the array reference counting of each call in inner loops.
    """
    opts = _options(inline="always") if inline else _options()
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


def pjit(fn):
    """Compile a ``prange`` driver for the CPU (``parallel=True``)."""
    return numba.njit(**_options(parallel=True))(fn)


def _rebind(fn, env, variant=""):
    """``fn`` with globals ``env`` (same code, name, defaults and docstring).

    A non-empty ``variant`` is appended to the qualified name: Numba's on-disk
    cache files are named after it, so copies compiled with different
    constants (:func:`compile_family`) never load each other's machine code.
    """
    copy = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + (f"__{variant}" if variant else "")
    copy.__doc__ = fn.__doc__
    return copy


def num_threads():
    """Numba's current number of threads (``numba.get_num_threads()``)."""
    return numba.get_num_threads()


def dynamic_chunks(n):
    """Context manager: ``prange`` loops launched from this thread hand out
    chunks of about ``n`` iterations to whichever thread is free (a dynamic
    schedule, ``numba.parallel_chunksize``) instead of one static block per
    thread, so that a thread slowed by other work on the machine does not
    leave the others idle at the end of the loop."""
    return numba.parallel_chunksize(n)


def compile_family(bodies, target, *, drivers=(), constants=None, variant="",
                   outlined=()):
    """Compile plain-Python step bodies for one target.

    Parameters
    ----------
    bodies : sequence of functions
        Plain Python functions that call one another by ``__name__`` (they may
        come from several modules; each keeps its own module's globals).
    target : {"cpu", "cuda"}
        ``"cpu"``: Numba ``njit`` with the defaults of :func:`jit`, inlined
        into compiled callers (a body called from Python still compiles on its
        own); ``"cuda"``: ``numba.cuda.jit(device=True)``.
    drivers : sequence of functions
        CPU only: bodies that loop with ``prange`` over independent work items;
        compiled with ``parallel=True`` and ``prange`` bound to Numba's.
    constants : dict, optional
        Module globals to replace in every copy (``name -> value``). Numba
        freezes globals as compile-time constants, so a flag tested in a body
        specializes it: LLVM drops the branches the flag rules out. Requires
        ``variant``.
    variant : str
        Suffix of the copies' qualified names, which keeps the on-disk cache
        of a specialized family apart from the plain one (:func:`_rebind`).
    outlined : sequence of str
        CPU only: names of bodies compiled as ordinary functions, called
        rather than inlined. Meant for the per-item body of a ``prange``
        driver: Numba's parallel passes then analyse a loop around one call
        instead of the whole inlined step code, and the serial and ``prange``
        drivers share one compiled body (the linearized drivers: 104 s -> 32 s
        of cold compile for the four of them, same speed, since one call per
        trajectory of 1000 steps costs nothing measurable).

    Returns
    -------
    types.SimpleNamespace
        ``name -> compiled function`` for every body and driver. Nothing is
        compiled before a first call.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    constants = dict(constants or {})
    if constants and not variant:
        raise ValueError("constants need a variant name (the cache key)")
    known = set().union(*(fn.__globals__ for fn in [*bodies, *drivers]))
    unknown = sorted(set(constants) - known)
    if unknown:
        raise ValueError(f"constants {unknown} are not globals of the bodies")
    outlined = set(outlined)
    unknown = sorted(outlined - {fn.__name__ for fn in bodies})
    if unknown:
        raise ValueError(f"outlined {unknown} are not names of the bodies")
    if target == "cuda":
        if drivers:
            raise ValueError("drivers are CPU-only")
        decorate = cuda_module().jit(device=True)
    else:
        # Inlining at the Numba IR level removes the array reference counting
        # of each call in the inner loops (about twice as fast on the
        # coherence-dial benchmark, at twice the compile time); ``outlined``
        # bodies are called instead.
        decorate = jit(inline=True)
    out = {}
    envs = []
    for fn in bodies:
        env = dict(fn.__globals__, **constants)
        envs.append(env)
        deco = jit if (target == "cpu" and fn.__name__ in outlined) else decorate
        out[fn.__name__] = deco(_rebind(fn, env, variant))
    for fn in drivers:
        env = dict(fn.__globals__, prange=prange, **constants)
        envs.append(env)
        out[fn.__name__] = pjit(_rebind(fn, env, variant))
    for env in envs:            # Numba resolves globals lazily, at first call
        env.update(out)
    return types.SimpleNamespace(**out)


def cuda_kernel(body, family):
    """Compile ``body`` as a CUDA kernel calling the device functions ``family``
    (a namespace from ``compile_family(..., "cuda")``); ``cuda`` is bound in
    its globals."""
    cuda = cuda_module()
    env = dict(body.__globals__, cuda=cuda, **vars(family))
    return cuda.jit(_rebind(body, env))


def cuda_module():
    """``numba.cuda``, or a ``RuntimeError`` saying what is missing.

    Called lazily by the ``gpu_*`` backends, never at import.
    """
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the CUDA backend needs numba-cuda: "
                           "pip install 'simlab[cuda]'") from exc
    if not cuda.is_available():
        raise RuntimeError("no CUDA device available (set NUMBA_ENABLE_CUDASIM=1 "
                           "to run the CUDA kernels on the simulator)")
    return cuda
