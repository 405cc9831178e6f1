"""A user-defined sweep: the cell in my_cells.py over (batch, scheme), 3 seeds.

Run from this folder (so that ``my_cells`` is importable)::

    python user_sweep.py                 # or, equivalently, the CLI:
    simlab sweep user_sweep.toml --out user_sweep.zarr

Kill it at any moment and run it again: finished cells are kept. Edit
my_cells.py and the store refuses to resume (its source hash changed) until
``--restart``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SPEC = """\
experiment = "my_cells:sgd_vs_gd"
seed = 0
replicates = 3
[fixed]
n = 12
p = 6
[axes]
batch = { values = [1, 2, 4, 12] }
scheme = { values = ["bernoulli", "with", "without"] }
"""


def main(out):
    from simlab.sweep import run_sweep

    ds = run_sweep(SPEC, out, quiet=True).load()
    ratio = ds["eta_ratio"].mean("replicate")
    print(ratio.to_pandas() if hasattr(ratio, "to_pandas") else ratio)
    print(f"module sha256 {ds.attrs['experiment_source_sha256'][:12]}")
    return ds


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE / "user_sweep.zarr")
