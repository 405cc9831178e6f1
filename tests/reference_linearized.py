"""Slow, obviously correct NumPy reference for ``simlab.simulate.linearized``.

Each step forms the dense minibatch update matrix
``M_hat = (1-alpha)/B_r sum_{retain batch} H_i - alpha/B_f sum_{forget batch} H_j``
and applies ``delta <- delta - eta M_hat delta`` with NumPy, without any
rescaling (use it on inputs whose norm stays in floating-point range). When
``U = range(sum of active H_i)`` is a proper subspace, ``delta`` is projected
back onto ``U`` after every step: exactly a no-op, it keeps rounding residue in
the directions that never move from building up. The only
things shared with the kernel are the uncompiled random-number and
batch-drawing bodies of ``simlab.dynamics._step`` (uncompiled), so that the same seed
gives the same batches and the comparison checks the dynamics.
"""

import numpy as np

from simlab.curvature import range_basis, to_dense
from simlab.dynamics import _step


def ref_initial_directions(active, trajectories, seed):
    """Gaussian ``default_rng(seed)`` vectors projected onto ``U``, unit norm."""
    p = active.shape[1]
    Z = np.random.default_rng(seed).standard_normal((trajectories, p))
    U = range_basis(active)
    D = Z @ U @ U.T
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def ref_rng_states(seed, trajectories):
    """Per-trajectory xoshiro256** states from the first child of the seed."""
    child = np.random.SeedSequence(seed).spawn(1)[0]
    return child.generate_state(4 * trajectories, dtype=np.uint64).reshape(-1, 4)


def ref_linearized(retain, eta, batch, *, scheme="bernoulli", forget=None,
                   forget_batch=None, alpha=0.0, steps=10, trajectories=2,
                   escape_factor=1e3, seed=0, record_every=1,
                   stop_on_escape=False):
    """Return a dict with the fields of ``LinearizedResult`` (no ``ms_growth``)."""
    retain = np.asarray(retain, dtype=float)
    rank_one = retain.ndim == 2
    Hr = to_dense(retain)
    Hf = None if forget is None else to_dense(np.asarray(forget, dtype=float))
    forget_batch = batch if forget_batch is None else forget_batch
    use_r = alpha < 1.0
    use_f = forget is not None and alpha > 0.0
    raw = [retain] + ([] if forget is None else [np.asarray(forget, dtype=float)])
    active = np.concatenate([h for h, use in zip(raw, (use_r, use_f)) if use])
    delta0 = ref_initial_directions(active, trajectories, seed)
    U = range_basis(active)
    P = U @ U.T if U.shape[1] < U.shape[0] else None
    states = ref_rng_states(seed, trajectories)
    code = _step.SCHEME_CODES[scheme]
    n_r = Hr.shape[0]
    n_f = 0 if Hf is None else Hf.shape[0]
    p = Hr.shape[1]
    n_rec = steps // record_every + 1

    out = {"escape_step": np.full(trajectories, -1),
           "lyapunov": np.empty(trajectories),
           "log_sq_norm": np.full((trajectories, n_rec), np.nan),
           "direction": np.zeros((trajectories, p))}
    for k in range(trajectories):
        state = states[k].copy()
        perm_r = np.arange(n_r)
        perm_f = np.arange(max(n_f, 1))
        idx = np.empty(max(n_r, n_f), dtype=np.int64)
        delta = delta0[k].copy()
        sq0 = delta @ delta
        out["log_sq_norm"][k, 0] = 0.0
        t_run = steps
        for t in range(1, steps + 1):
            M_hat = np.zeros((p, p))
            with np.errstate(over="ignore"):   # uint64 wrap-around is intended
                if use_r:
                    m = _step.draw_batch(state, code, n_r, batch, batch / n_r,
                                         perm_r, idx)
                    M_hat += (1 - alpha) / batch * Hr[idx[:m]].sum(axis=0)
                if use_f:
                    m = _step.draw_batch(state, code, n_f, forget_batch,
                                         forget_batch / n_f, perm_f, idx)
                    M_hat -= alpha / forget_batch * Hf[idx[:m]].sum(axis=0)
            delta = delta - eta * M_hat @ delta
            if P is not None:
                delta = P @ delta
            sq = delta @ delta
            if sq == 0.0:
                if t % record_every == 0:
                    out["log_sq_norm"][k, t // record_every] = -np.inf
                t_run = t
                break
            if out["escape_step"][k] < 0 and sq >= escape_factor * sq0:
                out["escape_step"][k] = t
            if t % record_every == 0:
                out["log_sq_norm"][k, t // record_every] = np.log(sq / sq0)
            if stop_on_escape and out["escape_step"][k] >= 0:
                t_run = t
                break
        sq = delta @ delta
        out["lyapunov"][k] = (0.5 * np.log(sq / sq0) / t_run if sq > 0
                              else -np.inf)
        if sq > 0:
            out["direction"][k] = delta / np.sqrt(sq)
    out["escaped"] = out["escape_step"] >= 0
    out["rank_one"] = rank_one
    return out
