"""Packaging (issue 8 section 6): the licence file matches ``pyproject.toml``, and
the built wheel installs into a fresh environment where ``simlab reproduce
--quick`` runs from outside the source tree."""

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from simlab import cli, experiments

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The three clauses and the disclaimer of the SPDX text of BSD-3-Clause
# (https://spdx.org/licenses/BSD-3-Clause.html), whitespace-normalized.
BSD3_CLAUSES = [
    "Redistributions of source code must retain the above copyright notice, this "
    "list of conditions and the following disclaimer.",
    "Redistributions in binary form must reproduce the above copyright notice, this "
    "list of conditions and the following disclaimer in the documentation and/or "
    "other materials provided with the distribution.",
    "Neither the name of the copyright holder nor the names of its contributors may "
    "be used to endorse or promote products derived from this software without "
    "specific prior written permission.",
    'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"',
]


def _words(text):
    return " ".join(text.split())


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    text = _words((ROOT / "LICENSE").read_text())
    assert text.startswith("BSD 3-Clause License Copyright (c)")
    for clause in BSD3_CLAUSES:
        assert _words(clause) in text, clause
    # BSD-3 has exactly three numbered conditions (BSD-2 has two, BSD-4 four)
    assert re.findall(r"(?:^| )(\d)\. ", text) == ["1", "2", "3"]


def _requirement_closure(requires):
    """Distributions (normalized name -> Distribution) of this environment that
    ``requires`` (Requires-Dist lines, extras off) needs, transitively."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = {}, list(requires)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by the wheel) is not installed here")
        seen[name] = dist
        todo.extend(dist.requires or [])
    return seen


def _borrow(dists, where):
    """Symlink the installed files of ``dists`` (top-level entries of their
    site-packages) into ``where``: the fresh environment sees exactly the declared
    dependencies and nothing else of this one (no simlab, no test tools)."""
    where.mkdir()
    for dist in dists.values():
        site = Path(dist.locate_file(""))
        for f in dist.files or []:
            top = Path(f).parts[0]
            if top == ".." or (where / top).exists():
                continue
            os.symlink(site / top, where / top)


@pytest.mark.slow
def test_wheel_installs_and_reproduces_outside_the_tree(tmp_path):
    """Build the wheel from a clean copy of the project files, install it into a
    new virtual environment, and run `simlab reproduce --quick` in an empty
    folder.

    What an install can break is checked directly: the wheel holds exactly the
    package's source files (every module and data file under ``simlab/``), and
    from the installed copy every experiment module imports (``experiments.
    available()``) and its figure is reproduced for one experiment,
    ``rmt-coherence``, which reads nothing but the package and compiles Numba
    kernels into the fresh install's cache. Every other figure's quick run is
    tested in the source tree (``tests/test_cli.py``), where the same files run;
    reproducing all ten here too took 4.8 min, almost all of it Numba
    compiling the same kernels again for the new install path.

    Offline: the wheel is installed with ``--no-index``; its dependencies come
    from this environment (only those the wheel declares, transitively, so a
    missing declaration fails here). Building needs ``setuptools>=77`` (the PEP 639
    licence field): taken from this environment if it has it
    (``--no-build-isolation``), else pip fetches it from its configured index
    (one try, 30 s timeout).
    """
    from packaging.version import Version

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "simlab", src / "simlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SIMLAB_DEBUG")}
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--retries", "0",
             "--timeout", "30", "-w", str(tmp_path / "dist"), str(src)]
    try:
        import setuptools

        if Version(setuptools.__version__) >= Version("77"):
            build.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(build, check=True, env=env, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("simlab-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        meta = meta.decode()
        lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(lic) == 1
        assert zf.read(lic[0]) == (ROOT / "LICENSE").read_bytes()
        assert "simlab/sweep/specs/hessian_test.toml" in names
        packaged = {n for n in names if n.startswith("simlab/")}
    source = {p.relative_to(src).as_posix() for p in (src / "simlab").rglob("*")
              if p.is_file()}
    assert packaged == source, (sorted(source - packaged), sorted(packaged - source))
    assert "License-Expression: BSD-3-Clause" in meta.splitlines()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines()
                if ln.startswith("Requires-Dist:")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=env).stdout.strip())
    _borrow(_requirement_closure(requires), tmp_path / "deps")
    (site / "simlab_test_deps.pth").write_text(f"{tmp_path / 'deps'}\n")
    # dependencies resolved (not skipped) against what the environment holds
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install",
                    "--no-index", str(wheel)],
                   check=True, env=env, capture_output=True, timeout=300)

    run = tmp_path / "elsewhere"
    run.mkdir()
    env.update(MPLBACKEND="Agg", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    where = subprocess.run([py, "-c", "import simlab; print(simlab.__file__)"],
                           cwd=run, check=True, capture_output=True, text=True,
                           env=env).stdout.strip()
    assert Path(where).is_relative_to(site), where
    imported = subprocess.run(
        [py, "-c", "from simlab import experiments; print(*experiments.available())"],
        cwd=run, check=True, capture_output=True, text=True, env=env).stdout.split()
    assert sorted(imported) == sorted(experiments.REGISTRY)
    name = "rmt-coherence"
    r = subprocess.run([venv / "bin" / "simlab", "reproduce", "--quick", name],
                       cwd=run, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = run / cli.QUICK_FIGURES
    for ext in ("nc", "png", "pdf"):
        assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    manifest = (out / "README.md").read_text()
    assert f"[{name}.png]" in manifest
    assert "unavailable" not in manifest
