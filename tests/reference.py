"""Slow, obviously correct reference implementations: the one place for them.

1. Second-moment operator (THEORY sections 2-3): every possible minibatch is
   enumerated with its probability, so the closed forms are checked, not
   restated. :func:`second_moment` / :func:`radius` work on ``U``;
   :func:`operator_matrix` / :func:`growth_curve` on the *full* parameter space.
2. Coherence matrix with explicit matrix square roots (section 5).
3. Linearized Monte Carlo (:func:`linearized`): dense minibatch matrices in
   NumPy, for ``simlab.simulate.linearized``.
4. Weight-space (S)GD of the CNN and the linear model (:func:`gd_run`): plain
   NumPy, no Gram trick, no Numba, for ``train`` and ``unlearn``.
"""

import itertools

import numpy as np
import scipy.linalg

from simlab.curvature import range_basis, to_dense
from simlab.dynamics import _step
from simlab.models import Linear

# ------------------------------------------------------------------------
# 1. second-moment operator by enumeration
# ------------------------------------------------------------------------


def dense(hessians):
    H = np.asarray(hessians, dtype=float)
    return np.einsum("ij,ik->ijk", H, H) if H.ndim == 2 else H


def batches(n, B, scheme):
    """Yield (probability, multiplicity vector) for every minibatch outcome."""
    if scheme == "bernoulli":
        q = B / n
        for z in itertools.product([0, 1], repeat=n):
            z = np.array(z)
            yield q ** z.sum() * (1 - q) ** (n - z.sum()), z.astype(float)
    elif scheme == "without":
        subsets = list(itertools.combinations(range(n), B))
        for s in subsets:
            z = np.zeros(n)
            z[list(s)] = 1
            yield 1.0 / len(subsets), z
    elif scheme == "with":
        for seq in itertools.product(range(n), repeat=B):
            z = np.bincount(seq, minlength=n).astype(float)
            yield n ** -B, z
    else:
        raise ValueError(scheme)


def second_moment(retain, eta, B, scheme, X, forget=None, B_f=None, alpha=0.0):
    """E[(I - eta M_hat) X (I - eta M_hat)] by exhaustive enumeration."""
    Hr = dense(retain)
    p = Hr.shape[1]
    sets = [(Hr, B, 1.0 - alpha)]
    if forget is not None:
        sets.append((dense(forget), B_f, -alpha))
    outcomes = [list(batches(h.shape[0], b, scheme)) for h, b, _ in sets]
    out = np.zeros((p, p))
    for combo in itertools.product(*outcomes):
        prob = 1.0
        Mhat = np.zeros((p, p))
        for (h, b, w), (pr, z) in zip(sets, combo):
            prob *= pr
            Mhat += w / b * np.tensordot(z, h, axes=1)
        A = np.eye(p) - eta * Mhat
        out += prob * A @ X @ A
    return out


def radius(retain, eta, B, scheme, forget=None, B_f=None, alpha=0.0):
    """rho(T) on U = range of the active Hessians, by enumeration + dense eig."""
    Hs = [dense(retain)] if alpha < 1 else []
    if forget is not None and alpha > 0:
        Hs.append(dense(forget))
    Q = scipy.linalg.orth(np.concatenate([h.reshape(-1, h.shape[-1]) for h in Hs]).T)
    r = Q.shape[1]
    cols = []
    for k in range(r):
        for j in range(r):
            E = np.zeros((r, r))
            E[k, j] = 1.0
            Y = Q.T @ second_moment(retain, eta, B, scheme, Q @ E @ Q.T,
                                    forget, B_f, alpha) @ Q
            cols.append(Y.ravel())
    return float(np.max(np.abs(np.linalg.eigvals(np.array(cols).T))))


def operator_matrix(retain, eta, B, scheme, forget=None, B_f=None, alpha=0.0):
    """``T = E[A (x) A]``, ``A = I - eta M_hat``, as a dense ``p^2 x p^2`` matrix on
    the row-major ``vec`` of ``p x p`` matrices (``vec(A X A) = (A (x) A) vec(X)``
    for symmetric ``A``), over the full space (no restriction to ``U``), by
    enumerating every minibatch outcome."""
    Hr = dense(retain)
    p = Hr.shape[1]
    sets = [(Hr, B, 1.0 - alpha)]
    if forget is not None:
        sets.append((dense(forget), B_f, -alpha))
    outcomes = [list(batches(h.shape[0], b, scheme)) for h, b, _ in sets]
    out = np.zeros((p * p, p * p))
    for combo in itertools.product(*outcomes):
        prob = 1.0
        Mhat = np.zeros((p, p))
        for (h, b, w), (pr, z) in zip(sets, combo, strict=True):
            prob *= pr
            Mhat += w / b * np.tensordot(z, h, axes=1)
        A = np.eye(p) - eta * Mhat
        out += prob * np.kron(A, A)
    return out


def growth_curve(Tmat, S0, steps):
    """``tr Sigma_t / tr Sigma_0`` for ``t = 0..steps`` by iterating ``vec(Sigma)``
    with the dense matrix ``Tmat`` of :func:`operator_matrix`."""
    p = S0.shape[0]
    v = S0.ravel() / np.trace(S0)
    out = [1.0]
    for _ in range(steps):
        v = Tmat @ v
        out.append(np.trace(v.reshape(p, p)))
    return np.array(out)


# ------------------------------------------------------------------------
# 2. coherence
# ------------------------------------------------------------------------


def coherence_matrix(hessians):
    """S_ij = ||H_i^{1/2} H_j^{1/2}||_F with explicit matrix square roots."""
    H = dense(hessians)
    roots = []
    for h in H:
        lam, V = np.linalg.eigh(h)
        roots.append((V * np.sqrt(np.clip(lam, 0, None))) @ V.T)
    n = len(H)
    return np.array([[np.linalg.norm(roots[i] @ roots[j]) for j in range(n)]
                     for i in range(n)])


# ------------------------------------------------------------------------
# 3. linearized dynamics (Monte Carlo)
# ------------------------------------------------------------------------
# Slow, obviously correct NumPy reference for ``simlab.simulate.linearized``.
#
# Each step forms the dense minibatch update matrix
# ``M_hat = (1-alpha)/B_r sum_{retain batch} H_i - alpha/B_f sum_{forget batch} H_j``
# and applies ``delta <- delta - eta M_hat delta`` with NumPy, without any
# rescaling (use it on inputs whose norm stays in floating-point range). When
# ``U = range(sum of active H_i)`` is a proper subspace, ``delta`` is projected
# back onto ``U`` after every step: exactly a no-op, it keeps rounding residue in
# the directions that never move from building up. Shared with the package: the
# uncompiled random-number and batch-drawing bodies of ``simlab.dynamics._step``
# (so that the same seed gives the same batches and the comparison checks the
# dynamics), ``range_basis`` (so that the start directions are the kernel's) and
# ``to_dense``.


def initial_directions(active, trajectories, seed):
    """Gaussian ``default_rng(seed)`` vectors projected onto ``U``, unit norm."""
    p = active.shape[1]
    Z = np.random.default_rng(seed).standard_normal((trajectories, p))
    U = range_basis(active)
    D = Z @ U @ U.T
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def rng_states(seed, trajectories):
    """Per-trajectory xoshiro256** states from the first child of the seed."""
    child = np.random.SeedSequence(seed).spawn(1)[0]
    return child.generate_state(4 * trajectories, dtype=np.uint64).reshape(-1, 4)


def linearized(retain, eta, batch, *, scheme="without", forget=None,
                   forget_batch=None, alpha=0.0, steps=10, trajectories=2,
                   escape_factor=1e3, seed=0, record_every=1,
                   stop_on_escape=False):
    """Return a dict with the fields of ``LinearizedResult`` (no ``ms_growth``)."""
    retain = np.asarray(retain, dtype=float)
    rank_one = retain.ndim == 2
    Hr = to_dense(retain)
    Hf = None if forget is None else to_dense(np.asarray(forget, dtype=float))
    if forget_batch is None and forget is not None:   # same sampling fraction
        n_f0, n_r0 = len(forget), len(retain)
        forget_batch = max(1, min(n_f0, round(batch * n_f0 / n_r0)))
    use_r = alpha < 1.0
    use_f = forget is not None and alpha > 0.0
    raw = [retain] + ([] if forget is None else [np.asarray(forget, dtype=float)])
    active = np.concatenate([h for h, use in zip(raw, (use_r, use_f)) if use])
    delta0 = initial_directions(active, trajectories, seed)
    U = range_basis(active)
    P = U @ U.T if U.shape[1] < U.shape[0] else None
    states = rng_states(seed, trajectories)
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


# ------------------------------------------------------------------------
# 4. weight-space (S)GD of the CNN and the linear model
# ------------------------------------------------------------------------


def model_output(model, W, X):
    """``f(W; x_i)`` for every sample, straight from the definition."""
    if isinstance(model, Linear):
        return X.sum(axis=1) @ W
    Z = np.einsum("jrd,ipd->ijrp", W, X)
    F = (np.maximum(Z, 0.0) ** model.q).sum(axis=(2, 3)) / model.m
    return F[:, 0] - F[:, 1]


def model_output_grads(model, W, X):
    """``(n, *W.shape)`` gradients of ``f`` with respect to ``W``."""
    if isinstance(model, Linear):
        return X.sum(axis=1)
    Z = np.einsum("jrd,ipd->ijrp", W, X)
    dA = model.q * np.where(Z > 0, np.maximum(Z, 0.0) ** (model.q - 1), 0.0)
    return np.einsum("j,ijrp,ipd->ijrd", np.array([1.0, -1.0]), dA, X) / model.m


def loss_derivative(f, y, loss):
    """``d loss / d f`` for the ``squared`` and ``logistic`` losses."""
    if loss == "squared":
        return f - y
    return -y / (1.0 + np.exp(y * f))


def gd_run(model, W0, X, y, eta, wts, loss):
    """``W <- W - eta sum_i w_ti grad l_i(W)`` for each row ``w_t`` of ``wts``
    (``1/n`` everywhere is GD; minibatch weights give SGD; negative weights on a
    forget set give descent-ascent unlearning)."""
    W = W0.copy()
    for w in wts:
        g = np.einsum("i,i...->...",
                      w * loss_derivative(model_output(model, W, X), y, loss),
                      model_output_grads(model, W, X))
        W = W - eta * g
    return W


# ------------------------------------------------------------------------
# 5. tangent dynamics along a descent-ascent reference run (logistic loss)
# ------------------------------------------------------------------------


def loss_second_derivative(f, y, loss):
    """``d^2 loss / d f^2`` for the ``squared`` and ``logistic`` losses."""
    if loss == "squared":
        return np.ones_like(f)
    s = 0.5 * (1.0 + np.tanh(0.5 * y * f))         # sigma(y f), no overflow
    return s * (1.0 - s)


def drift_tangent(model, W0, X, y, eta, wts, delta0, loss):
    """``||delta_t||`` for ``t = 0..T`` of the tangent along the reference run.

    Weight space, dense: the reference takes the real steps of :func:`gd_run`;
    the tangent ``delta <- delta - eta sum_i w_ti l''_i(W_t) <g_i, delta> g_i``
    with ``g_i = grad f_i(W_t)`` (the per-sample Hessian of the ReLU CNN and the
    linear model off the kinks), for ``simlab.predict``'s drift-aware path.
    """
    W, d = W0.copy(), delta0.copy()
    norms = [np.linalg.norm(d)]
    for w in wts:
        f = model_output(model, W, X)
        g = model_output_grads(model, W, X)
        proj = g.reshape(g.shape[0], -1) @ d.ravel()
        d = d - eta * np.einsum("i,i...->...",
                                w * loss_second_derivative(f, y, loss) * proj, g)
        W = W - eta * np.einsum("i,i...->...", w * loss_derivative(f, y, loss), g)
        norms.append(np.linalg.norm(d))
    return np.array(norms)


# ------------------------------------------------------------------------
# rank-k factors (simlab.curvature.Factors)
# ------------------------------------------------------------------------


def dense_from_factors(G):
    """``H_i = sum_j g_ij g_ij^T`` by explicit outer products, ``G`` ``(n, k, p)``:
    the dense family every rank-k route of the package must reproduce."""
    G = np.asarray(G, dtype=float)
    n, k, p = G.shape
    H = np.zeros((n, p, p))
    for i in range(n):
        for j in range(k):
            H[i] += np.outer(G[i, j], G[i, j])
    return H


# ------------------------------------------------------------------------
# per-sample curvature scores (simlab.memorization.curvature_scores)
# ------------------------------------------------------------------------


def model_output_hessian_blocks(model, W, x):
    """``grad^2_W f(W; x)`` of one sample as a dense ``(p, p)`` matrix, from the
    definition ``f = (1/m) sum_{j,r} s_j sum_p max(0, <w_jr, x_p>)^q``."""
    p = W.size
    H = np.zeros((p, p))
    if isinstance(model, Linear) or model.q == 1:
        return H
    q, m, d = model.q, model.m, model.d
    for j, s in enumerate((1.0, -1.0)):
        for r in range(m):
            row = j * m + r
            sl = slice(row * d, (row + 1) * d)
            for xp in x:
                z = W[j, r] @ xp
                if z > 0:
                    H[sl, sl] += s / m * q * (q - 1) * z ** (q - 2) * np.outer(xp, xp)
    return H


def per_sample_loss_hessians(model, W, X, y, loss):
    """Exact per-sample loss Hessians ``l'' g g^T + l' grad^2 f`` ``(n, p, p)``."""
    f = model_output(model, W, X)
    g = model_output_grads(model, W, X).reshape(len(y), -1)
    d1 = loss_derivative(f, y, loss)
    d2 = loss_second_derivative(f, y, loss)
    return np.array([d2[i] * np.outer(g[i], g[i])
                     + d1[i] * model_output_hessian_blocks(model, W, X[i])
                     for i in range(len(y))])


def curvature_scores(model, W, X, y, loss, damping):
    """Dense reference of ``curvature_scores``: ``(trace, rayleigh,
    self_influence)`` from explicit per-sample Hessians, the top eigenvector of
    their mean, and a dense solve with the Gauss-Newton matrix."""
    H = per_sample_loss_hessians(model, W, X, y, loss)
    n, p, _ = H.shape
    trace = np.einsum("ijj->i", H)
    v = np.linalg.eigh(H.mean(axis=0))[1][:, -1]
    rayleigh = np.einsum("j,ijk,k->i", v, H, v)
    f = model_output(model, W, X)
    h = (np.sqrt(loss_second_derivative(f, y, loss))[:, None]
         * model_output_grads(model, W, X).reshape(n, -1))
    Hgn = h.T @ h / n
    self_inf = np.array([h[i] @ np.linalg.solve(Hgn + damping * np.eye(p), h[i])
                         for i in range(n)])
    return trace, rayleigh, self_inf
