"""`python -m services.devstack.tokens`: tokens for the demo region's practitioners, and where each may act.

    python -m services.devstack.tokens demo                   # who, and through which certificates
    python -m services.devstack.tokens mint --rpps 10000000101

A practitioner acts through an establishment's information system: every call carries that establishment's
client certificate (`.data/pki/establishment-<FINESS>.pem`) and the practitioner's token. The hub accepts the
pair when the practitioner practises at that establishment, or at another establishment of the same GHT;
`demo` lists each practitioner's practice places and the certificates that go with their token.

`mint` fills in the demo practitioner's profession, specialty and names from the demo data; the kit's own
`python -m services.kit.tokens mint` knows no practitioner and takes them as options.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from services.directory.demo import DEMO_ESTABLISHMENTS, DEMO_GHTS, DEMO_PRACTITIONERS, DemoPractitioner
from services.kit.tokens import add_mint_arguments, mint_from_arguments, practitioner_subject, staff_subject

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_pki_dir() -> Path:
    """The PKI of `make run` (PARCOURS_DATA_DIR, else .data, then pki/)."""
    return Path(os.environ.get("PARCOURS_DATA_DIR") or REPO_ROOT / ".data") / "pki"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def practice_lines(practitioner: DemoPractitioner) -> list[str]:
    """Where a demo practitioner practises and which establishments' certificates go with their token."""
    establishments = {e.finess: e for e in DEMO_ESTABLISHMENTS}
    ghts = {g.ght_id: g for g in DEMO_GHTS}
    lines = []
    for finess in practitioner.practice_places:
        place = establishments[finess]
        if place.ght_id is None:
            lines.append(
                f"    practises at {finess} {place.display_name}, outside any GHT: calls through {finess}"
            )
        else:
            through = " ".join(e.finess for e in DEMO_ESTABLISHMENTS if e.ght_id == place.ght_id)
            lines.append(
                f"    practises at {finess} {place.display_name}, {ghts[place.ght_id].display_name}:"
            )
            lines.append(f"      calls through any of {through}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devstack.tokens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the demo practitioners, their practice places and certificates")
    demo.add_argument("--pki-dir", type=Path, default=default_pki_dir())
    mint = commands.add_parser("mint", help="a token for a demo practitioner (or a staff member)")
    add_mint_arguments(mint, pki_dir=default_pki_dir())
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--rpps", help="a demo practitioner's RPPS (see `demo`)")
    who.add_argument("--staff", metavar="ID", help="a hub staff member's id (with --role)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        certificate = _display(args.pki_dir / "establishment-<FINESS>.pem")
        print(f"Call with the certificate of an establishment the practitioner calls through ({certificate},")
        print("its key beside it) and their token (`mint --rpps <RPPS>`).\n")
        for p in DEMO_PRACTITIONERS:
            print(f"{p.rpps}  {p.given_name} {p.family_name}  {p.profession}  {p.specialty}")
            print("\n".join(practice_lines(p)))
        return 0
    if args.staff is not None:
        try:
            subject = staff_subject(args.staff)
        except ValueError as exc:
            parser.error(str(exc))
        print(mint_from_arguments(parser, args, subject, None, None))
        return 0
    found = [p for p in DEMO_PRACTITIONERS if p.rpps == args.rpps]
    if not found:
        parser.error(f"{args.rpps} is not a demo practitioner: `python -m services.devstack.tokens demo`")
    practitioner = found[0]
    print(
        mint_from_arguments(
            parser,
            args,
            practitioner_subject(practitioner.rpps),
            practitioner.profession,
            practitioner.specialty,
            given_name=practitioner.given_name,
            family_name=practitioner.family_name,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
