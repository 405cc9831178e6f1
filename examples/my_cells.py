"""A user's own sweep cell (see user_sweep.py): how far does the exact critical
learning rate of SGD sit below gradient descent's, for random rank-one families?"""

from simlab.curvature import random_rank_one, sharpness
from simlab.stability import critical_lr
from simlab.sweep import cell


@cell(params={"n": int, "p": int, "batch": int,
              "scheme": (str, ("bernoulli", "with", "without"))},
      metrics=("eta_ratio", "sharpness"), defaults={"scheme": "without"})
def sgd_vs_gd(n, p, batch, scheme, seed):
    """eta* / (2 / lambda_max) for one random family drawn from the cell's seed."""
    G = random_rank_one(n, p, seed=seed)
    lam = sharpness(G)
    eta = critical_lr(G, min(batch, n), scheme=scheme)
    return {"eta_ratio": float(eta * lam / 2.0), "sharpness": float(lam)}


if __name__ == "__main__":
    print(sgd_vs_gd(n=10, p=5, batch=2, scheme="without", seed=0))
