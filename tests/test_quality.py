"""Repository rules that CI enforces: lint, types, packaging and the README contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def test_ruff_is_clean() -> None:
    """ruff check and ruff format --check report nothing."""
    ruff = _tool("ruff")
    check = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_is_clean() -> None:
    """mypy (with the zope plugin) reports no errors in src/."""
    mypy = _tool("mypy")
    result = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_init_in_twistd_plugins() -> None:
    """twistd_plugins/ must never hold an __init__.py (it would overwrite Twisted's)."""
    assert not (ROOT / "twistd_plugins" / "__init__.py").exists()


def test_codecs_and_media_never_import_twisted() -> None:
    """The sans-I/O codecs and the wire-independent media package import no Twisted."""
    package = ROOT / "src" / "streamserver"
    for path in [*(package / "codec").glob("*.py"), *(package / "media").glob("*.py")]:
        assert "import twisted" not in path.read_text(), path.name
        assert "from twisted" not in path.read_text(), path.name


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    """The README's first two commands run the server and the tests; .ci/run uses the latter."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh")[1:3]]
    assert "twistd -n streamserver" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1] in ci


def _tracked_files() -> list[Path]:
    """Files git tracks (or would track: untracked but not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [ROOT / line for line in listing.stdout.splitlines() if line]


def test_no_machine_paths_in_the_repository() -> None:
    """No absolute home or work-tree path is committed."""
    home = os.path.expanduser("~")
    needles = [str(ROOT)]
    if home not in ("/", "/root"):
        needles.append(home + "/")
    for path in _tracked_files():
        if not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        for needle in needles:
            assert needle not in text, f"{path} contains {needle}"
