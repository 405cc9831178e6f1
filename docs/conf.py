"""Sphinx configuration: builds offline (no intersphinx, no remote assets at
build time), with warnings as errors in CI (``-W``)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

from simlab import __version__  # noqa: E402

project = "simlab"
author = "the simlab developers"
copyright = "2026, the simlab developers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",      # numpydoc-style docstrings
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
# numpydoc "Parameters" entries such as ``x, y : float`` are not cross-referenced
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
# numpydoc type specs ("ndarray, shape (n, p)") make napoleon emit cross-references
# for words such as "shape" and "n", which match several attributes; those
# ambiguous-target warnings (and only those) are not errors
suppress_warnings = ["ref.python"]


# ---------------------------------------------------------------- API pages
# One page per public module, generated at every build from the package itself,
# so that a new module is documented without anyone remembering to list it.
# Skipped: private modules, the CLI entry points and the Numba/CUDA kernel
# modules (compiled step bodies, documented through the functions that call them).
SKIP = {"simlab.__main__", "simlab.cli", "simlab.models.kernels",
        "simlab.models.bodies", "simlab.dynamics.gpu_linearized",
        "simlab.dynamics.gpu_train"}


def public_modules():
    """Dotted names of simlab's public modules, sorted."""
    out = []
    for path in sorted((ROOT / "simlab").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        name = ".".join(parts)
        if name not in SKIP:
            out.append(name)
    return out


def write_api_pages(app=None):
    api = Path(__file__).resolve().parent / "api"
    api.mkdir(exist_ok=True)
    mods = public_modules()
    for name in mods:
        text = f"{name}\n{'=' * len(name)}\n\n.. automodule:: {name}\n"
        if (ROOT / name.replace(".", "/") / "__init__.py").exists():
            # a package re-exports; its members are documented where defined
            text += "   :no-members:\n"
        page = api / f"{name}.rst"
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
    for stale in api.glob("*.rst"):
        if stale.stem not in mods:
            stale.unlink()
    index = ("API reference\n=============\n\nOne page per module, from its "
             "docstrings (numpydoc style).\n\n.. toctree::\n   :maxdepth: 1\n\n"
             + "".join(f"   api/{m}\n" for m in mods))
    target = Path(__file__).resolve().parent / "api.rst"
    if not target.exists() or target.read_text() != index:
        target.write_text(index)


write_api_pages()
