"""CUDA kernels vs CPU kernels on the CUDA simulator (no GPU needed).

The simulator must be switched on before numba is imported, so the comparison
runs in a subprocess (tests/scripts/cudasim_check.py) with
``NUMBA_ENABLE_CUDASIM=1``. The simulator executes the device functions as
Python, in float64 with the same operation order as the compiled CPU kernel, so
the backends must agree exactly (checked: differences are 0.0). Threads per
block is patched small (3) so the grid spans several blocks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "cudasim_check.py"


def test_cuda_kernels_match_cpu_on_simulator(tmp_path):
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, str(SCRIPT), "3", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["same_escape"] and res["escaped_any"]
    assert all(v == 0.0 for v in res["worst"].values()), res
    assert res["sweep_equal"]


def test_gpu_without_device_is_a_clear_error():
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device (or the simulator) is available here")
    from simlab.curvature import coherence_dial
    from simlab.dynamics.gpu_linearized import gpu_linearized

    with pytest.raises(RuntimeError, match="CUDA"):
        gpu_linearized(coherence_dial(4, 2), 0.5, 2, steps=5, trajectories=2)
