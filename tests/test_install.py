"""``pip install .`` provides the four commands: dida-studio, dida-train, dida-bench, dida-synthcity.

Offline: a fresh virtual environment that sees this machine's packages (``--system-site-packages``,
so the dependencies are already there), installed with ``--no-index --no-build-isolation --no-deps``
from a copy of the source (the build writes next to it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("dida-studio", "dida-train", "dida-bench", "dida-synthcity")


def _source_copy(folder: Path) -> Path:
    """What the build reads: pyproject.toml, the README and the two packages."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, folder / name)
    for package in ("dida", "app"):
        shutil.copytree(
            REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return folder


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh virtual environment with this repository installed."""
    probe = "import setuptools.command.bdist_wheel, pip"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode:
        pytest.skip("an offline install needs pip and setuptools>=70.1 (bdist_wheel built in)")
    env = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)],
        check=True,
    )
    source = _source_copy(tmp_path_factory.mktemp("source"))
    flags = ["--no-index", "--no-build-isolation", "--no-deps", "--quiet"]
    done = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", *flags, str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env / "bin"


def test_the_four_commands_are_installed(venv_bin: Path) -> None:
    missing = [name for name in COMMANDS if not (venv_bin / name).is_file()]
    assert not missing, f"not installed: {missing}"


def test_each_command_answers_help_from_the_installed_package(
    venv_bin: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [str(venv_bin / "python"), "-c", "import app, dida; print(app.__file__, dida.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert str(venv_bin.parent) in where.stdout and str(REPO) not in where.stdout
    runs = {
        name: subprocess.Popen(
            [str(venv_bin / name), "--help"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in COMMANDS
    }
    for name, process in runs.items():
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0 and "usage:" in out, f"{name} --help:\n{out}"
