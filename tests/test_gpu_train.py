"""``gpu_train_many`` (CUDA kernels) vs the CPU ``train_many`` on the simulator.

The simulator must be switched on before numba is imported, so the comparison
runs in a subprocess (tests/scripts/cudasim_train_check.py) with
``NUMBA_ENABLE_CUDASIM=1``. The simulator executes the device functions as
Python with the same operation order as the compiled CPU kernels, so the
backends agree exactly except where ``z ** q`` is evaluated: Numba's compiled
float-to-integer power and libm's ``pow`` (used by the simulator) may differ in
the last bit for ReLU^q with ``q >= 3`` (checked: differences below 1e-20 there,
0.0 elsewhere). Threads per block is patched small (2) so the grid spans
several blocks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "cudasim_train_check.py"


def test_cuda_train_matches_cpu_on_simulator():
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, str(SCRIPT), "2"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["same_steps"] and res["diverged"] >= 1, res
    # ReLU^3 goes through pow (last-bit differences); every other case is exact
    assert res["worst"]["cnn_q3_sgd"] <= 1e-12, res
    assert res["worst_rel"]["cnn_q3_sgd"] <= 1e-12, res
    others = [k for k in res["worst"] if k != "cnn_q3_sgd"]
    assert all(res["worst"][k] == 0.0 for k in others), res


def test_gpu_train_without_device_is_a_clear_error():
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device (or the simulator) is available here")
    from simlab.data import signal_noise
    from simlab.dynamics.gpu_train import gpu_train_many
    from simlab.models import CNN

    data = signal_noise(4, 5, mu_norm=2.0, seed=0)
    with pytest.raises(RuntimeError, match="CUDA"):
        gpu_train_many(CNN(5, 2), [data], eta=0.1, steps=3)


def test_gpu_train_refuses_weight_method():
    from simlab.data import signal_noise
    from simlab.dynamics.gpu_train import gpu_train_many
    from simlab.models import CNN

    data = signal_noise(4, 5, mu_norm=2.0, seed=0)
    with pytest.raises(ValueError, match="Gram"):
        gpu_train_many(CNN(5, 2), [data], eta=0.1, steps=3, method="weight")
