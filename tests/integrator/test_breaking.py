"""`make lint`'s breaking-change check (protos/breaking.py) on a throwaway copy of the repository's protos:
a removed field fails against the previous commit of main, an added one passes, a `Breaking-Change:` trailer
lets an intended break through, and a first commit or a shallow clone do not stop CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrator.conftest import tool
from tests.support import repo_root

DIRECTORY = Path("protos/parcours/directory/v1/directory.proto")
FIELD = "  string page_token = 2 [(buf.validate.field).string.max_len = 512];\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@parcours.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)


def check(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo_root() / "protos" / "breaking.py"), "--repo", str(repo)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    tool("build/node/node_modules/.bin/buf")
    root = tmp_path / "parcours"
    shutil.copytree(
        repo_root() / "protos", root / "protos", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    shutil.copy(repo_root() / "buf.yaml", root)
    git(root, "init", "--quiet", "--initial-branch=main")
    commit(root, "The API")
    return root


def edit(repo: Path, old: str, new: str) -> None:
    path = repo / DIRECTORY
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_first_commit_has_nothing_to_break(repo: Path) -> None:
    ran = check(repo)
    assert ran.returncode == 0 and "skipped, this is the repository's first commit" in ran.stdout


def test_a_removed_field_fails_and_an_added_one_passes(repo: Path) -> None:
    edit(repo, FIELD, "  reserved 2;\n")
    commit(repo, "Drop a field")
    ran = check(repo)
    assert ran.returncode == 1
    assert 'Previously present field "2" with name "page_token" on message "ListRegionsRequest"' in ran.stdout

    git(repo, "reset", "--quiet", "--hard", "HEAD^")
    edit(repo, FIELD, FIELD + "  // A filter added later.\n  string display_name = 9;\n")
    commit(repo, "Add a field")
    ran = check(repo)
    assert ran.returncode == 0 and "no breaking change against" in ran.stdout


def test_a_branch_is_checked_from_where_it_left_main(repo: Path) -> None:
    git(repo, "switch", "--quiet", "-c", "feature")
    edit(repo, FIELD, "  reserved 2;\n")
    commit(repo, "Drop a field")
    edit(repo, "// Lists the 18 ARS regions.", "// Lists the ARS regions.")
    commit(repo, "A comment")  # the break is one commit back: still found
    ran = check(repo)
    assert ran.returncode == 1 and "where this branch left main" in ran.stdout


def test_an_intended_break_passes_with_its_reason(repo: Path) -> None:
    edit(repo, FIELD, "  reserved 2;\n")
    commit(repo, "Drop ListRegions paging\n\nBreaking-Change: 18 regions fit one page; no client pages them")
    ran = check(repo)
    assert ran.returncode == 0
    assert "page_token" in ran.stdout and "accepted by Breaking-Change: 18 regions fit one page" in ran.stdout


def test_a_shallow_clone_fetches_the_previous_commit(repo: Path, tmp_path: Path) -> None:
    edit(repo, FIELD, "  reserved 2;\n")
    commit(repo, "Drop a field")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--depth=1", f"file://{repo}", str(clone)], check=True)
    ran = check(clone)
    assert ran.returncode == 1 and "page_token" in ran.stdout
