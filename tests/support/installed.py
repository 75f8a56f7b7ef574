"""The paramedic that users get: a wheel built from this tree, installed in a fresh venv.

The e2e tier runs this ``paramedic``, never the editable install of the dev venv: an
editable install sees every module of the checkout, so a package missing from the wheel
(as ``agent/notify`` once was) passed every test while ``pip install .`` crashed.

``installed()`` builds once per test session (about 20 s: a wheel of the tree's tracked
and untracked, not ignored, files, copied outside the checkout so no ``build/`` or
``*.egg-info`` lands in it; then ``python -m venv`` and ``pip install`` of the wheel with
its dependencies, which pip's cache serves after the first time). ``PARAMEDIC`` is a
path-like handle that triggers the build on first use, so modules can keep a constant.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Folders of the checkout that are never part of a build (the dev venv, caches).
_NOT_SOURCE = {".git", ".venv", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}


@dataclass(frozen=True)
class Installed:
    """A fresh venv outside the checkout with paramedic's wheel (and its dependencies) in it."""

    wheel: Path
    venv: Path

    @property
    def paramedic(self) -> Path:
        return self.venv / "bin" / "paramedic"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return set(whl.namelist())


def source_files(repo: Path = REPO) -> list[str]:
    """The files a user's clone has: git's tracked and untracked-but-not-ignored ones."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line and (repo / line).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist, a copy)
        return [str(p.relative_to(repo)) for p in repo.rglob("*")
                if p.is_file() and not _NOT_SOURCE.intersection(p.relative_to(repo).parts)]


def build_wheel(out: Path, repo: Path = REPO) -> Path:
    """Build paramedic's wheel from a copy of the tree; return its path."""
    src = out / "src"
    for name in source_files(repo):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, src / name)
    dist = out / "dist"
    # "./src" with a slash: a bare "src" is taken for a package name on PyPI.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
          "-w", str(dist), str(src) + os.sep], "pip wheel")
    wheels = sorted(dist.glob("paramedic-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one paramedic wheel in {dist}, found {wheels}")
    return wheels[0]


def install(wheel: Path, venv: Path) -> Installed:
    """A fresh venv (no system site-packages) with the wheel installed the way a user does."""
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          str(wheel)], "pip install")
    return Installed(wheel=wheel, venv=venv)


@functools.cache
def installed() -> Installed:
    """Build and install once per test session, in a temporary folder outside the checkout."""
    root = Path(tempfile.mkdtemp(prefix="paramedic-installed-"))
    return install(build_wheel(root), root / "venv")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"})
    if proc.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        err = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if noise not in line)
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{err[-4000:]}")


class _LazyPath(os.PathLike[str]):
    """``os.fspath(PARAMEDIC)`` / ``str(PARAMEDIC)``: the installed console script, built on first use."""

    def __fspath__(self) -> str:
        return str(installed().paramedic)

    def __str__(self) -> str:
        return self.__fspath__()

    def __repr__(self) -> str:
        return "<paramedic of the wheel installed in a fresh venv>"


PARAMEDIC = _LazyPath()
