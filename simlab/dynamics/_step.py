"""Plain-Python step bodies of the linearized dynamics, compiled per backend.

Everything a trajectory does inside a kernel is written here exactly once, as
scalar loops over arrays that the caller allocates: no NumPy allocation, no
Python objects, only ``math`` functions and NumPy scalar casts. The module-level
functions are plain Python and call one another by name;
:func:`simlab._jit.compile_family` compiles them (the one compile path):

* for the CPU in :mod:`simlab.dynamics.linearized` (inlined), together with the
  driver body :func:`simulate_many` (``prange`` over (cell, trajectory) pairs);
* as CUDA device functions in :mod:`simlab.dynamics.gpu_linearized`;
* the module-level functions themselves run uncompiled in Python (tests,
  debugging; ``prange`` is ``range`` here). Their uint64 arithmetic wraps like
  the compiled code, but NumPy warns on scalar overflow: call them under
  ``np.errstate(over="ignore")``.

The driver lives in this file on purpose: Numba's cache checks only the source
file of the function it compiles, so a driver defined elsewhere would keep
running stale step code from the cache after an edit here.

Random numbers come from xoshiro256** (Blackman & Vigna, "Scrambled linear
pseudorandom number generators", ACM TOMS 2021), a counter-free generator on
four uint64 words. Every operation on the state is integer arithmetic modulo
2**64, so the CPU and CUDA compilations give bit-identical streams. Numba
promotes ``uint64 op int64`` to float64, so every constant below is an
``np.uint64``.

One configuration ("cell") is described by two small arrays built on the host
by ``simlab.dynamics.linearized._prepare_cell``:

``cell_i`` (int64): ``[p, n_r, n_f, B_r, B_f, scheme, use_r, use_f, rank_one,
nnz, family, uniform]`` (``uniform``: a one-nonzero family whose retain rows
share one value and whose forget rows share one value, see
:func:`draw_add_uniform`)
``cell_f`` (float64): ``[q_r, q_f, w_r, w_f, eta]`` with ``q = B / n`` (Bernoulli
keep probability) and weights ``w_r = (1 - alpha) / B_r``, ``w_f = alpha / B_f``.

The Hessians live once per *family* (the retain rows, then the forget rows, of
the configurations that share them), not once per cell: ``family`` is the row
of ``G`` (rank-one factors), ``Gc`` and ``H`` (dense) that a cell uses. A sparse
rank-one family (``nnz > 0``) stores row ``i``'s nonzero entries in
``G[family, i, :nnz]`` and their (increasing) column indices in
``Gc[family, i, :nnz]`` (padding: value 0 at column 0); the sparse product
:func:`add_sparse` gives bit-for-bit the dense one :func:`add_rank_one`, at
``O(nnz)`` instead of ``O(p)`` per row.
"""

import math

import numpy as np

__all__ = [
    "SCHEME_CODES",
    "STEP_FUNCTIONS",
    "family",
    "xoshiro",
    "rng_next",
    "to_uniform",
    "to_below",
    "rng_uniform",
    "rng_below",
    "draw_batch",
    "add_rank_one",
    "add_sparse",
    "add_dense",
    "draw_add_uniform",
    "escape_threshold",
    "sum_sq",
    "run_trajectory",
    "simulate_pair",
    "simulate_many",
    "simulate_serial",
]

#: Integer codes of the sampling schemes used inside kernels.
SCHEME_CODES = {"bernoulli": 0, "with": 1, "without": 2}

# uint64 constants (Numba freezes module globals as typed constants).
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U5 = np.uint64(5)
_U7 = np.uint64(7)
_U9 = np.uint64(9)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U19 = np.uint64(19)
_U32 = np.uint64(32)
_U45 = np.uint64(45)
_U57 = np.uint64(57)
_TWO_M53 = 2.0**-53

# Squared norms outside [_SQ_LOW, _SQ_HIGH] trigger a renormalization of delta.
_SQ_LOW = 1e-200
_SQ_HIGH = 1e200

# Entries of delta below _FLUSH in magnitude are set to zero (see run_trajectory).
# The norm is kept >= 1e-100 by the renormalization, so a flushed entry is more
# than 180 orders of magnitude below it: the flush changes no recorded quantity,
# and it keeps the arithmetic out of the subnormal range, which costs ~100 cycles
# per operation on x86 (1.5x slower overall on the coherence-dial benchmark,
# where decoupled axes decay independently).
_FLUSH = 1e-280

# Each step computes |delta|^2 as four interleaved partial sums (fast); the
# in-order sum is recomputed only where the value decides something: when the
# fast value lies within this relative margin of the escape threshold or of
# the renormalization bounds, on recorded steps and on the last step. Both sums
# add the same nonnegative terms, so each is within a relative (p - 1) 2^-53
# of the exact sum (Higham, "Accuracy and Stability of Numerical Algorithms",
# 2nd ed., section 4.2): for p <= _P_FAST_MAX they differ by < 2.3e-8 relative,
# far inside the margin, and every decision and record is the one of the
# in-order sum. Larger p always uses the in-order sum.
_SQ_MARGIN = 1e-6
_P_FAST_MAX = 100_000_000

_NAN = math.nan
_NEG_INF = -math.inf

#: Loop used by :func:`simulate_many`; the CPU compile binds it to ``prange``.
prange = range

#: Compile-time flag: every cell is a one-nonzero (sparse, ``nnz == 1``) family
#: with one value per set (``uniform``), drawn without replacement: the case of
#: :func:`draw_add_uniform` (the coherence dial). ``simlab.dynamics.linearized``
#: compiles a second CPU family with it set to True for chunks that hold only
#: such cells; Numba freezes it as a constant, so that copy of
#: :func:`run_trajectory` keeps only that step, and the smaller loop is
#: register-allocated better. Same arithmetic, same bits.
FUSED_ONLY = False


def xoshiro(s0, s1, s2, s3):
    """One xoshiro256** step on the state words held in variables.

    Returns ``(output, s0, s1, s2, s3)``. Loops that draw many numbers keep the
    state in registers this way and write it back once (:func:`draw_batch`);
    through the array, every draw would load and store the four words.
    """
    x = s1 * _U5
    result = ((x << _U7) | (x >> _U57)) * _U9
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << _U45) | (s3 >> _U19)
    return result, s0, s1, s2, s3


def rng_next(state):
    """Advance the xoshiro256** ``state`` (uint64[4]) and return a uint64."""
    x, s0, s1, s2, s3 = xoshiro(state[0], state[1], state[2], state[3])
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    return x


def to_uniform(x):
    """Uniform double on ``[0, 1)`` from a uint64 draw: the top 53 bits times
    ``2**-53``."""
    return (x >> _U11) * _TWO_M53


def to_below(x, m):
    """Integer in ``[0, m)`` from a uint64 draw, for ``1 <= m < 2**32``.

    Lemire's multiply-shift on the top 32 bits, in integer arithmetic only; the
    bias is at most ``m / 2**32`` (below ``1e-8`` for ``m <= 40``).
    """
    return np.int64(((x >> _U32) * np.uint64(m)) >> _U32)


def rng_uniform(state):
    """Uniform double on ``[0, 1)`` (:func:`to_uniform` of the next draw)."""
    return to_uniform(rng_next(state))


def rng_below(state, m):
    """Integer in ``[0, m)`` for ``1 <= m < 2**32`` (:func:`to_below` of the
    next draw)."""
    return to_below(rng_next(state), m)


def draw_batch(state, scheme, n, B, q, perm, idx):
    """Draw one minibatch of sample indices into ``idx``; return its size.

    ``scheme`` 0 (bernoulli): each of the ``n`` samples is kept when a uniform
    draw is ``< q = B / n`` (``n`` draws, random size, increasing indices).
    1 (with): ``B`` draws of ``rng_below(n)``.
    2 (without): ``B`` swaps of a partial Fisher-Yates shuffle of the persistent
    permutation ``perm`` (length ``n``); the first ``B`` entries are then a
    uniform ``B``-subset whatever ``perm`` held before, in ``O(B)`` per step.

    The draws are those of :func:`rng_uniform` / :func:`rng_below`, in the same
    order; the generator state stays in variables during the loop.
    """
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    if scheme == 0:
        k = 0
        for i in range(n):
            x, s0, s1, s2, s3 = xoshiro(s0, s1, s2, s3)
            if to_uniform(x) < q:
                idx[k] = i
                k += 1
    elif scheme == 1:
        for j in range(B):
            x, s0, s1, s2, s3 = xoshiro(s0, s1, s2, s3)
            idx[j] = to_below(x, n)
        k = B
    else:
        for j in range(B):
            x, s0, s1, s2, s3 = xoshiro(s0, s1, s2, s3)
            r = j + to_below(x, n - j)
            tmp = perm[r]
            perm[r] = perm[j]
            perm[j] = tmp
            idx[j] = tmp
        k = B
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    return k


def add_sparse(V, C, row0, idx, k, w, delta, acc, nnz, p):
    """:func:`add_rank_one` for sparse rows: ``O(k nnz)``, same result.

    Each nonzero term of ``g_i . delta`` goes to the partial sum the dense
    loop gives it (column ``j mod 4`` before the tail ``p - p mod 4``, ``s0``
    in the tail), in the same order; the dense loop's other terms are exact
    zeros, which change a partial sum at most in the sign of a zero. With one
    nonzero per row (the coherence dial) the dense sum is that one term: no
    partial sums, no branch on a random column.

    The dense update adds ``c * 0`` (a signed zero, ``c`` is finite) to the
    entries outside the row's support; that changes ``acc[j]`` at most from
    ``+0`` to ``-0``, and ``delta[j] - eta * acc[j]`` is the same for both
    after the flush in :func:`run_trajectory` (``+-0`` becomes ``0.0``).
    The products are written out rather than called: on the CPU an array
    passed to an inlined function costs an atomic reference-count increment
    and decrement per call.
    """
    if nnz == 1:
        for a in range(k):
            i = row0 + idx[a]
            j = C[i, 0]
            c = w * (V[i, 0] * delta[j])
            acc[j] += c * V[i, 0]
        return
    p4 = p - p % 4
    for a in range(k):
        i = row0 + idx[a]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for b in range(nnz):
            j = C[i, b]
            v = V[i, b] * delta[j]
            m = (j & 3) if j < p4 else 0
            if m == 0:
                s0 += v
            elif m == 1:
                s1 += v
            elif m == 2:
                s2 += v
            else:
                s3 += v
        c = w * ((s0 + s1) + (s2 + s3))
        for b in range(nnz):
            acc[C[i, b]] += c * V[i, b]


def add_rank_one(G, row0, idx, k, w, delta, acc, p):
    """``acc += w * sum_a g_i (g_i . delta)``, ``i = row0 + idx[a]``: O(k p).

    ``g_i . delta`` uses four interleaved partial sums (``j mod 4``, the
    tail in ``s0``, combined as ``(s0 + s1) + (s2 + s3)``): the fixed split
    breaks the floating-point dependency chain of a plain loop without
    ``fastmath``, and is the same order on every backend.
    """
    for a in range(k):
        i = row0 + idx[a]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        j = 0
        while j + 4 <= p:
            s0 += G[i, j] * delta[j]
            s1 += G[i, j + 1] * delta[j + 1]
            s2 += G[i, j + 2] * delta[j + 2]
            s3 += G[i, j + 3] * delta[j + 3]
            j += 4
        while j < p:
            s0 += G[i, j] * delta[j]
            j += 1
        c = w * ((s0 + s1) + (s2 + s3))
        for j in range(p):
            acc[j] += c * G[i, j]


def add_dense(H, row0, idx, k, w, delta, acc, p):
    """``acc += w * sum_a H_i delta``, ``i = row0 + idx[a]``: O(k p^2).

    Uses the symmetry of ``H_i``: ``H_i delta = sum_m delta[m] H_i[m, :]``, a
    sequence of contiguous axpy updates that vectorize (no reduction chain).
    """
    for a in range(k):
        Hi = H[row0 + idx[a]]
        for m in range(p):
            c = w * delta[m]
            for j in range(p):
                acc[j] += c * Hi[m, j]


def draw_add_uniform(state, n, B, perm, v, w, delta, acc):
    """:func:`draw_batch` for ``"without"`` (scheme 2) and :func:`add_sparse`
    in one loop, for rows with one nonzero that share one value ``v``: the
    permutation ``perm`` holds each row's column instead of the row's index.

    The swaps of a Fisher-Yates step move entries by position and never look
    at them, so a permutation started at ``perm[i] = column of row i`` holds,
    after any number of steps, the column of the row that the plain
    permutation holds at the same position: the same draws, columns, products
    and order of additions into ``acc`` (bit-identical), without the two
    lookups (row -> column, row -> value) per draw that depend on the drawn
    entry. The coherence dial is such a family (every row has the value
    ``sqrt(2 n / s)``). Measured: the draw loop alone 2.0 instead of 4.2 ns
    per draw with distinct columns (3.5 instead of 4.0 with one column hit by
    every draw: the additions into ``acc[0]`` then chain); the Hessian-test
    kernel on 2 threads 0.91-0.95 of the wall time (paired, three sets), the
    whole ``simlab reproduce hessian-test`` 0.98.
    """
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    for j in range(B):
        x, s0, s1, s2, s3 = xoshiro(s0, s1, s2, s3)
        ju = np.uint64(j)
        r = ju + (((x >> _U32) * np.uint64(n - j)) >> _U32)
        c = perm[r]
        perm[r] = perm[ju]
        perm[ju] = c
        cu = np.uint64(c)
        acc[cu] += (w * (v * delta[cu])) * v
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3


def escape_threshold(log_thresh):
    """``exp(log_thresh)``, ``inf`` instead of an overflow."""
    if log_thresh > 700.0:
        return math.inf
    return math.exp(log_thresh)


def sum_sq(delta, p):
    """``|delta|^2`` summed in index order (the value every recorded and
    compared quantity uses)."""
    sq = 0.0
    for j in range(p):
        sq += delta[j] * delta[j]
    return sq


def run_trajectory(G, Gc, H, cell_i, cell_f, steps, record_every, log_K,
                   stop_on_escape, state, perm_r, perm_f, idx, acc, delta, rec):
    """Run one trajectory from ``delta`` (in place); return its summary.

    Parameters are one cell's Hessians (its family's rows of ``G``, ``Gc``,
    ``H``) and ``cell_i``/``cell_f`` (module docstring), the run settings
    (``log_K = log escape_factor``), and this
    trajectory's work arrays: ``state`` (uint64[4]), ``perm_r``/``perm_f``
    (int64, length >= n), ``idx`` (int64, length >= max(n_r, n_f)), ``acc``
    (float64[p]), ``delta`` (float64[p]: ``delta_0`` on entry, the final,
    possibly rescaled ``delta`` on exit) and ``rec`` (float64[n_rec]: receives
    ``log|delta_t|^2 - log|delta_0|^2`` at ``t = r * record_every``, NaN after
    the trajectory stopped, ``-inf`` where ``delta`` became zero).

    Returns
    -------
    escape_step : int
        First ``t`` with ``|delta_t|^2 >= K |delta_0|^2``, or -1.
    steps_run : int
        Number of steps taken (``< steps`` only when stopped early).
    log_final : float
        ``log|delta_T|^2 - log|delta_0|^2``; ``-inf`` if ``delta`` became 0.

    Notes
    -----
    ``delta`` is rescaled to unit norm whenever ``|delta|^2`` leaves
    ``[1e-200, 1e200]``, and the removed factor is accumulated in
    ``log_scale``, so nothing overflows as long as one step grows the norm by
    less than about ``1e100``. An exactly zero ``delta`` stops the trajectory.
    """
    p = cell_i[0]
    n_r = cell_i[1]
    n_f = cell_i[2]
    B_r = cell_i[3]
    B_f = cell_i[4]
    scheme = cell_i[5]
    use_r = cell_i[6] != 0
    use_f = cell_i[7] != 0
    rank_one = cell_i[8] != 0
    nnz = cell_i[9]
    uniform = FUSED_ONLY or (scheme == 2 and nnz == 1 and cell_i[11] != 0)
    q_r = cell_f[0]
    q_f = cell_f[1]
    w_r = cell_f[2]
    w_f = cell_f[3]
    eta = cell_f[4]
    v_r = 0.0
    v_f = 0.0
    if uniform:     # permutations of columns (draw_add_uniform)
        for i in range(n_r):
            perm_r[i] = Gc[i, 0]
        for i in range(n_f):
            perm_f[i] = Gc[n_r + i, 0]
        if n_r > 0:
            v_r = G[0, 0]
        if n_f > 0:
            v_f = G[n_r, 0]
    else:
        for i in range(n_r):
            perm_r[i] = i
        for i in range(n_f):
            perm_f[i] = i
    rec[0] = 0.0
    for r in range(1, rec.shape[0]):
        rec[r] = _NAN
    for j in range(p):
        acc[j] = 0.0
    sq = sum_sq(delta, p)
    log_sq0 = math.log(sq)
    log_scale = 0.0
    thresh = escape_threshold(log_K + log_sq0)
    escape_step = -1
    steps_run = steps
    countdown = record_every
    r = 0
    fast = p <= _P_FAST_MAX
    lo = _SQ_LOW * (1.0 + _SQ_MARGIN)
    hi = _SQ_HIGH * (1.0 - _SQ_MARGIN)
    near = thresh * (1.0 - _SQ_MARGIN)
    for t in range(1, steps + 1):
        # One step delta <- delta - eta [w_r S_r - w_f S_f]: S_r (S_f) is the
        # sum of the retain (forget) batch Hessians applied to the old delta;
        # the retain batch is drawn before the forget batch. Rows 0..n_r-1 of
        # G (rank-one; sparse: values in G, columns in Gc) or H (dense) are
        # retain, then forget. Written here rather than in a function of its
        # own: the nine arrays such a call passes cost reference counting per
        # step in the compiled loop (1.14x on the Hessian-test cells).
        ur = use_r
        uf = use_f
        if uniform:
            if ur:
                draw_add_uniform(state, n_r, B_r, perm_r, v_r, w_r, delta, acc)
            if uf:
                draw_add_uniform(state, n_f, B_f, perm_f, v_f, -w_f, delta, acc)
            ur = False
            uf = False
        if ur:
            k = draw_batch(state, scheme, n_r, B_r, q_r, perm_r, idx)
            if nnz > 0:
                add_sparse(G, Gc, 0, idx, k, w_r, delta, acc, nnz, p)
            elif rank_one:
                add_rank_one(G, 0, idx, k, w_r, delta, acc, p)
            else:
                add_dense(H, 0, idx, k, w_r, delta, acc, p)
        if uf:
            k = draw_batch(state, scheme, n_f, B_f, q_f, perm_f, idx)
            if nnz > 0:
                add_sparse(G, Gc, n_r, idx, k, -w_f, delta, acc, nnz, p)
            elif rank_one:
                add_rank_one(G, n_r, idx, k, -w_f, delta, acc, p)
            else:
                add_dense(H, n_r, idx, k, -w_f, delta, acc, p)
        # New delta, entries below 1e-280 in magnitude (signed zeros included)
        # set to 0.0 (subnormal arithmetic is slow; see _FLUSH), acc cleared
        # where consumed (it is zero at every step's start). Then a fast
        # |delta|^2 in four interleaved partial sums (j mod 4): it differs from
        # the in-order sum_sq by a relative <= 2 p 2^-53 and is zero exactly
        # when that is; the in-order sum is taken wherever the value decides
        # or is recorded (_SQ_MARGIN). Two loops rather than one: the update
        # has no reduction and compiles to SIMD code, and the sum reads the
        # fresh delta from L1 (1.8x faster than the fused loop at p = 100).
        pu = np.uint64(p)
        j = np.uint64(0)
        while j < pu:
            d = delta[j] - eta * acc[j]
            if abs(d) < _FLUSH:
                d = 0.0
            delta[j] = d
            acc[j] = 0.0
            j += _U1
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        j = np.uint64(0)
        while j + _U4 <= pu:
            s0 += delta[j] * delta[j]
            s1 += delta[j + _U1] * delta[j + _U1]
            s2 += delta[j + _U2] * delta[j + _U2]
            s3 += delta[j + _U3] * delta[j + _U3]
            j += _U4
        while j < pu:
            s0 += delta[j] * delta[j]
            j += _U1
        sq = (s0 + s1) + (s2 + s3)
        countdown -= 1
        if sq == 0.0:
            if countdown == 0:
                rec[r + 1] = _NEG_INF
            return escape_step, t, _NEG_INF
        if (fast and countdown != 0 and t != steps and lo <= sq <= hi
                and (escape_step >= 0 or sq < near)):
            # Nothing is decided or recorded at this step: the in-order sum
            # would also lie inside the bounds and below the threshold.
            continue
        sq = sum_sq(delta, p)
        if sq > _SQ_HIGH or sq < _SQ_LOW:
            s = 1.0 / math.sqrt(sq)
            new_sq = 0.0
            for j in range(p):
                d = delta[j] * s
                delta[j] = d
                new_sq += d * d
            log_scale += math.log(sq) - math.log(new_sq)
            sq = new_sq
            thresh = escape_threshold(log_K + log_sq0 - log_scale)
            near = thresh * (1.0 - _SQ_MARGIN)
        if escape_step < 0 and sq >= thresh:
            escape_step = t
        if countdown == 0:
            r += 1
            rec[r] = log_scale + math.log(sq) - log_sq0
            countdown = record_every
        if stop_on_escape and escape_step >= 0:
            steps_run = t
            break
    return escape_step, steps_run, log_scale + math.log(sq) - log_sq0


def simulate_pair(k, G, Gc, H, cell_i, cell_f, pair_cell, steps, record_every, log_K,
                  stop_on_escape, states, perm_r, perm_f, idx, acc, delta, rec,
                  escape_step, steps_run, log_final):
    """Run (cell, trajectory) pair ``k`` and store its summary.

    The body shared by the CPU driver (:func:`simulate_many`) and the CUDA
    kernel (one thread per pair). Row ``k`` of ``states``, ``perm_r``,
    ``perm_f``, ``idx``, ``acc``, ``delta`` and ``rec`` holds the work arrays of
    :func:`run_trajectory` for pair ``k``; ``escape_step``, ``steps_run`` and
    ``log_final`` receive its return values.
    """
    c = pair_cell[k]
    fam = cell_i[c, 10]
    e, s, f = run_trajectory(G[fam], Gc[fam], H[fam], cell_i[c], cell_f[c], steps,
                             record_every, log_K, stop_on_escape, states[k],
                             perm_r[k], perm_f[k], idx[k], acc[k], delta[k], rec[k])
    escape_step[k] = e
    steps_run[k] = s
    log_final[k] = f


def simulate_many(G, Gc, H, cell_i, cell_f, pair_cell, order, steps, record_every,
                  log_K, stop_on_escape, states, perm_r, perm_f, idx, acc, delta,
                  rec, escape_step, steps_run, log_final):
    """CPU driver body: ``prange`` over (cell, trajectory) pairs.

    Compiled by ``simlab.dynamics.linearized`` as ``_simulate_many``. Pairs are
    visited in the order ``order`` (a fixed shuffle, so that the static split of
    ``prange`` over threads gets a mix of cheap and expensive cells); each pair
    touches only its own rows (:func:`simulate_pair`), so the result depends
    neither on the thread count nor on the order.
    """
    for i in prange(order.shape[0]):
        simulate_pair(order[i], G, Gc, H, cell_i, cell_f, pair_cell, steps,
                      record_every, log_K, stop_on_escape, states, perm_r, perm_f,
                      idx, acc, delta, rec, escape_step, steps_run, log_final)


def simulate_serial(G, Gc, H, cell_i, cell_f, pair_cell, order, steps, record_every,
                    log_K, stop_on_escape, states, perm_r, perm_f, idx, acc, delta,
                    rec, escape_step, steps_run, log_final):
    """:func:`simulate_many` on the calling thread (same signature and result).

    For small runs: waking Numba's worker threads costs milliseconds of CPU
    per call on a loaded machine, more than a small run's arithmetic.
    """
    for i in range(order.shape[0]):
        simulate_pair(order[i], G, Gc, H, cell_i, cell_f, pair_cell, steps,
                      record_every, log_K, stop_on_escape, states, perm_r, perm_f,
                      idx, acc, delta, rec, escape_step, steps_run, log_final)


#: The device-side functions, in dependency order.
STEP_FUNCTIONS = ("xoshiro", "rng_next", "to_uniform", "to_below", "rng_uniform",
                  "rng_below", "draw_batch",
                  "add_rank_one", "add_sparse", "add_dense", "draw_add_uniform",
                  "escape_threshold", "sum_sq", "run_trajectory",
                  "simulate_pair")


def family():
    """The step bodies of :data:`STEP_FUNCTIONS` (plain functions, in order)."""
    g = globals()
    return [g[name] for name in STEP_FUNCTIONS]
