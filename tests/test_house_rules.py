"""House rules that a grep can enforce (STYLE sections 4 and 8)."""

import re
import subprocess
import sys
from pathlib import Path

import simlab

PKG = Path(simlab.__file__).parent


def _code_lines():
    for path in PKG.rglob("*.py"):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if code.strip() and not code.lstrip().startswith(("'", '"', "``")):
                yield path, no, code


def test_numba_options_only_in_jit_module():
    bad = [f"{p.relative_to(PKG)}:{n}" for p, n, code in _code_lines()
           if p.name != "_jit.py"
           and re.search(r"\bnjit\b|numba\.jit\(|fastmath\s*=|parallel\s*=", code)]
    assert not bad, f"numba options outside simlab/_jit.py: {bad}"


def test_import_loads_no_dask_or_cuda():
    code = ("import sys, simlab, simlab.simulate, simlab.sweep;"
            "bad = [m for m in ('dask', 'distributed', 'numba.cuda')"
            " if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
