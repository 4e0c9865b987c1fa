"""Decision documents: rendered as PDF from a template, previewed unsigned, then signed (PAdES) and verified.

ReportLab renders the document (pure Python, no system library) and renders it deterministically: the same
content gives the same bytes, so the document an officer previews is stored once and exactly those bytes are
signed. pyHanko signs it with a PAdES baseline signature (an incremental update: the previewed bytes stay the
document's first revision, `signed_over` proves it) and verifies it with the same library. The signing key and
certificate come from settings (a Secret in production: the director general's or a delegate's certificate);
in development `ensure_dev_signing_identity` issues one under the hub's development CA.

Nothing here holds patient data: a decision names a case, its promoter and its activity.

ReportLab, pyHanko and asn1crypto (about 35 MB of a process) are imported by the functions that use them, on
the first decision rendered, signed or verified. The contracts service never calls them itself: it renders
and verifies in its document process (`services.contracts.document_process`), so that it stays the size of
the other services (issue 15's idle RSS); the contracts worker signs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign import signers

SIGNATURE_FIELD = "SignatureDirecteurGeneral"


class DecisionKind:
    """What is decided (each has its template)."""

    CONTRACT_APPROVAL = "CONTRACT_APPROVAL"
    CONTRACT_REJECTION = "CONTRACT_REJECTION"
    CONTRACT_AMENDMENT = "CONTRACT_AMENDMENT"
    CONTRACT_RENEWAL = "CONTRACT_RENEWAL"
    CONTRACT_TERMINATION = "CONTRACT_TERMINATION"
    DECLARATION_ACKNOWLEDGEMENT = "DECLARATION_ACKNOWLEDGEMENT"
    INTERMEDIARY_VISA = "INTERMEDIARY_VISA"
    INTERMEDIARY_VISA_REFUSAL = "INTERMEDIARY_VISA_REFUSAL"


@dataclass(frozen=True, kw_only=True)
class Template:
    title: str
    # The article of the decision ("Article 1er").
    decision: str
    # The legal basis cited in the visas ("Vu ...").
    legal_basis: tuple[str, ...]
    # A refusal states its motivation (CRPA L.211-2): the template refuses to render without one.
    motivation_required: bool = False
    # The signatory block.
    authority: str = "Le directeur général de l'agence régionale de santé"


_CSP_TELEMEDICINE = (
    "Vu le code de la santé publique, notamment ses articles L.6316-1 et R.6316-1 et suivants ;"
)
_CRPA = "Vu le code des relations entre le public et l'administration, notamment son article L.211-2 ;"

TEMPLATES: Mapping[str, Template] = {
    DecisionKind.CONTRACT_APPROVAL: Template(
        title="Décision portant approbation d'un contrat de télémédecine",
        decision="Le contrat de télémédecine désigné ci-dessus est approuvé pour la période indiquée.",
        legal_basis=(_CSP_TELEMEDICINE,),
    ),
    DecisionKind.CONTRACT_REJECTION: Template(
        title="Décision portant refus d'un contrat de télémédecine",
        decision="Le contrat de télémédecine désigné ci-dessus n'est pas approuvé.",
        legal_basis=(_CSP_TELEMEDICINE, _CRPA),
        motivation_required=True,
    ),
    DecisionKind.CONTRACT_AMENDMENT: Template(
        title="Décision portant approbation d'un avenant à un contrat de télémédecine",
        decision="L'avenant au contrat de télémédecine désigné ci-dessus est approuvé.",
        legal_basis=(_CSP_TELEMEDICINE,),
    ),
    DecisionKind.CONTRACT_RENEWAL: Template(
        title="Décision portant renouvellement d'un contrat de télémédecine",
        decision="Le contrat de télémédecine désigné ci-dessus est renouvelé pour la période indiquée.",
        legal_basis=(_CSP_TELEMEDICINE,),
    ),
    DecisionKind.CONTRACT_TERMINATION: Template(
        title="Décision portant résiliation d'un contrat de télémédecine",
        decision="Il est mis fin au contrat de télémédecine désigné ci-dessus.",
        legal_basis=(_CSP_TELEMEDICINE, _CRPA),
        motivation_required=True,
    ),
    DecisionKind.DECLARATION_ACKNOWLEDGEMENT: Template(
        title="Accusé de réception d'une déclaration d'opérateur de télésurveillance",
        decision="La déclaration d'activité de télésurveillance désignée ci-dessus est enregistrée ; elle "
        "prend effet à la date indiquée.",
        legal_basis=(
            "Vu le code de la sécurité sociale, notamment son article L.162-52 ;",
            "Vu les décrets n° 2022-1767 et n° 2022-1769 du 30 décembre 2022 ;",
        ),
    ),
    DecisionKind.INTERMEDIARY_VISA: Template(
        title="Visa du conseil de l'Ordre sur un contrat entre un médecin et une société",
        decision="Le conseil donne son visa au contrat désigné ci-dessus.",
        legal_basis=("Vu le code de la santé publique, notamment ses articles L.4113-9 et R.4127-83 ;",),
        authority="Le président du conseil de l'Ordre des médecins",
    ),
    DecisionKind.INTERMEDIARY_VISA_REFUSAL: Template(
        title="Refus de visa du conseil de l'Ordre sur un contrat entre un médecin et une société",
        decision="Le conseil refuse son visa au contrat désigné ci-dessus ; les clauses suivantes ne "
        "satisfont pas aux exigences déontologiques.",
        legal_basis=("Vu le code de la santé publique, notamment ses articles L.4113-9 et R.4127-83 ;",),
        motivation_required=True,
        authority="Le président du conseil de l'Ordre des médecins",
    ),
}


class DecisionError(ValueError):
    """The content cannot make a valid decision (e.g. a refusal without its motivation)."""


@dataclass(frozen=True, kw_only=True)
class DecisionContent:
    """What a decision says: no patient data, only the case, its parties and the decision."""

    kind: str  # DecisionKind.*
    # The decision's own number (`ARS84-2026-000123`) and the case it decides (`arsContracts/{id}`).
    reference: str
    case_name: str
    # The issuing authority ("Agence régionale de santé Auvergne-Rhône-Alpes", or an Ordre council).
    issuer: str
    # The promoter as the decision names it (an establishment's name and FINESS, a company and SIREN).
    promoter: str
    subject: str
    motivation: str = ""
    # Items of a refusal or of the clauses that failed.
    items: tuple[str, ...] = ()
    valid_from: date | None = None
    valid_until: date | None = None
    place: str
    decided_on: date
    # "Pour le directeur général et par délégation, la directrice de l'offre de soins" when a delegate signs.
    signatory_title: str = ""
    extra_legal_basis: tuple[str, ...] = field(default_factory=tuple)


_FRENCH_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def french_date(day: date) -> str:
    first = "1er" if day.day == 1 else str(day.day)
    return f"{first} {_FRENCH_MONTHS[day.month - 1]} {day.year}"


def render(content: DecisionContent) -> bytes:
    """The decision as a PDF. Deterministic: the same content always gives the same bytes."""
    template = TEMPLATES.get(content.kind)
    if template is None:
        raise DecisionError(f"no template for {content.kind!r}")
    if template.motivation_required and not content.motivation.strip():
        raise DecisionError("a refusal or a termination states its motivation")
    if (content.valid_from is None) != (content.valid_until is None):
        raise DecisionError("a period has both ends")
    if content.valid_from and content.valid_until and content.valid_until < content.valid_from:
        raise DecisionError("a period ends after it starts")

    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        ListFlowable,
        ListItem,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )
    from reportlab.platypus.flowables import Flowable

    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontName="Helvetica", fontSize=10.5, leading=14)
    small = ParagraphStyle("small", parent=body, fontSize=9, textColor=colors.HexColor("#3a3a3a"))
    title = ParagraphStyle(
        "title",
        parent=styles["Title"],
        fontName="Helvetica-Bold",
        fontSize=14,
        leading=18,
        alignment=TA_CENTER,
    )
    heading = ParagraphStyle("heading", parent=body, fontName="Helvetica-Bold", spaceBefore=6)

    def p(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(escape(text), style)

    story: list[Flowable] = [
        p(content.issuer, heading),
        p(f"Décision n° {content.reference}", small),
        Spacer(1, 8 * mm),
        p(template.title, title),
        Spacer(1, 6 * mm),
    ]
    parties = Table(
        [
            [p("Dossier", small), p(content.case_name, small)],
            [p("Promoteur", small), p(content.promoter, small)],
            [p("Objet", small), p(content.subject, small)],
        ],
        colWidths=[35 * mm, 125 * mm],
    )
    parties.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#929292")),
                ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eeeeee")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story += [parties, Spacer(1, 6 * mm)]
    for line in (*template.legal_basis, *content.extra_legal_basis):
        story.append(p(line))
    if content.motivation.strip():
        story += [Spacer(1, 3 * mm), p("Motivation", heading), p(content.motivation)]
    story += [Spacer(1, 3 * mm), p("Décide", heading), p(f"Article 1er — {template.decision}")]
    if content.items:
        story.append(
            ListFlowable(
                [ListItem(p(item), leftIndent=12) for item in content.items], bulletType="bullet", start="–"
            )
        )
    if content.valid_from and content.valid_until:
        story.append(
            p(
                f"Article 2 — Période : du {french_date(content.valid_from)} au "
                f"{french_date(content.valid_until)} inclus."
            )
        )
    story += [
        Spacer(1, 10 * mm),
        p(f"Fait à {content.place}, le {french_date(content.decided_on)}."),
        Spacer(1, 4 * mm),
        p(content.signatory_title or template.authority, heading),
        p("Document signé électroniquement (signature PAdES).", small),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=25 * mm,
        rightMargin=25 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
        title=template.title,
        author=content.issuer,
        subject=content.reference,
        creator="Parcours",
        # No creation time and no random document id: the preview and the document signed are the same bytes.
        invariant=1,
    )
    document.build(story)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------
# Signing and verifying


@dataclass(frozen=True, kw_only=True)
class SigningIdentity:
    """The signing key and certificate (PEM), with the chain up to (not including) the trust root."""

    certificate_pem: bytes
    key_pem: bytes
    chain_pem: tuple[bytes, ...] = ()

    @classmethod
    def from_files(cls, certificate: Path, key: Path, chain: Sequence[Path] = ()) -> SigningIdentity:
        return cls(
            certificate_pem=certificate.read_bytes(),
            key_pem=key.read_bytes(),
            chain_pem=tuple(path.read_bytes() for path in chain),
        )

    def subject(self) -> str:
        """The signing certificate's common name (who the decision says signed it)."""
        names = x509.load_pem_x509_certificate(self.certificate_pem).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        return str(names[0].value) if names else ""

    def signer(self) -> signers.SimpleSigner:
        from asn1crypto import keys as asn1_keys
        from pyhanko.sign import signers
        from pyhanko_certvalidator.registry import SimpleCertificateStore

        certificate = _asn1_certificate(self.certificate_pem)
        private_key = serialization.load_pem_private_key(self.key_pem, password=None)
        der = private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return signers.SimpleSigner(
            signing_cert=certificate,
            signing_key=asn1_keys.PrivateKeyInfo.load(der),
            cert_registry=SimpleCertificateStore.from_certs([_asn1_certificate(c) for c in self.chain_pem]),
        )


def _asn1_certificate(pem: bytes) -> asn1_x509.Certificate:
    from asn1crypto import x509 as asn1_x509

    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return asn1_x509.Certificate.load(der)


def sign(pdf: bytes, identity: SigningIdentity, *, reason: str, location: str) -> bytes:
    """Sign `pdf` (PAdES baseline B, SHA-256) as an incremental update: its bytes are kept as they are."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason=reason,
        location=location,
    )
    out = signers.sign_pdf(writer, metadata, signer=identity.signer())
    return bytes(out.getvalue())


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What verifying a signed decision found."""

    # The signature's cryptography holds and covers what it says (nothing changed after signing).
    intact: bool
    valid: bool
    # The signer's certificate chains up to one of the trust roots given.
    trusted: bool
    # The signature covers the whole file (no revision added after it).
    covers_whole_file: bool
    signer: str = ""
    signed_at: datetime | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.intact and self.valid and self.trusted and self.covers_whole_file


def verify(pdf: bytes, trust_roots_pem: Sequence[bytes]) -> Verification:
    """Verify the decision's signature with pyHanko against the trust roots (the hub's or the State's CA)."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    try:
        reader = PdfFileReader(io.BytesIO(pdf))
        signatures = reader.embedded_signatures
    except Exception as exc:
        return _failed(f"not a readable PDF ({exc.__class__.__name__})")
    if len(signatures) != 1:
        return _failed(f"{len(signatures)} signatures found, one expected")
    context = ValidationContext(
        trust_roots=[_asn1_certificate(root) for root in trust_roots_pem], allow_fetching=False
    )
    try:
        status = validate_pdf_signature(signatures[0], context)
    except (SignatureValidationError, ValueError) as exc:
        return _failed(f"the signature cannot be validated ({exc.__class__.__name__})")
    subject = status.signing_cert.subject.native if status.signing_cert is not None else {}
    return Verification(
        intact=status.intact,
        valid=status.valid,
        trusted=status.trusted,
        covers_whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        signer=str(subject.get("common_name", "")),
        signed_at=status.signer_reported_dt,
    )


def _failed(problem: str) -> Verification:
    return Verification(intact=False, valid=False, trusted=False, covers_whole_file=False, problem=problem)


def signed_over(preview: bytes, signed: bytes) -> bool:
    """Whether `signed` is `preview` with a signature appended: what was previewed is what was signed."""
    return len(signed) > len(preview) and signed.startswith(preview)


# --------------------------------------------------------------------------------------------------------
# Development identity


DEV_SIGNING_VALIDITY = timedelta(days=825)


def ensure_dev_signing_identity(
    pki_dir: Path,
    *,
    name: str = "decision-signing",
    common_name: str = "Directeur général ARS (développement)",
) -> tuple[Path, Path]:
    """A document-signing certificate issued by the development CA of `pki_dir` (`make run`, tests).

    Reused while it is valid and issued by the current CA. Returns (certificate file, key file).
    """
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca-key.pem").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the development CA key is not an EC key")
    cert_file, key_file = pki_dir / f"{name}.pem", pki_dir / f"{name}-key.pem"
    now = datetime.now(UTC)
    if cert_file.exists() and key_file.exists():
        existing = x509.load_pem_x509_certificate(cert_file.read_bytes())
        if existing.issuer == ca_cert.subject and existing.not_valid_after_utc - now > timedelta(days=30):
            try:
                existing.verify_directly_issued_by(ca_cert)
                return cert_file, key_file
            except (ValueError, TypeError):
                pass
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Parcours"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + DEV_SIGNING_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # non-repudiation: a signature that commits its signer
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file
