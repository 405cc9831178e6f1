"""Slow, obviously correct reference implementations.

The second-moment operator is computed by enumerating every possible minibatch
with its probability, so it checks the closed forms of THEORY sections 2-3
rather than restating them.
"""

import itertools

import numpy as np
import scipy.linalg


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
