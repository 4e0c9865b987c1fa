"""`buf breaking` for `make lint`: the API of the working tree against the API of the last landed commit.

Image against image: both are built by protoc as `make protos` builds them (`buf breaking --against
'.git#ref=…'` cannot work here: it would need the module's dependencies from the schema registry). The older
protos are read with `git archive`, so no worktree is added to the repository.

What it compares against, first match:
1. `BREAKING_AGAINST=<revision>` in the environment (e.g. `make lint BREAKING_AGAINST=origin/main`);
2. on a branch other than main, the commit where it left main (`git merge-base HEAD main`): everything the
   branch changes is checked;
3. otherwise HEAD's first parent: on main (CI checks out main), the commit before the one landing.

There is nothing to compare with for a repository's first commit, nor when the older commit has no protos:
the check says so and passes. In a shallow clone it first fetches the missing parent (`git fetch
--deepen=1`); if that is impossible it says so and passes, since missing history is not a breaking change.

An intended break (a new major version is not always the answer while nobody depends on a field yet) passes
when a commit of the compared range carries the trailer `Breaking-Change: <why>` in its message: the
breaks are still printed, with the reason, and stay in the history for every reviewer to see.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from generate import ROOT, build_image

BUF = ROOT / "build" / "node" / "node_modules" / ".bin" / "buf"
TRAILER = re.compile(r"^Breaking-Change:[ \t]*(\S.*)$", re.MULTILINE)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check)


def _exists(repo: Path, revision: str) -> bool:
    return (
        git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", check=False).returncode == 0
    )


def base_revision(repo: Path) -> tuple[str | None, str]:
    """The commit to compare against (None: nothing to compare with) and why that one."""
    given = os.environ.get("BREAKING_AGAINST")
    if given:
        if not _exists(repo, given):
            raise SystemExit(f"buf breaking: BREAKING_AGAINST={given} is not a commit of this repository")
        return given, f"BREAKING_AGAINST={given}"
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    if _exists(repo, "main"):
        fork = git(repo, "merge-base", "HEAD", "main", check=False).stdout.strip()
        if fork and fork != head:
            return fork, "where this branch left main"
    if (
        not _exists(repo, "HEAD^")
        and git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    ):
        git(repo, "fetch", "--quiet", "--deepen=1", check=False)
        if not _exists(repo, "HEAD^"):
            return None, "the previous commit is not in this shallow clone and could not be fetched"
    if not _exists(repo, "HEAD^"):
        return None, "this is the repository's first commit"
    return "HEAD^", "the previous commit"


def extract_protos(repo: Path, revision: str, into: Path) -> Path | None:
    """The revision's protos/ under `into`, or None when it has none."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", revision, "protos"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    found = into / "protos"
    return found if any(found.rglob("*.proto")) else None


def accepted_breaks(repo: Path, revision: str) -> list[str]:
    """The reasons given by `Breaking-Change:` trailers in the commits after `revision` up to HEAD."""
    log = git(repo, "log", "--format=%B%x00", f"{revision}..HEAD").stdout
    return [match.group(1).strip() for match in TRAILER.finditer(log)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    repo: Path = args.repo.resolve()
    revision, why = base_revision(repo)
    if revision is None:
        print(f"buf breaking: skipped, {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="parcours-breaking-") as tmp:
        base_protos = extract_protos(repo, revision, Path(tmp) / "base")
        if base_protos is None:
            print(f"buf breaking: skipped, {revision} ({why}) has no protos")
            return 0
        base_image, head_image = Path(tmp) / "base.binpb", Path(tmp) / "head.binpb"
        build_image(base_protos, base_image)
        build_image(repo / "protos", head_image)
        result = subprocess.run(
            [
                str(BUF),
                "breaking",
                str(head_image),
                "--against",
                str(base_image),
                "--config",
                str(repo / "buf.yaml"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    short = git(repo, "rev-parse", "--short", revision).stdout.strip()
    if result.returncode == 0:
        print(f"buf breaking: no breaking change against {short} ({why})")
        return 0
    sys.stdout.write(result.stdout + result.stderr)
    reasons = accepted_breaks(repo, revision)
    if reasons:
        print(
            f"buf breaking: the changes above break the API of {short}; "
            f"accepted by Breaking-Change: {'; '.join(reasons)}"
        )
        return 0
    print(
        f"buf breaking: the changes above break the API of {short} ({why}). Keep the old field or method, or "
        "add a line `Breaking-Change: <why>` to the commit message if the break is intended."
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
