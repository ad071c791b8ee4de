"""nox sessions: `nox -s tests` runs the suite in a fresh virtualenv, `nox -s lint` runs ruff."""

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
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "demoe", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "demoe", "tests", "noxfile.py")
