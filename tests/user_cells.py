"""A user's own sweep cells, written as a user would (used by test_sweep_user.py).

Not a test module: ``experiment = "user_cells:noisy_square"`` names it in a spec.
"""

import numpy as np

from simlab.sweep import cell


@cell(params={"x": float, "n": int}, metrics=("mean", "x2"), defaults={"n": 100})
def noisy_square(x, n, seed):
    """Mean of ``n`` standard normals drawn from the cell's seed, and ``x**2``;
    raises for ``x < 0`` (the failing cell of the tests)."""
    if x < 0:
        raise ValueError(f"x must be >= 0, got {x}")
    rng = np.random.default_rng(seed)
    return {"mean": float(rng.standard_normal(n).mean()), "x2": x * x}


class Quadratic:
    """A cell experiment written against the protocol (batched ``evaluate``)."""

    PARAMS = {"a": (float, None), "sign": (str, ("plus", "minus"))}
    DEFAULTS = {"a": None, "sign": "plus"}
    METRICS = ("value",)

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        return {"value": np.array([p["a"] ** 2 * (1 if p["sign"] == "plus" else -1)
                                   for p in params_list])}
