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


#: Every way of compiling with Numba or setting one of its options.
_NUMBA_FORMS = re.compile(
    r"\bnjit\b|\bnumba\.(jit|njit|cuda|vectorize|guvectorize|stencil|cfunc|"
    r"generated_jit|jit_module)\b|\bcuda\.jit\b|\bfrom numba\b|\bimport numba\b|"
    r"\b(fastmath|parallel|inline|cache|nogil|boundscheck|error_model|device|"
    r"nopython|forceobj|looplift)\s*=|@(jit|pjit)\s*\(")


def test_numba_options_only_in_jit_module():
    """Numba is imported, and its options are set, only in ``simlab/_jit.py``.

    Version reporting (``cli info``, provenance) may read ``numba.__version__``
    and ``numba.config`` through a function-local import.
    """
    allowed_version_reads = {"cli.py", "_provenance.py"}
    bad = []
    for p, n, code in _code_lines():
        if p.name == "_jit.py":
            continue
        if (p.name in allowed_version_reads
                and re.fullmatch(r"\s*(import numba|from numba import cuda)\s*", code)):
            continue
        if _NUMBA_FORMS.search(code):
            bad.append(f"{p.relative_to(PKG)}:{n}: {code.strip()}")
    assert not bad, f"numba compile paths/options outside simlab/_jit.py: {bad}"


def test_house_rule_pattern_catches_every_form():
    """The pattern above is not vacuous: each decorator form is caught."""
    forms = ["@numba.njit(cache=True)", "@njit", "numba.jit(fn)",
             "cuda.jit(device=True)(f)", "@jit(inline='always')", "@pjit()",
             "from numba import prange", "import numba", "jit(fn, fastmath=True)",
             "numba.vectorize(['f8(f8)'])", "@numba.cuda.jit",
             "numba.njit(parallel=True)(f)"]
    assert all(_NUMBA_FORMS.search(f) for f in forms)
    assert not _NUMBA_FORMS.search("@jit")       # plain simlab decorator is fine
    assert not _NUMBA_FORMS.search("out = jit(fn)")


def test_backend_choice_in_one_function():
    """Only simlab.dynamics.backends maps backend names to drivers: outside
    ``simlab.dynamics`` no module imports a ``gpu_*`` driver (``simlab.simulate``
    re-exports them as the public face)."""
    bad = [f"{p.relative_to(PKG)}:{n}" for p, n, code in _code_lines()
           if p.name != "simulate.py" and p.parent.name != "dynamics"
           and re.search(r"\bgpu_(linearized|train)", code)
           and re.search(r"\bimport\b", code)]
    assert not bad, f"backend chosen outside dynamics/backends.py: {bad}"


def test_no_private_names_across_packages():
    """No module imports another package's ``_private`` names (a private
    module of simlab itself, such as ``simlab._validation``, is shared)."""
    pat = re.compile(r"from \.\.+([\w.]*) import (.*)")
    bad = []
    for p, n, code in _code_lines():
        m = pat.search(code)
        if not m:
            continue
        names = [x.strip(" ()") for x in m.group(2).split(",")]
        target = m.group(1)
        if target.startswith("_") or target == "":
            continue   # top-level private modules (_jit, _validation, ...)
        if any(x.startswith("_") and not x.startswith("__") for x in names):
            bad.append(f"{p.relative_to(PKG)}:{n}: {code.strip()}")
    assert not bad, f"private names imported across packages: {bad}"


def test_import_loads_no_dask_or_cuda():
    code = ("import sys, simlab, simlab.simulate, simlab.sweep;"
            "bad = [m for m in ('dask', 'distributed', 'numba.cuda')"
            " if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_every_figure_names_the_verdict_it_tests():
    """Every catalogue entry says which question it answers (mean-square
    stability, typical behaviour, finite-horizon escape, or no dynamics), and
    the manifest carries it."""
    from simlab import experiments

    kinds = ("mean-square", "typical", "finite-horizon", "no dynamics",
             "no stability verdict")
    manifest = (Path(__file__).parents[1] / "figures" / "README.md").read_text()
    for name in experiments.REGISTRY:
        tested = experiments.get(name).TESTED
        assert any(k in tested for k in kinds), (name, tested)
        assert tested in manifest, name
