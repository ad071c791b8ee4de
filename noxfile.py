"""nox sessions: `nox -s tests` runs the suite in a fresh virtualenv, `nox -s wheel` installs the built
wheel (not the checkout) and runs the default evaluation from an empty folder, `nox -s lint` runs ruff."""

import shutil
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install(*TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session(python="3.11")
def fast(session: nox.Session) -> None:
    """Unit tests only, without the slow end-to-end ones."""
    session.install(*TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", "-m", "not slow", *session.posargs)


@nox.session(python="3.11")
def wheel(session: nox.Session) -> None:
    """Build the sdist and the wheel from it, install the wheel non-editable, run from an empty folder."""
    session.install(*TORCH, "build", "hatchling")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--no-isolation", "--outdir", str(dist), ".")
    (built,) = dist.glob("*.whl")
    session.install(str(built))
    with tempfile.TemporaryDirectory() as empty:
        session.chdir(empty)
        session.run("demoe-eval", "zoo", "list")
        session.run("demoe-eval", "run", "--limit", "5", "--metrics", "psnr,ssimc", "--no-tracking")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "demoe", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "demoe", "tests", "noxfile.py")
