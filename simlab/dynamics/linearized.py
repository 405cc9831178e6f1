"""Monte-Carlo simulation of the linearized SGD and unlearning dynamics (CPU).

THEORY.md sections 1-4. One trajectory iterates

    delta <- delta - eta [ (1-alpha)/B_r sum_{i in retain batch} H_i delta
                           - alpha/B_f sum_{j in forget batch} H_j delta ]

with fresh, independent retain and forget batches at every step, exactly the
random product whose second moment is the operator ``T`` of
:mod:`simlab.stability.operator`. The step math lives once in
:mod:`simlab.dynamics._step`; this module validates inputs, draws the initial
directions and generator states on the host, and runs the CPU driver
``_simulate_many`` (``prange`` over (configuration, trajectory) pairs, body in
``_step.simulate_many``).
"""

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import config
from .._blas import serial_blas
from .._jit import compile_family, dynamic_chunks, num_threads
from .._validation import (
    check_escape_factor,
    check_eta,
    check_int,
    check_pair,
    check_perturbation_law,
    check_run_config,
    check_seed,
    check_size,
    check_step,
    sample_curvature,
)
from .._version import __version__
from ..curvature import range_basis
from . import _step

__all__ = ["LinearizedResult", "linearized", "linearized_grid"]


#: Step bodies and the driver, compiled for the CPU (lazily, on first call).
#: ``simulate_pair`` (one trajectory) is called, not inlined, by both drivers:
#: they share its machine code, and the ``prange`` driver compiles in seconds
#: instead of most of a minute.
_cpu = compile_family([*_step.family(), _step.simulate_serial], "cpu",
                      drivers=[_step.simulate_many], outlined=("simulate_pair",))

#: The CPU driver ``prange`` over (cell, trajectory) pairs; body in
#: ``_step.simulate_many``, called by :func:`_run`.
_simulate_many = _cpu.simulate_many

#: The same loop on the calling thread (small runs); body in
#: ``_step.simulate_serial``.
_simulate_serial = _cpu.simulate_serial

#: Both drivers again, compiled with ``_step.FUSED_ONLY`` set: for chunks whose
#: cells are all one-nonzero families with one value per set drawn without
#: replacement (the coherence dial; ``_step.draw_add_uniform``). Bit-identical
#: to the plain drivers and faster on the Hessian-test grid (CHANGELOG).
_cpu_fused = compile_family([*_step.family(), _step.simulate_serial], "cpu",
                            drivers=[_step.simulate_many],
                            constants={"FUSED_ONLY": True}, variant="fused",
                            outlined=("simulate_pair",))

#: ``(parallel, serial)`` drivers by ``fused``.
_DRIVERS = {False: (_simulate_many, _simulate_serial),
            True: (_cpu_fused.simulate_many, _cpu_fused.simulate_serial)}


@dataclass(frozen=True, eq=False)
class LinearizedResult:
    """Result of :func:`linearized` for one configuration.

    Attributes
    ----------
    escaped : ndarray of bool, shape (trajectories,)
        Whether ``|delta_t|^2 >= escape_factor |delta_0|^2`` for some ``t``.
    escape_step : ndarray of int64, shape (trajectories,)
        First such ``t``, ``-1`` if never.
    lyapunov : ndarray of float, shape (trajectories,)
        ``(1/T) log(|delta_T| / |delta_0|)`` over the ``T`` steps actually run
        (fewer than ``steps`` after a stop on escape); ``-inf`` when ``delta``
        became exactly zero.
    log_sq_norm : ndarray of float, shape (trajectories, n_rec)
        ``log|delta_t|^2 - log|delta_0|^2`` at ``t = record_steps``; NaN at the
        recorded steps after a trajectory stopped (``-inf`` at the step where it
        became zero).
    record_steps : ndarray of int, shape (n_rec,)
        ``0, record_every, 2 record_every, ... <= steps``.
    direction : ndarray of float, shape (trajectories, p)
        Final ``delta / |delta|`` (zeros if ``delta`` became zero).
    ms_growth : float
        Monte-Carlo estimate of the per-step growth factor of ``E|delta_t|^2``,
        to be compared with ``rho(T)`` (see Notes of :func:`linearized`).
    params : dict
        Every scalar argument and the input shapes.
    seed : int
    version : str
        ``simlab.__version__``.
    """

    escaped: np.ndarray
    escape_step: np.ndarray
    lyapunov: np.ndarray
    log_sq_norm: np.ndarray
    record_steps: np.ndarray
    direction: np.ndarray
    ms_growth: float
    params: dict
    seed: int
    version: str

    @property
    def escape_fraction(self):
        """Fraction of trajectories that escaped within the horizon."""
        return float(np.mean(self.escaped))

    @property
    def lyapunov_mean(self):
        """Mean of the finite Lyapunov exponents; ``-inf`` if all are ``-inf``."""
        finite = self.lyapunov[np.isfinite(self.lyapunov)]
        return float(finite.mean()) if finite.size else -math.inf

    def __repr__(self):
        traj, n_rec = self.log_sq_norm.shape
        return (f"LinearizedResult(trajectories={traj}, n_rec={n_rec}, "
                f"escape_fraction={self.escape_fraction:.4g}, "
                f"lyapunov_mean={self.lyapunov_mean:.4g}, "
                f"ms_growth={self.ms_growth:.6g}, seed={self.seed})")


# --------------------------------------------------------------------- host side

def _rng_states(seed, count):
    """xoshiro256** states ``(count, 4)`` for the in-kernel streams.

    Drawn from the first child of ``SeedSequence(seed)``, so the kernel streams
    share no words with ``default_rng(seed)``, which draws ``delta_0``.
    """
    child = np.random.SeedSequence(seed, spawn_key=(0,))  # = .spawn(1)[0]
    states = child.generate_state(4 * count, dtype=np.uint64).reshape(count, 4)
    zero = ~states.any(axis=1)          # the all-zero state is a fixed point
    states[zero, 0] = np.uint64(1)
    return states


# Constants of NumPy's SeedSequence (numpy/random/bit_generator.pyx, after
# M. E. O'Neill's seed_seq_fe): hash and mix multipliers on uint32 words.
_SS_INIT_A = 0x43B0D7E5
_SS_MULT_A = 0x931E8875
_SS_INIT_B = 0x8B51F9DD
_SS_MULT_B = 0x58F38DED
_SS_MIX_L = 0xCA01F9DD
_SS_MIX_R = 0x4973F715
_M32 = 0xFFFFFFFF
_U32_16 = np.uint32(16)


def _ss_hashmix(value, hc):
    """SeedSequence ``hashmix`` on a uint32 array; ``hc`` (a Python int) is the
    hash constant before the call. Returns ``(value, hc after the call)``."""
    value = value ^ np.uint32(hc)
    hc = (hc * _SS_MULT_A) & _M32
    value = value * np.uint32(hc)
    return value ^ (value >> _U32_16), hc


def _ss_mix(x, y):
    """SeedSequence ``mix`` of two uint32 arrays."""
    r = np.uint32(_SS_MIX_L) * x - np.uint32(_SS_MIX_R) * y
    return r ^ (r >> _U32_16)


def _ss_states(entropy, n_words):
    """``SeedSequence(...).generate_state(n_words, np.uint64)`` for many seeds.

    ``entropy`` (uint32, ``(N, L)``) holds each sequence's assembled entropy
    words (``SeedSequence.get_assembled_entropy``), all of the same length.
    The pool mixing and the state generation of NumPy's ``SeedSequence``
    (pool size 4) are elementwise uint32 arithmetic, so they run on all
    ``N`` rows at once; the hash constants are the same for every row.
    Returns uint64 ``(N, n_words)``, equal bit for bit to NumPy's (tested;
    :func:`_fast_seeding` checks it once per process before use).
    """
    entropy = np.asarray(entropy, dtype=np.uint32)
    N, L = entropy.shape
    zero = np.zeros(N, dtype=np.uint32)
    hc = _SS_INIT_A
    mixer = []
    for i in range(4):
        v, hc = _ss_hashmix(entropy[:, i] if i < L else zero, hc)
        mixer.append(v)
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                h, hc = _ss_hashmix(mixer[i_src], hc)
                mixer[i_dst] = _ss_mix(mixer[i_dst], h)
    for i_src in range(4, L):
        for i_dst in range(4):
            h, hc = _ss_hashmix(entropy[:, i_src], hc)
            mixer[i_dst] = _ss_mix(mixer[i_dst], h)
    pool = np.stack(mixer, axis=1)
    n32 = 2 * n_words
    before = np.empty(n32, dtype=np.uint32)      # hash constant before ...
    after = np.empty(n32, dtype=np.uint32)       # ... and after each word
    hc = _SS_INIT_B
    for i in range(n32):
        before[i] = hc
        hc = (hc * _SS_MULT_B) & _M32
        after[i] = hc
    words = pool[:, np.arange(n32) % 4] ^ before
    words *= after
    words ^= words >> _U32_16
    # Little-endian pairs of uint32 words, as NumPy's uint64 output.
    return (words[:, 0::2].astype(np.uint64)
            | (words[:, 1::2].astype(np.uint64) << np.uint64(32)))


#: ``_PCG_MULT``: PCG64's 128-bit LCG multiplier (``pcg64.h``).
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M128 = (1 << 128) - 1


def _pcg64_states(seeds):
    """``np.random.PCG64(seed).state["state"]`` (the ``state`` and ``inc``
    integers) for seeds ``< 2**32``: PCG64 seeds itself with
    ``SeedSequence(seed).generate_state(4, np.uint64)`` (``pcg64_set_seed``:
    ``initstate = v0 v1``, ``initseq = v2 v3`` as 128-bit numbers, then
    ``pcg_setseq_128_srandom_r``)."""
    vals = _ss_states(np.asarray(seeds, dtype=np.uint32)[:, None], 4).tolist()
    out = []
    for v0, v1, v2, v3 in vals:
        inc = ((((v2 << 64) | v3) << 1) | 1) & _M128
        state = (inc + ((v0 << 64) | v1)) & _M128
        out.append({"state": (state * _PCG_MULT + inc) & _M128, "inc": inc})
    return out


_FAST_SEEDING = []


def _fast_seeding():
    """Whether :func:`_ss_states` and :func:`_pcg64_states` reproduce this
    NumPy's ``SeedSequence`` and ``default_rng`` (checked once per process on
    a few seeds; if not, the per-cell NumPy calls are used)."""
    if not _FAST_SEEDING:
        seeds = [0, 1, 12345, 2**32 - 1]
        try:
            ok = all(
                np.array_equal(
                    _ss_states(np.array([[s, 0, 0, 0, 0]], dtype=np.uint32), 7)[0],
                    np.random.SeedSequence(s, spawn_key=(0,)).generate_state(
                        7, dtype=np.uint64))
                and np.random.default_rng(s).bit_generator.state
                == _pcg_state_dict(st)
                for s, st in zip(seeds, _pcg64_states(seeds)))
        except Exception:       # pragma: no cover - a NumPy we do not know
            ok = False
        _FAST_SEEDING.append(ok)
    return _FAST_SEEDING[0]


def _pcg_state_dict(st):
    """The ``bit_generator.state`` dict of a fresh PCG64 with state ``st``."""
    return {"bit_generator": "PCG64", "state": st, "has_uint32": 0,
            "uinteger": 0}


#: Fewer seeds than this take NumPy's own seeding (C code, about 40 us a
#: seed): the vectorized route costs about 0.6 ms whatever the number of
#: seeds (measured crossover: 8). One ``linearized`` call has one seed.
_FAST_SEEDING_MIN = 8


def _seeded_streams(seeds, count):
    """:func:`_rng_states` of many seeds, and what ``default_rng(seed)`` needs.

    Returns ``(states, pcg)``: the kernel states ``(len(seeds) * count, 4)``
    (``count`` rows per seed, equal to ``_rng_states(seed, count)``) and, per
    seed, the PCG64 state of ``default_rng(seed)`` for :func:`_generator`
    (``None`` entries: construct ``default_rng(seed)`` itself). Seeds
    ``>= 2**32`` (more than one entropy word) take NumPy's own route.
    """
    seeds = [int(s) for s in seeds]
    if (len(seeds) < _FAST_SEEDING_MIN or max(seeds) >= 2**32
            or not _fast_seeding()):
        states = (np.concatenate([_rng_states(s, count) for s in seeds])
                  if seeds else np.empty((0, 4), dtype=np.uint64))
        return states, [None] * len(seeds)
    # SeedSequence(seed, spawn_key=(0,)) assembles [seed, 0, 0, 0] + [0].
    entropy = np.zeros((len(seeds), 5), dtype=np.uint32)
    entropy[:, 0] = seeds
    states = _ss_states(entropy, 4 * count).reshape(len(seeds) * count, 4)
    zero = ~states.any(axis=1)          # the all-zero state is a fixed point
    states[zero, 0] = np.uint64(1)
    return states, _pcg64_states(seeds)


def _generator(seed, pcg, reuse):
    """``default_rng(seed)``: ``reuse`` (a PCG64 ``Generator``) re-seeded in
    place to the state ``pcg`` of :func:`_seeded_streams`, or a new generator
    when ``pcg`` is ``None``."""
    if pcg is None:
        return np.random.default_rng(seed)
    reuse.bit_generator.state = _pcg_state_dict(pcg)
    return reuse


_EMPTY_U = ("retain/forget: all active Hessians are zero, so the invariant "
            "subspace U is empty and nothing moves")


def _subspace(active):
    """Orthonormal basis ``(p, r)`` of ``U = range(sum of active H_i)``, or ``None``.

    ``None`` means ``U`` is all of ``R^p``. Otherwise the basis of
    :func:`simlab.curvature.range_basis` is re-orthonormalized by QR (the Gram
    route loses orthogonality on ill-conditioned families).

    Rank-one factors with at most one nonzero per row (the coherence dial)
    skip the eigendecomposition when every axis is used: then
    ``sum_i H_i = diag(d)`` with ``d_j`` the column sums of squares, and
    ``U = R^p`` as soon as ``min d > 2 RANGE_RTOL max d`` (the factor 2 keeps
    the decision clear of the eigensolver's rounding, which is ~1e-16 of
    ``max d``). Any other family takes the general route, so the result never
    changes.
    """
    if _all_axes(active):
        return None
    basis = range_basis(active)
    r, p = basis.shape[1], active.shape[1]
    if r == 0:
        raise ValueError(_EMPTY_U)
    if r == p:
        return None
    return np.linalg.qr(basis)[0]


def _all_axes(active):
    """Whether rank-one factors ``active`` (``(n, p)``) have at most one nonzero
    per row and span every axis clearly above ``config.RANGE_RTOL`` (see
    :func:`_subspace`)."""
    if not (isinstance(active, np.ndarray) and active.ndim == 2 and active.size):
        return False
    nz = active != 0
    if np.count_nonzero(nz) > active.shape[0] or nz.sum(axis=1).max() > 1:
        return False
    d = np.einsum("ij,ij->j", active, active)
    return bool(d.min() > 2.0 * config.RANGE_RTOL * d.max())


def _initial_directions(cell, trajectories, seed):
    """Unit ``delta_0`` per trajectory, in the coordinates the kernel uses.

    A standard Gaussian ``(trajectories, p)`` from ``default_rng(seed)`` (or
    ``z A`` with ``z`` standard Gaussian ``(trajectories, k)`` when the cell
    has perturbation samples ``A``), projected onto ``U`` (THEORY section 4)
    and normalized; when ``U`` is a proper subspace the result is expressed in
    the basis ``cell["basis"]``. :func:`_chunk_inputs` gives the same rows for
    many cells at once.
    """
    return _normalized(_raw_directions(cell, trajectories,
                                       np.random.default_rng(seed)))


def _raw_directions(cell, trajectories, rng):
    """The directions of :func:`_initial_directions` before normalization."""
    A = cell.get("start")
    if A is None:
        Z = rng.standard_normal((trajectories, cell["dim"]))
    else:
        Z = rng.standard_normal((trajectories, A.shape[0])) @ A
    return Z if cell["basis"] is None else Z @ cell["basis"]


def _normalized(D):
    """Rows of ``D`` divided by their norms (row by row the same numbers for
    any number of rows); a zero row is the error of a perturbation law
    without component in ``U``."""
    nrm = np.linalg.norm(D, axis=1, keepdims=True)
    if not np.all(nrm > 0):
        raise ValueError("perturbation_samples: the perturbation law has no "
                         "component in U = range(sum of active H_i)")
    return D / nrm


def _prepare_cell(retain, eta, batch, scheme="without", forget=None,
                  forget_batch=None, alpha=0.0, perturbation_samples=None, *,
                  shared=None):
    """Validate one configuration and pack it for the kernel.

    Returns a dict with ``family`` (see :func:`_prepare_family`: the Hessians
    as the kernel reads them, shared by every configuration with the same
    arrays and active sets), ``rank_one``, ``dim`` (the original ``p``),
    ``basis`` (``(p, r)`` or ``None``), ``cell_i``, ``cell_f`` (layout in
    :mod:`simlab.dynamics._step`; ``cell_i[10]``, the family's row, is set by
    :func:`_chunk_inputs`) and ``params``.

    ``shared`` (a dict owned by one grid call) shares the validation of the
    arrays and the families between configurations that pass the *same*
    ``retain``/``forget`` objects: a heatmap over (batch, eta, alpha) of one
    family validates it, finds its invariant subspace and stores it once.
    """
    return _pack_cell(_check_cell(retain, eta, batch, scheme, forget, forget_batch,
                                  alpha, perturbation_samples, shared=shared))


def _check_cell(retain, eta, batch, scheme="without", forget=None,
                forget_batch=None, alpha=0.0, perturbation_samples=None, *,
                shared=None):
    """Every check of :func:`_prepare_cell`, without the packing: the
    validated pieces as a dict for :func:`_pack_cell`. A grid runs it on every
    configuration before anything is simulated (a bad configuration fails
    fast), and packs its chunks while the previous chunk runs."""
    shared = {} if shared is None else shared
    key = (id(retain), id(forget))
    if key not in shared:
        # Keeps the inputs alive, so that their ids stay theirs for the call.
        shared[key] = (retain, forget, _validated_pair(retain, forget))
    entry = shared[key][2]
    retain, forget, curv = entry["retain"], entry["forget"], entry["curv"]
    batch, B_f, scheme, alpha = check_run_config(
        retain.shape[0], None if forget is None else forget.shape[0], batch, scheme,
        forget_batch, alpha)
    eta = check_eta(eta)
    check_step(eta, _step_curvature(retain, forget, curv, batch, B_f, scheme, alpha))
    use_r = alpha < 1.0
    use_f = forget is not None and alpha > 0.0
    zero = entry.setdefault("zero", {})
    if (use_r, use_f) not in zero:
        zero[use_r, use_f] = not any(np.any(hs) for hs, use in
                                     ((retain, use_r), (forget, use_f)) if use)
    if zero[use_r, use_f]:
        raise ValueError(_EMPTY_U)
    _, start = check_perturbation_law(None, perturbation_samples, retain.shape[1])
    return {"entry": entry, "eta": eta, "batch": batch, "B_f": B_f,
            "scheme": scheme, "alpha": alpha, "use": (use_r, use_f),
            "start": start}


def _pack_cell(checked):
    """The kernel's view of a configuration checked by :func:`_check_cell`
    (the dict :func:`_prepare_cell` documents)."""
    entry, eta, batch, B_f, scheme, alpha, start = (
        checked[k] for k in ("entry", "eta", "batch", "B_f", "scheme", "alpha",
                             "start"))
    retain, forget, rank_one = entry["retain"], entry["forget"], entry["rank_one"]
    n_r = retain.shape[0]
    n_f = 0 if forget is None else forget.shape[0]
    if forget is None:
        B_f = 0
    use_r, use_f = checked["use"]
    families = entry["families"]
    if (use_r, use_f) not in families:
        families[use_r, use_f] = _prepare_family(retain, forget, rank_one, use_r,
                                                 use_f)
    fam = families[use_r, use_f]
    cell_i = np.array([fam["p"], n_r, n_f, batch, B_f, _step.SCHEME_CODES[scheme],
                       use_r, use_f, rank_one, fam["nnz"], 0, fam["uniform"]],
                      dtype=np.int64)
    cell_f = np.array([batch / n_r, B_f / n_f if n_f else 0.0,
                       (1.0 - alpha) / batch, alpha / B_f if n_f else 0.0, eta])
    params = {
        "eta": eta, "batch": batch, "scheme": scheme,
        "forget_batch": B_f if forget is not None else None, "alpha": alpha,
        "retain_shape": tuple(retain.shape),
        "forget_shape": None if forget is None else tuple(forget.shape),
        "rank_one": bool(rank_one),
    }
    dim = retain.shape[1]
    params["perturbation"] = ("isotropic in U" if start is None else
                              f"gaussian, second moment of {start.shape[0]} samples")
    return {"family": fam, "rank_one": rank_one, "dim": dim, "basis": fam["basis"],
            "cell_i": cell_i, "cell_f": cell_f, "params": params, "start": start}


#: Validated families of recent calls (most recent last), so that a loop of
#: :func:`linearized` calls on the same Hessians validates them, finds their
#: invariant subspace and packs them once: at ``n = 40`` this set-up costs
#: more than the simulation of a typical cell. An entry owns copies of the
#: inputs and is used only for inputs equal to them bit for bit, so mutating
#: an array between calls is safe.
_CACHE = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_ENTRIES = 16
#: Inputs larger than this (bytes, retain and forget together) are not cached:
#: their simulation outweighs the set-up.
_CACHE_BYTES = 1 << 20


def _cacheable(arr):
    """Whether ``arr`` may enter the cache: a float64 ndarray of at most
    ``_CACHE_BYTES``."""
    return (isinstance(arr, np.ndarray) and arr.dtype == np.float64
            and arr.nbytes <= _CACHE_BYTES)


def _same_bits(stored, arr):
    """Whether ``arr`` equals the C-contiguous copy ``stored`` bit for bit."""
    if arr is None or stored is None:
        return arr is None and stored is None
    if arr.shape != stored.shape:
        return False
    return np.array_equal(stored.view(np.uint64),
                          np.ascontiguousarray(arr).view(np.uint64))


def _validated_pair(retain, forget):
    """Validated ``retain``/``forget`` and their per-sample curvature scale.

    Returns a dict with ``retain``, ``forget`` (validated float64 arrays),
    ``rank_one``, ``curv`` (each set's largest
    :func:`~simlab._validation.sample_curvature`, ``None`` without the set)
    and ``families`` (``(use_r, use_f) -> _prepare_family(...)``, filled by the
    caller). Plain float64 arrays up to ``_CACHE_BYTES`` come from, or enter,
    the small cache ``_CACHE``.
    """
    cacheable = (_cacheable(retain) and (forget is None or _cacheable(forget))
                 and retain.nbytes + (0 if forget is None else forget.nbytes)
                 <= _CACHE_BYTES)
    if cacheable:
        with _CACHE_LOCK:
            for key, entry in reversed(_CACHE.items()):
                if (_same_bits(entry["input"][0], retain)
                        and _same_bits(entry["input"][1], forget)):
                    _CACHE.move_to_end(key)
                    return entry
        # Validate owned copies: nothing in the entry aliases the caller's data.
        retain = np.array(retain, order="C")
        forget = None if forget is None else np.array(forget, order="C")
    r, f, rank_one = check_pair(retain, forget)
    curv = tuple(None if hs is None else float(sample_curvature(hs, rank_one).max())
                 for hs in (r, f))
    entry = {"retain": r, "forget": f, "rank_one": rank_one, "curv": curv,
             "families": {}, "input": (retain, forget)}
    if cacheable:
        with _CACHE_LOCK:
            _CACHE[id(entry)] = entry
            while len(_CACHE) > _CACHE_ENTRIES:
                _CACHE.popitem(last=False)
    return entry


def _prepare_family(retain, forget, rank_one, use_r, use_f):
    """The Hessians of validated ``retain``/``forget`` as the kernel reads them.

    Retain rows, then forget rows, in coordinates of ``U = range(sum of active
    H_i)`` when ``U`` is a proper subspace. Returns a dict with ``basis``
    (``(p, r)`` or ``None``), ``p`` (the kernel's dimension), ``nnz``,
    ``uniform`` and the kernel arrays ``G`` (rank-one: factors, or for a
    sparse family the nonzero values), ``Gc`` (column indices of a sparse
    family) and ``H`` (dense).

    Rank-one factors whose rows have at most one or at most ``p / 4``
    nonzeros (the coherence dial has one) are stored sparsely (``nnz`` = the
    largest row count, rows padded with zeros at column 0); the kernel's
    sparse products are bit-identical to the dense ones
    (:mod:`simlab.dynamics._step`). With one nonzero per row the sparse
    product costs O(1) per sample for any ``p``, so it is used even when
    ``p < 4``. ``uniform`` marks such a family whose retain rows share one
    value and whose forget rows share one value, bit for bit (the coherence
    dial): drawn without replacement, it takes the fused step, whose draws
    permute columns instead of rows
    (:func:`simlab.dynamics._step.draw_add_uniform`, same bits).
    """
    hess = retain if forget is None else np.concatenate([retain, forget])
    active = [s for s, use in ((retain, use_r), (forget, use_f)) if use]
    basis = _subspace(np.concatenate(active))
    if basis is not None:
        # Simulate in coordinates of U: no rounding residue can build up in the
        # directions that never move (it would dominate a contracting delta).
        if rank_one:
            hess = hess @ basis
        else:
            hess = basis.T @ hess @ basis
            hess = 0.5 * (hess + hess.transpose(0, 2, 1))   # the kernel uses H = H^T
        hess = np.ascontiguousarray(hess)
    p = hess.shape[1]
    fam = {"basis": basis, "p": p, "nnz": 0, "uniform": False, "rank_one": rank_one,
           "G": hess if rank_one else np.zeros((0, 0)),
           "Gc": np.zeros((0, 0), dtype=np.int64),
           "H": np.zeros((0, 0, 0)) if rank_one else hess}
    if rank_one and hess.shape[0]:
        nz = hess != 0
        counts = nz.sum(axis=1)
        nnz = max(int(counts.max()), 1)
        if nnz == 1 or 4 * nnz <= p:
            rows = hess.shape[0]
            C = np.zeros((rows, nnz), dtype=np.int64)
            V = np.zeros((rows, nnz))
            i, j = np.nonzero(nz)                   # row-major: columns increase
            pos = np.arange(i.size) - np.repeat(np.cumsum(counts) - counts, counts)
            C[i, pos] = j
            V[i, pos] = hess[i, j]
            fam.update(nnz=nnz, G=V, Gc=C)
            if nnz == 1:
                # One value shared by the retain rows and one by the forget
                # rows (bit for bit): the kernel's draws then permute columns
                # (simlab.dynamics._step.draw_add_uniform).
                bits = V[:, 0].view(np.uint64)
                n_r = retain.shape[0]
                fam["uniform"] = bool(np.all(bits[:n_r] == bits[0])
                                      and np.all(bits[n_r:] == bits[n_r:n_r + 1]))
    return fam


def _step_curvature(retain, forget, curv, batch, forget_batch, scheme, alpha):
    """Bound on the curvature one step applies: ``|delta_{t+1}| <= (1 + eta c)
    |delta_t|`` with ``c = sum_sets w k lambda_max``, ``k = n / B`` for
    ``"bernoulli"`` (every sample may be drawn, the sum is divided by ``B``)
    and ``1`` otherwise; ``curv`` holds each set's largest
    :func:`~simlab._validation.sample_curvature`."""
    c = 0.0
    for hs, B, w, lam in ((retain, batch, 1.0 - alpha, curv[0]),
                          (forget, forget_batch, alpha, curv[1])):
        if hs is None or w == 0.0:
            continue
        k = hs.shape[0] / B if scheme == "bernoulli" else 1.0
        c += w * k * lam
    return c


def _check_run(steps, trajectories, escape_factor, record_every, stop_on_escape):
    """Validate the settings shared by every configuration of a run."""
    steps = check_int(steps, "steps", low=1)
    trajectories = check_int(trajectories, "trajectories", low=1)
    record_every = check_int(record_every, "record_every", low=1, high=steps)
    K = check_escape_factor(escape_factor)
    if not isinstance(stop_on_escape, bool | np.bool_):
        raise ValueError(f"stop_on_escape must be a bool, got {stop_on_escape!r}")
    return {"steps": steps, "trajectories": trajectories, "escape_factor": K,
            "record_every": record_every, "stop_on_escape": bool(stop_on_escape)}


def _log_mean_exp(L):
    """``log mean_rows exp(L)`` per column; ``-inf`` columns stay ``-inf``."""
    top = L.max(axis=0)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(L - shift).mean(axis=0)) + shift


def _ms_growth(log_sq_norm, lyapunov, record_steps):
    """Per-step growth factor of ``E|delta_t|^2`` from the recorded samples.

    ``exp`` of the least-squares slope of ``log mean_traj |delta_t|^2`` against
    ``t`` over the second half of the usable recorded steps. A trajectory that
    became exactly zero counts as zero afterwards; when trajectories stopped on
    escape, only the recorded steps before the first such stop are usable.
    NaN if fewer than two steps are usable; ``0.0`` if the mean itself became
    zero.
    """
    L = log_sq_norm
    zero = np.isneginf(lyapunov)
    if zero.any():
        L = L.copy()
        L[zero] = np.where(np.isnan(L[zero]), -np.inf, L[zero])
    usable = ~np.isnan(L).any(axis=0)
    k_end = L.shape[1] if usable.all() else int(np.argmin(usable))
    if k_end < 2:
        return math.nan
    lo = (k_end - 1) // 2
    # Column by column: only the columns of the fit are needed.
    t, y = record_steps[lo:k_end].astype(float), _log_mean_exp(L[:, lo:k_end])
    if np.isneginf(y[-1]):
        return 0.0
    tc = t - t.mean()
    slope = float(np.dot(tc, y - y.mean()) / np.dot(tc, tc))
    return math.exp(slope)


def _ms_growth_many(rec, lyapunov, record_steps, T):
    """:func:`_ms_growth` of every cell of a chunk (``T`` consecutive rows of
    ``rec`` and ``lyapunov`` per cell), the same numbers bit for bit.

    Cells whose trajectories all ran to the end without becoming zero (every
    recorded step usable) share one vectorized log-mean-exp: the mean over
    trajectories adds them in the same order as :func:`_log_mean_exp`, and
    every other operation is elementwise. The other cells take
    :func:`_ms_growth` one by one.
    """
    n_cells = rec.shape[0] // T
    if n_cells == 1:                    # one cell: nothing to share
        return np.array([_ms_growth(rec, lyapunov, record_steps)])
    rec3 = rec.reshape(n_cells, T, rec.shape[1])
    out = np.empty(n_cells)
    regular = ~(np.isneginf(lyapunov).reshape(n_cells, T).any(axis=1)
                | np.isnan(rec3).any(axis=(1, 2)))
    for k in np.flatnonzero(~regular):
        sl = slice(k * T, (k + 1) * T)
        out[k] = _ms_growth(rec[sl], lyapunov[sl], record_steps)
    k_end = rec.shape[1]
    if not regular.any() or k_end < 2:
        out[regular] = math.nan
        return out
    lo = (k_end - 1) // 2
    L = rec3[regular][:, :, lo:k_end]
    top = L.max(axis=1)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        m = np.log(np.exp(L - shift[:, None, :]).mean(axis=1)) + shift
    t = record_steps[lo:k_end].astype(float)
    tc = t - t.mean()
    den = np.dot(tc, tc)
    # Row means and centring are row by row the numbers of y.mean() and
    # y - y.mean(); the dot product stays one np.dot per cell (a matrix-vector
    # product may add in another order).
    with np.errstate(invalid="ignore"):          # rows ending at -inf: unused
        yc = m - m.mean(axis=1, keepdims=True)
    zero = np.isneginf(m[:, -1])
    vals = np.zeros(m.shape[0])
    for i in np.flatnonzero(~zero):
        vals[i] = math.exp(float(np.dot(tc, yc[i]) / den))
    out[regular] = vals
    return out


#: Pairs per call of the CPU driver: the per-pair work arrays of one chunk
#: (``delta``, ``acc``, permutations, records) stay within tens of MB however
#: large the grid (about 3.7 kB per pair on the paper-size Hessian test; up to
#: three chunks are alive at once, see :func:`_run`).
_CHUNK_PAIRS = 4096

#: Pairs per work item of the ``prange`` driver's dynamic schedule (a pair of
#: the paper-size Hessian test takes about 0.2 ms).
_PRANGE_CHUNK = 8

#: Below this estimated number of multiply-adds a chunk runs on the calling
#: thread (``simulate_serial``): waking Numba's worker threads costs several
#: milliseconds of CPU per call on a loaded machine (measured: 8 ms per
#: ``linearized`` call of the n = 40 benchmark on 2 shared cores, more than
#: the arithmetic of most of its cells).
_SERIAL_WORK = 2e7


def _pair_cost(cell, steps):
    """Estimated multiply-adds of one trajectory of ``cell`` (for scheduling)."""
    ci = cell["cell_i"]
    p, nnz = int(ci[0]), int(ci[9])
    row = 2 * nnz if nnz else (2 * p if ci[8] else p * p)
    k = ci[3] * ci[6] + ci[4] * ci[7]
    return steps * (p + k * row + (ci[1] + ci[2] if ci[5] == 0 else 0))


def _pair_order(n_pairs):
    """A fixed shuffle of the pairs for the ``prange`` driver: its static split
    over threads then gets a mix of cheap and expensive cells."""
    return np.random.default_rng(0).permutation(n_pairs).astype(np.int64)


def _pack_families(cells):
    """One row of the kernel arrays ``G``, ``Gc``, ``H`` per distinct family.

    Returns ``(G, Gc, H, fam_of_cell)``; rows are zero-padded to the largest
    family of each kind.
    """
    fams, where = [], {}
    fam_of_cell = np.empty(len(cells), dtype=np.int64)
    for c, cell in enumerate(cells):
        f = cell["family"]
        if id(f) not in where:
            where[id(f)] = len(fams)
            fams.append(f)
        fam_of_cell[c] = where[id(f)]

    def stack(key, dtype):
        if len(fams) == 1:                  # one family: a view, no copy
            return np.ascontiguousarray(fams[0][key], dtype=dtype)[np.newaxis]
        ndim = fams[0][key].ndim
        shape = [max(f[key].shape[d] for f in fams) for d in range(ndim)]
        check_size((len(fams), *shape), f"the {key} array of a linearized run "
                                        f"({len(fams)} families)")
        out = np.zeros((len(fams), *shape), dtype=dtype)
        for i, f in enumerate(fams):
            a = f[key]
            out[(i, *(slice(0, m) for m in a.shape))] = a
        return out

    return (stack("G", float), stack("Gc", np.int64), stack("H", float),
            fam_of_cell)


def _run(cells, seeds, run, driver=None):
    """Run every (cell, trajectory) pair.

    ``cells`` holds prepared cells (:func:`_prepare_cell`) or callables that
    pack checked ones (:func:`_grid`: every configuration is checked before
    anything runs, :func:`_check_cell`): a chunk's cells are then packed
    (invariant subspaces, kernel arrays) just before its work arrays are
    drawn, while the previous chunk runs, so the set-up of a large grid
    overlaps the simulation.

    ``driver`` has the signature of :func:`_simulate_many` and fills the
    output arrays in place; the CUDA backend passes its kernel launcher and
    gets every pair in one call. The CPU runs the pairs in chunks of whole
    cells (at most about ``_CHUNK_PAIRS`` pairs, so the work arrays stay
    small), each with ``_simulate_many`` (threads) or, for a small chunk
    (``_SERIAL_WORK``) or one Numba thread, ``_simulate_serial``. Pairs are
    independent, so neither choice changes a bit of the result.

    With several chunks the compiled driver of one chunk runs in a helper
    thread (it releases the GIL) while this thread prepares the cells and
    draws the initial states of the next chunk and assembles the results of
    the previous one: the host work of a large grid overlaps the simulation
    instead of preceding or following it.
    """
    T = run["trajectories"]
    cells = list(cells)
    n_cells = len(cells)
    if driver is None:
        per_chunk = max(1, _CHUNK_PAIRS // T)
        chunks = [range(a, min(a + per_chunk, n_cells))
                  for a in range(0, n_cells, per_chunk)]
    else:
        chunks = [range(n_cells)]

    def inputs(chunk):
        for c in chunk:
            if callable(cells[c]):
                cells[c] = cells[c]()
        return _chunk_inputs(chunk, cells, seeds, run, driver)

    results = []
    if len(chunks) == 1:
        work = inputs(chunks[0])
        _launch(work, run)
        results.extend(_assemble(work, cells, seeds, run))
        return results
    with ThreadPoolExecutor(1, thread_name_prefix="simlab-linearized") as pool:
        work = inputs(chunks[0])
        running = pool.submit(_launch, work, run)
        done = None
        for chunk in [*chunks[1:], None]:
            nxt = None if chunk is None else inputs(chunk)
            if done is not None:
                results.extend(_assemble(done, cells, seeds, run))
            running.result()
            done, work = work, nxt
            if work is not None:
                running = pool.submit(_launch, work, run)
        results.extend(_assemble(done, cells, seeds, run))
    return results


def _chunk_inputs(chunk, cells, seeds, run, driver):
    """Work arrays of one chunk of cells, initial states drawn: a dict.

    ``shared`` holds the kernel's view of the chunk's configurations: the
    Hessians of its families (:func:`_pack_families`) and the stacked
    ``cell_i``/``cell_f`` (``cell_i[:, 10]`` = the family's row), indexed by
    the position in the chunk.
    """
    T = run["trajectories"]
    steps, every = run["steps"], run["record_every"]
    n_rec = steps // every + 1
    members = [cells[c] for c in chunk]
    G, Gc, H, fam_of_cell = _pack_families(members)
    cell_i = np.stack([c["cell_i"] for c in members])
    cell_i[:, 10] = fam_of_cell
    cell_f = np.stack([c["cell_f"] for c in members])
    p_max = int(cell_i[:, 0].max())
    n_r_max = int(cell_i[:, 1].max())
    n_f_max = int(cell_i[:, 2].max())
    n_pairs = len(chunk) * T
    check_size(n_pairs * (n_rec + 2 * p_max + n_r_max + n_f_max
                          + max(n_r_max, n_f_max) + 8),
               f"a linearized run of {len(cells)} configuration(s) x "
               f"trajectories={T} with {n_rec} recorded steps "
               f"(steps={steps}, record_every={every})")
    pair_cell = np.repeat(np.arange(len(chunk), dtype=np.int64), T)
    fused = bool(np.all((cell_i[:, 5] == _step.SCHEME_CODES["without"])
                        & (cell_i[:, 9] == 1) & (cell_i[:, 11] == 1)))
    # As _rng_states and _initial_directions cell by cell, bit for bit: the
    # generator states of the whole chunk at once, and one normalization per
    # group of cells of the same width (row norms do not depend on the rows
    # around them).
    states, pcg = _seeded_streams([seeds[c] for c in chunk], T)
    delta = np.zeros((n_pairs, p_max))
    reuse = np.random.Generator(np.random.PCG64(0))
    by_width = {}
    for k, c in enumerate(chunk):
        D = _raw_directions(cells[c], T, _generator(seeds[c], pcg[k], reuse))
        by_width.setdefault(D.shape[1], []).append((k, D))
    traj = np.arange(T)
    for width, items in by_width.items():
        rows = (np.array([k for k, _ in items])[:, None] * T + traj).ravel()
        delta[rows, :width] = _normalized(np.concatenate([D for _, D in items]))
    drive, serial = driver, False
    if drive is None:
        work = T * sum(_pair_cost(cells[c], steps) for c in chunk)
        serial = bool(work < _SERIAL_WORK or num_threads() == 1)
        drive = _DRIVERS[fused][serial]
    return {
        "chunk": chunk, "drive": drive, "pair_cell": pair_cell,
        "shared": (G, Gc, H, cell_i, cell_f),
        # prange over threads: dynamic schedule of _PRANGE_CHUNK pairs
        "chunksize": _PRANGE_CHUNK if driver is None and not serial else 0,
        # one thread: the order is irrelevant
        "order": (np.arange(n_pairs, dtype=np.int64) if serial
                  else _pair_order(n_pairs)),
        "states": states, "delta": delta,
        "perm_r": np.empty((n_pairs, max(n_r_max, 1)), dtype=np.int64),
        "perm_f": np.empty((n_pairs, max(n_f_max, 1)), dtype=np.int64),
        # The draw of uniform one-nonzero rows without replacement needs no idx.
        "idx": np.empty((n_pairs, 1 if fused else max(n_r_max, n_f_max, 1)),
                        dtype=np.int64),
        "acc": np.empty((n_pairs, p_max)),
        "rec": np.empty((n_pairs, n_rec)),
        "escape_step": np.empty(n_pairs, dtype=np.int64),
        "steps_run": np.empty(n_pairs, dtype=np.int64),
        "log_final": np.empty(n_pairs),
    }


def _launch(w, run):
    """Run one chunk's driver on its work arrays (filled in place); the
    ``prange`` driver with a dynamic schedule of ``_PRANGE_CHUNK`` pairs."""
    G, Gc, H, cell_i, cell_f = w["shared"]
    with dynamic_chunks(w["chunksize"]):
        w["drive"](G, Gc, H, cell_i, cell_f, w["pair_cell"], w["order"],
                   run["steps"], run["record_every"], math.log(run["escape_factor"]),
                   run["stop_on_escape"], w["states"], w["perm_r"], w["perm_f"],
                   w["idx"], w["acc"], w["delta"], w["rec"], w["escape_step"],
                   w["steps_run"], w["log_final"])


def _assemble(w, cells, seeds, run):
    """The :class:`LinearizedResult` of every cell of a finished chunk.

    Vectorized over the chunk: the directions of all cells of one family (one
    basis of ``U``) are mapped back and normalized together (a stacked
    product, one matrix product per cell as before, and row norms), and each
    result holds views of the chunk's arrays (disjoint rows, nothing shared
    between results).
    """
    T = run["trajectories"]
    chunk = w["chunk"]
    rec, delta, escape_step = w["rec"], w["delta"], w["escape_step"]
    record_steps = np.arange(rec.shape[1], dtype=np.int64) * run["record_every"]
    log_final, steps_run = w["log_final"], w["steps_run"]
    with np.errstate(divide="ignore", invalid="ignore"):
        lyapunov = 0.5 * log_final / steps_run
    ms_growth = _ms_growth_many(rec, lyapunov, record_steps, T)
    escaped = escape_step >= 0
    direction = [None] * len(chunk)
    groups = {}
    for k, c in enumerate(chunk):
        cell = cells[c]
        key = (id(cell["basis"]), int(cell["cell_i"][0]))
        groups.setdefault(key, (cell["basis"], []))[1].append(k)
    traj = np.arange(T)
    for (_, r), (basis, ks) in groups.items():
        rows = (np.array(ks)[:, None] * T + traj).ravel()
        d = delta[rows, :r].reshape(len(ks), T, r)
        if basis is not None:
            d = d @ basis.T
        nrm = np.linalg.norm(d, axis=2, keepdims=True)
        d = np.divide(d, nrm, out=np.zeros_like(d), where=nrm > 0)
        for i, k in enumerate(ks):
            direction[k] = d[i]
    out = []
    for k, c in enumerate(chunk):
        seed = int(seeds[c])
        sl = slice(k * T, (k + 1) * T)
        out.append(LinearizedResult(
            escaped=escaped[sl], escape_step=escape_step[sl],
            lyapunov=lyapunov[sl], log_sq_norm=rec[sl],
            record_steps=record_steps, direction=direction[k],
            ms_growth=float(ms_growth[k]),
            params={**cells[c]["params"], **run, "seed": seed}, seed=seed,
            version=__version__))
    return out


# ------------------------------------------------------------------- public API

@serial_blas
def linearized(retain, eta, batch, *, scheme="without", forget=None,
               forget_batch=None, alpha=0.0, steps=1000, trajectories=16,
               escape_factor=1e3, seed=0, record_every=1, stop_on_escape=False,
               perturbation_samples=None):
    """Simulate the linearized SGD / unlearning dynamics by Monte Carlo.

    Parameters
    ----------
    retain : array_like, shape (n_r, p, p) or (n_r, p)
        Retain-set Hessians: dense PSD, or rank-one factors ``g_i`` with
        ``H_i = g_i g_i^T``.
    eta : float
        Learning rate ``> 0``. Refused when one step could grow ``|delta|`` by
        more than ``1e50`` (``eta`` times the largest per-sample curvature, times
        ``n / B`` for ``"bernoulli"``): beyond that float64 overflows, and such
        a step size diverges in any case.
    batch : int
        Retain batch size ``B_r`` in ``[1, n_r]`` (expected size for
        ``"bernoulli"``).
    scheme : {"bernoulli", "with", "without"}
        Sampling scheme of both sets: independent inclusion with probability
        ``B/n`` (sum divided by ``B``, not by the realized size), ``B`` uniform
        draws with replacement, or a uniform ``B``-subset.
    forget : array_like, optional
        Forget-set Hessians in the same representation and dimension.
    forget_batch : int, optional
        Forget batch size ``B_f`` in ``[1, n_f]``; defaults to the retain set's
        sampling fraction, ``max(1, min(n_f, round(batch n_f / n_r)))``
        (``batch`` when ``n_f = n_r``).
    alpha : float
        Mixing weight in ``[0, 1]``; ``0`` is plain SGD on ``retain``, and
        ``alpha > 0`` needs ``forget``.
    steps : int
        Horizon ``t_max >= 1``.
    trajectories : int
        Number of independent trajectories ``>= 1``.
    escape_factor : float
        ``K > 1`` (``inf`` allowed): escape means
        ``|delta_t|^2 >= K |delta_0|^2``.
    seed : int
        Non-negative seed; the same seed gives bit-identical results.
    record_every : int
        Record ``log|delta_t|^2`` every this many steps, in ``[1, steps]`` (at
        least two recorded points, so that ``ms_growth`` is defined).
    stop_on_escape : bool
        Stop each trajectory at its escape step.
    perturbation_samples : array_like, shape (k, p), optional
        Law of ``delta_0``: Gaussian with the second moment of these rows,
        ``delta_0 = z A`` with ``z`` standard Gaussian (e.g. the curvature
        factors, for a perturbation in the curvature range as the real twin
        runs draw it). Default: isotropic in ``U``. Only the direction
        matters: the dynamics is linear.

    Returns
    -------
    LinearizedResult

    See Also
    --------
    linearized_grid : many configurations in one compiled call.
    simlab.stability.spectral_radius : the exact ``rho(T)`` that ``ms_growth``
        estimates.
    simlab.stability.second_moment_operator : ``T`` itself.

    Notes
    -----
    The dynamics is THEORY section 1 (SGD) and section 3 (unlearning by
    descent-ascent): per step, with retain and forget batches drawn
    independently (retain first) and both sums evaluated at the old ``delta``,

        delta <- delta - eta [(1-alpha)/B_r sum_i H_i delta
                              - alpha/B_f sum_j H_j delta].

    A set with zero weight (retain at ``alpha = 1``, forget at ``alpha = 0``) is
    not sampled. ``E[delta_t delta_t^T] = T^t(E[delta_0 delta_0^T])`` with ``T``
    the operator of THEORY sections 2-3.

    ``delta_0`` is, per trajectory, a standard Gaussian vector drawn from
    ``np.random.default_rng(seed)`` (shape ``(trajectories, p)``, before any
    kernel runs; ``z A`` with ``z`` of shape ``(trajectories, k)`` under
    ``perturbation_samples``), projected onto ``U = range(sum of active H_i)`` and
    normalized: directions outside ``U`` never move (THEORY section 4), so the
    simulation is comparable with ``rho(T)`` on ``U``. When ``U`` is a proper
    subspace the kernel works in an orthonormal basis of ``U`` (``r = dim U``
    coordinates, so each step costs ``O(B r)`` instead of ``O(B p)``); besides
    being cheaper, this keeps rounding residue out of the directions that never
    move, where it would otherwise stall a contracting ``delta`` near
    ``1e-16``. The in-kernel batches come from one xoshiro256** stream per
    trajectory, seeded by the first child of ``np.random.SeedSequence(seed)``.

    ``delta`` is rescaled whenever ``|delta|^2`` leaves ``[1e-200, 1e200]`` and
    the log-scale is accumulated, so the norm never overflows (as long as one
    step grows it by less than about ``1e100``); entries below ``1e-280`` in
    magnitude (180 orders below the norm) are set to zero to avoid slow
    subnormal arithmetic; an exactly zero ``delta`` gives ``lyapunov = -inf``
    and stops the trajectory.

    ``ms_growth`` is ``exp`` of the least-squares slope of
    ``log mean_traj |delta_t|^2`` (a log-sum-exp over trajectories) against
    ``t`` over the second half of the recorded steps. For large ``t`` this is
    the mean-square growth ``rho(T)`` on ``U``, but the mean of ``|delta_t|^2``
    is dominated by rare trajectories when the noise is large, so the estimate
    needs many trajectories and a modest horizon; ``lyapunov`` and the escape
    fraction measure the typical behaviour instead (THEORY section 4). With
    ``stop_on_escape`` only the recorded steps before the first stop are used.
    Cost per step: ``O(B p)`` for rank-one factors, ``O(B nnz + p)`` when
    their rows have at most ``nnz <= p / 4`` nonzeros (stored sparsely, same
    result bit for bit; the coherence dial has ``nnz = 1``), ``O(B p^2)``
    dense (plus ``O(n)`` random draws for ``"bernoulli"``).

    Examples
    --------
    Identical samples make every minibatch equal to the full batch, so the
    squared norm grows by exactly ``(1 - eta * 2)^2 = 4`` per step:

    >>> from simlab.curvature import coherence_dial
    >>> res = linearized(coherence_dial(4, 4), 1.5, 2, scheme="without",
    ...                  steps=20, trajectories=3, seed=1)
    >>> round(res.ms_growth, 10), res.escape_step.tolist()
    (4.0, [5, 5, 5])
    """
    run = _check_run(steps, trajectories, escape_factor, record_every,
                     stop_on_escape)
    seed = check_seed(seed)
    cell = _prepare_cell(retain, eta, batch, scheme, forget, forget_batch, alpha,
                         perturbation_samples)
    return _run([cell], [seed], run)[0]


_CONFIG_KEYS = ("retain", "eta", "batch", "scheme", "forget", "forget_batch",
                "alpha", "seed", "perturbation_samples")


@serial_blas
def linearized_grid(configs, *, steps=1000, trajectories=16, escape_factor=1e3,
                    seed=0, record_every=1, stop_on_escape=False):
    """Simulate many configurations in one compiled call.

    Parameters
    ----------
    configs : sequence of mapping
        Each mapping holds the per-configuration arguments of
        :func:`linearized`: ``retain``, ``eta``, ``batch`` (required) and
        optionally ``scheme``, ``forget``, ``forget_batch``, ``alpha`` and
        ``seed``. Configurations may differ in every one of them, including the
        dimension and the representation (rank-one or dense).
    steps, trajectories, escape_factor, record_every, stop_on_escape
        Shared by all configurations; as in :func:`linearized`.
    seed : int
        Seeds the configurations that give no ``seed`` of their own:
        configuration ``c`` gets ``SeedSequence(seed).generate_state(len(configs))[c]``.

    Returns
    -------
    list of LinearizedResult
        One per configuration, in order. Result ``c`` is bit-identical to
        ``linearized(**configs[c], seed=results[c].seed, ...)`` with the same
        shared settings.

    See Also
    --------
    linearized : one configuration.

    Notes
    -----
    All (configuration, trajectory) pairs run in ``prange`` loops over chunks
    of about 4096 pairs, so a heatmap of small cells costs a few kernel
    launches instead of one per cell, and the per-trajectory work arrays stay
    small; while one chunk runs, the host prepares the next and assembles the
    previous one. Configurations that pass the *same* ``retain``/``forget``
    array objects share their validation, invariant subspace and kernel copy
    of the Hessians (pass one array to many configurations rather than
    copies); recent families are also kept between calls (verified bit for
    bit against a copy of the inputs, so mutating an array is safe).
    Families are zero-padded to the largest dimension, which costs memory but
    no arithmetic (loops run to each cell's own ``p`` and ``n``). THEORY
    sections 1-4 and 7 (the coherence-dial heatmaps).

    Examples
    --------
    >>> from simlab.curvature import coherence_dial
    >>> grid = [{"retain": coherence_dial(8, s), "eta": 0.5, "batch": B,
    ...          "scheme": "without"} for s in (1, 8) for B in (1, 8)]
    >>> res = linearized_grid(grid, steps=50, trajectories=2)
    >>> [r.params["batch"] for r in res]
    [1, 8, 1, 8]
    """
    return _grid(configs, steps, trajectories, escape_factor, seed, record_every,
                 stop_on_escape)


def _grid(configs, steps, trajectories, escape_factor, seed, record_every,
          stop_on_escape, driver=None):
    """Validate a grid and run it with ``driver`` (shared by every backend)."""
    run = _check_run(steps, trajectories, escape_factor, record_every,
                     stop_on_escape)
    seed = check_seed(seed)
    configs = list(configs)
    if not configs:
        raise ValueError("configs must hold at least one configuration")
    auto = np.random.SeedSequence(seed).generate_state(len(configs))
    cells, seeds, shared = [], [], {}
    for c, cfg in enumerate(configs):
        if not isinstance(cfg, Mapping):
            raise ValueError(f"configs[{c}] must be a mapping, got {type(cfg)}")
        unknown = set(cfg) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"configs[{c}] has unknown keys {sorted(unknown)}; "
                             f"allowed: {_CONFIG_KEYS}")
        missing = {"retain", "eta", "batch"} - set(cfg)
        if missing:
            raise ValueError(f"configs[{c}] misses {sorted(missing)}")
        kw = {k: v for k, v in cfg.items() if k != "seed"}
        # Checked now, so that a bad configuration fails before anything runs;
        # packed when _run reaches its chunk.
        cells.append(functools.partial(_pack_cell,
                                       _check_cell(**kw, shared=shared)))
        seeds.append(check_seed(cfg["seed"], f"configs[{c}]['seed']")
                     if "seed" in cfg else int(auto[c]))
    return _run(cells, seeds, run, driver)
