"""Decision documents: rendered from a template, previewed, signed (PAdES) and verified with pyHanko."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from services.contracts.decisions import (
    DecisionContent,
    DecisionError,
    DecisionKind,
    SigningIdentity,
    ensure_dev_signing_identity,
    french_date,
    render,
    sign,
    signed_over,
    verify,
)
from services.kit.pki import DevPki, ensure_dev_pki

APPROVAL = DecisionContent(
    kind=DecisionKind.CONTRACT_APPROVAL,
    reference="ARS84-2026-000001",
    case_name="arsContracts/0b8f0a4e-64c1-4ad4-9a53-0c1f5c2b7e11",
    issuer="Agence régionale de santé Auvergne-Rhône-Alpes",
    promoter="Centre hospitalier de Saint-Étienne (FINESS 420000017)",
    subject="Téléconsultation hors parcours de soins",
    valid_from=date(2026, 4, 1),
    valid_until=date(2029, 3, 31),
    place="Lyon",
    decided_on=date(2026, 3, 20),
)


@pytest.fixture(scope="module")
def identity(pki: DevPki) -> SigningIdentity:
    cert, key = ensure_dev_signing_identity(pki.directory)
    return SigningIdentity.from_files(cert, key)


@pytest.fixture(scope="module")
def roots(pki: DevPki) -> list[bytes]:
    return [pki.ca_file.read_bytes()]


def test_the_preview_is_a_pdf_rendered_the_same_every_time() -> None:
    preview = render(APPROVAL)
    assert preview.startswith(b"%PDF-") and preview == render(APPROVAL)
    info = PdfFileReader(io.BytesIO(preview)).trailer["/Info"]
    assert str(info["/Title"]) == "Décision portant approbation d'un contrat de télémédecine"
    assert str(info["/Subject"]) == "ARS84-2026-000001"
    # Another decision is another document.
    assert render(APPROVAL.__class__(**{**APPROVAL.__dict__, "reference": "ARS84-2026-000002"})) != preview


def test_a_refusal_without_its_motivation_or_a_half_period_cannot_be_rendered() -> None:
    with pytest.raises(DecisionError, match="a period has both ends"):
        render(DecisionContent(**{**APPROVAL.__dict__, "valid_until": None}))
    refusal = DecisionContent(
        **{
            **APPROVAL.__dict__,
            "kind": DecisionKind.CONTRACT_REJECTION,
            "valid_from": None,
            "valid_until": None,
        }
    )
    with pytest.raises(DecisionError, match="motivation"):
        render(refusal)
    motivated = DecisionContent(**{**refusal.__dict__, "motivation": "Activité hors du programme régional."})
    assert render(motivated).startswith(b"%PDF-")
    assert french_date(date(2026, 3, 1)) == "1er mars 2026"


def test_a_signed_decision_verifies_and_is_exactly_the_previewed_document(
    identity: SigningIdentity, roots: list[bytes]
) -> None:
    preview = render(APPROVAL)
    signed = sign(preview, identity, reason="Approbation du contrat", location="Lyon")
    assert signed_over(preview, signed)
    verification = verify(signed, roots)
    assert verification.ok, verification
    assert verification.signer == "Directeur général ARS (développement)"
    assert verification.signed_at is not None
    # An unsigned preview is not a signed decision.
    assert not verify(preview, roots).ok


def test_a_tampered_decision_fails_verification(identity: SigningIdentity, roots: list[bytes]) -> None:
    signed = sign(render(APPROVAL), identity, reason="Approbation", location="Lyon")
    # One byte of the signed content changed: the signature no longer holds.
    tampered = bytearray(signed)
    at = tampered.find(b"/Subject")
    assert at > 0
    tampered[at + 12] ^= 0x01
    assert not verify(bytes(tampered), roots).intact
    # A revision added after the signature (here: the document's language): no longer covered.
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    writer.root["/Lang"] = generic.pdf_string("en")
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    appended = verify(out.getvalue(), roots)
    assert appended.intact and not appended.covers_whole_file and not appended.ok
    # Garbage is reported, not raised.
    assert verify(b"%PDF-1.4 nothing", roots).problem


def test_a_decision_signed_under_another_root_is_not_trusted(
    identity: SigningIdentity, tmp_path: Path
) -> None:
    other = ensure_dev_pki(tmp_path / "other", components=["contracts"], establishments=[])
    signed = sign(render(APPROVAL), identity, reason="Approbation", location="Lyon")
    verification = verify(signed, [other.ca_file.read_bytes()])
    assert verification.intact and not verification.trusted and not verification.ok


def test_the_development_signing_identity_is_reused(pki: DevPki) -> None:
    first = ensure_dev_signing_identity(pki.directory)
    before = first[0].read_bytes()
    assert ensure_dev_signing_identity(pki.directory) == first
    assert first[0].read_bytes() == before
    assert oct(first[1].stat().st_mode & 0o777) == "0o600"
