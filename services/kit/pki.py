"""Development PKI: a private CA, mTLS certificates for components and establishments, a token signing key.

`make run` and the tests call `ensure_dev_pki`, which creates what is missing and reuses the rest, so a second
run keeps the same CA (clients configured with it keep working). Never used in production, where certificates
come from the hospital PKI / cert-manager and tokens from Pro Santé Connect.

    python -m services.kit.pki --dir .data/pki --establishment 750712184
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

DEFAULT_COMPONENTS = (
    "directory",
    "scheduling",
    "expertise",
    "billing",
    "contracts",
    "console",
    "workflows",
    "cli",
)
ORGANIZATION = "Parcours"
ESTABLISHMENTS_ORGANIZATION = "Parcours establishments"
CA_COMMON_NAME = "Parcours Development CA"

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=825)
# A leaf this close to its end is renewed at the next start rather than failing some morning mid-demo.
RENEW_BEFORE = timedelta(days=30)
# Backdating absorbs small clock differences between the machine that issues and the one that verifies.
BACKDATE = timedelta(minutes=5)
# Length of the key id: a prefix of the RFC 7638 thumbprint, unique enough for a handful of keys.
KID_LENGTH = 16

_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# FINESS: 9 characters, digits except the Corsican department prefixes 2A / 2B.
_FINESS_RE = re.compile(r"^(?:[0-9]{2}|2A|2B)[0-9]{7}$")


@dataclass(frozen=True)
class DevPki:
    """Where the development PKI's files are."""

    directory: Path
    signing_kid: str

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def signing_key_file(self) -> Path:
        return self.directory / "token-signing-key.pem"

    @property
    def jwks_file(self) -> Path:
        return self.directory / "jwks.json"

    def cert_file(self, component: str) -> Path:
        return self.directory / f"{component}.pem"

    def key_file(self, component: str) -> Path:
        return self.directory / f"{component}-key.pem"

    def establishment_cert_file(self, finess: str) -> Path:
        return self.directory / f"establishment-{finess}.pem"

    def establishment_key_file(self, finess: str) -> Path:
        return self.directory / f"establishment-{finess}-key.pem"


def ensure_dev_pki(directory: Path, *, components: Sequence[str], establishments: Sequence[str]) -> DevPki:
    """Create under `directory` whatever of the development PKI is missing, invalid or about to expire."""
    for component in components:
        if not _COMPONENT_RE.fullmatch(component):
            raise ValueError(f"invalid component name {component!r}")
    for finess in establishments:
        if not _FINESS_RE.fullmatch(finess):
            raise ValueError(f"invalid FINESS {finess!r}: 9 characters expected")

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pki = DevPki(directory=directory, signing_kid="")
    # Tests and `make run` may share a directory: one process at a time decides what is missing.
    with _locked(directory / ".lock"):
        now = datetime.now(UTC)
        ca_key, ca_cert, ca_created = _ensure_ca(pki, now)
        issued = 0
        for component in components:
            issued += _ensure_leaf(
                cert_file=pki.cert_file(component),
                key_file=pki.key_file(component),
                subject=_name(f"parcours-{component}", ORGANIZATION),
                dns_names=["localhost", f"parcours-{component}"],
                usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                ca_key=ca_key,
                ca_cert=ca_cert,
                force=ca_created,
                now=now,
            )
        for finess in establishments:
            issued += _ensure_leaf(
                cert_file=pki.establishment_cert_file(finess),
                key_file=pki.establishment_key_file(finess),
                subject=_name(finess, ESTABLISHMENTS_ORGANIZATION),
                dns_names=[],
                usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
                ca_key=ca_key,
                ca_cert=ca_cert,
                force=ca_created,
                now=now,
            )
        kid = _ensure_signing_key(pki)
    if issued:
        logger.info("development PKI in %s: issued %d certificate(s)", directory, issued)
    return DevPki(directory=directory, signing_kid=kid)


def kid_for_public_key(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key id: a prefix of the key's RFC 7638 JWK thumbprint (base64url SHA-256)."""
    jwk = _jwk_members(public_key)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:KID_LENGTH]


def public_jwk(public_key: ec.EllipticCurvePublicKey, *, kid: str | None = None) -> dict[str, str]:
    """The JWK of an ES256 verification key, as a JWKS lists it."""
    return {
        **_jwk_members(public_key),
        "kid": kid if kid is not None else kid_for_public_key(public_key),
        "use": "sig",
        "alg": "ES256",
    }


def load_ec_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read a PEM EC P-256 private key; anything else is a configuration error."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: not an EC P-256 private key")
    return key


def _ensure_ca(pki: DevPki, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    if pki.ca_file.exists() and pki.ca_key_file.exists():
        try:
            key = load_ec_private_key(pki.ca_key_file)
            cert = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
            if _same_key(cert, key) and cert.not_valid_after_utc - now > RENEW_BEFORE:
                return key, cert, False
            logger.warning("development CA in %s is unusable or expiring; creating a new one", pki.directory)
        except ValueError:
            logger.warning("development CA in %s cannot be read; creating a new one", pki.directory)

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(CA_COMMON_NAME, ORGANIZATION)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pki.ca_key_file, key)
    _write_file(pki.ca_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    logger.info("created development CA %s", pki.ca_file)
    return key, cert, True


def _ensure_leaf(
    *,
    cert_file: Path,
    key_file: Path,
    subject: x509.Name,
    dns_names: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    force: bool,
    now: datetime,
) -> bool:
    """Issue the certificate unless a usable one exists; whether it was issued."""
    if not force and _leaf_is_usable(cert_file, key_file, subject, ca_cert, now):
        return False

    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
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
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if dns_names:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    # Key first: a reader that sees the new certificate also finds its key.
    _write_key(key_file, key)
    _write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    logger.debug("issued development certificate %s", cert_file.name)
    return True


def _leaf_is_usable(
    cert_file: Path, key_file: Path, subject: x509.Name, ca_cert: x509.Certificate, now: datetime
) -> bool:
    if not (cert_file.exists() and key_file.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = load_ec_private_key(key_file)
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        logger.warning("%s is unreadable or not issued by the current CA; reissuing", cert_file.name)
        return False
    if cert.subject != subject or not _same_key(cert, key):
        logger.warning("%s does not match its key or name; reissuing", cert_file.name)
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        logger.info("%s expires soon; reissuing", cert_file.name)
        return False
    return True


def _ensure_signing_key(pki: DevPki) -> str:
    if pki.signing_key_file.exists():
        key = load_ec_private_key(pki.signing_key_file)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(pki.signing_key_file, key)
        logger.info("created token signing key %s", pki.signing_key_file)
    kid = kid_for_public_key(key.public_key())

    # Keys already in the JWKS stay (a rotation adds the new key next to the old ones); the current key
    # comes first. The file is rewritten only when it changes, so reuse leaves it byte-identical.
    keys: list[dict[str, Any]] = []
    if pki.jwks_file.exists():
        try:
            loaded = json.loads(pki.jwks_file.read_text())
            keys = [k for k in loaded["keys"] if isinstance(k, dict)]
        except (ValueError, KeyError, TypeError):
            logger.warning("%s is not a JWKS; rewriting it", pki.jwks_file)
    if not any(k.get("kid") == kid for k in keys):
        keys.insert(0, public_jwk(key.public_key(), kid=kid))
        _write_file(pki.jwks_file, (json.dumps({"keys": keys}, indent=2) + "\n").encode(), 0o644)
    return kid


def _jwk_members(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("only EC P-256 keys are supported")
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, raw) == key.public_key().public_bytes(der, raw)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_file(path, pem, 0o600)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # Write then rename: a reader never sees half a file, and a key file is never readable by others,
    # not even for an instant (created with its final mode, chmod again because of the umask).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.kit.pki",
        description="Create (or complete) the development PKI: CA, component and establishment "
        "certificates, token signing key and JWKS.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="folder of the PKI files")
    parser.add_argument(
        "--component",
        action="append",
        default=None,
        help=f"component certificate to ensure (repeatable; default: {', '.join(DEFAULT_COMPONENTS)})",
    )
    parser.add_argument(
        "--establishment",
        action="append",
        default=[],
        metavar="FINESS",
        help="establishment client certificate to ensure (repeatable)",
    )
    args = parser.parse_args(argv)
    components: list[str] = args.component or list(DEFAULT_COMPONENTS)
    establishments: list[str] = args.establishment
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        pki = ensure_dev_pki(args.dir, components=components, establishments=establishments)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"PKI in {pki.directory}")
    print(f"  CA:           {pki.ca_file}")
    for component in components:
        print(f"  {component + ':':<13} {pki.cert_file(component)}")
    for finess in establishments:
        print(f"  FINESS {finess}: {pki.establishment_cert_file(finess)}")
    print(f"  token key:    {pki.signing_key_file} (kid {pki.signing_kid})")
    print(f"  JWKS:         {pki.jwks_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
