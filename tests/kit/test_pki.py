"""The development PKI: certificates a TLS peer accepts, with the right names and usages, made once."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.kit.pki import DevPki, ensure_dev_pki, kid_for_public_key, load_ec_private_key

FINESS = "420000017"


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki", components=("directory", "cli"), establishments=(FINESS,))


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def organization(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_verifies_every_certificate(pki: DevPki) -> None:
    ca = load(pki.ca_file)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for path in (pki.cert_file("directory"), pki.cert_file("cli"), pki.establishment_cert_file(FINESS)):
        load(path).verify_directly_issued_by(ca)


def test_component_certificate_serves_and_calls(pki: DevPki) -> None:
    cert = load(pki.cert_file("directory"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert common_name(cert) == "parcours-directory"
    assert organization(cert) == "Parcours"
    assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "parcours-directory"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_establishment_certificate_only_calls(pki: DevPki) -> None:
    cert = load(pki.establishment_cert_file(FINESS))

    assert common_name(cert) == FINESS
    assert organization(cert) == "Parcours establishments"
    assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_keys_match_and_are_private(pki: DevPki) -> None:
    pairs = [
        (pki.cert_file("directory"), pki.key_file("directory")),
        (pki.establishment_cert_file(FINESS), pki.establishment_key_file(FINESS)),
    ]
    for cert_file, key_file in pairs:
        assert load(cert_file).public_key() == load_ec_private_key(key_file).public_key()
    for key_file in (pki.ca_key_file, pki.key_file("cli"), pki.signing_key_file, pairs[1][1]):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_jwks_publishes_the_signing_key(pki: DevPki) -> None:
    jwks = json.loads(pki.jwks_file.read_text())
    public = load_ec_private_key(pki.signing_key_file).public_key()

    assert pki.signing_kid == kid_for_public_key(public)
    assert [(k["kid"], k["alg"], k["kty"], k["crv"]) for k in jwks["keys"]] == [
        (pki.signing_kid, "ES256", "EC", "P-256")
    ]


def test_second_call_reuses_files_and_adds_only_what_is_missing(tmp_path: Path, pki: DevPki) -> None:
    before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}

    again = ensure_dev_pki(
        pki.directory, components=("directory", "cli", "billing"), establishments=(FINESS,)
    )

    after = {p.name: p.read_bytes() for p in again.directory.iterdir()}
    assert again == pki
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) == {"billing.pem", "billing-key.pem"}
    load(again.cert_file("billing")).verify_directly_issued_by(load(pki.ca_file))


def test_certificate_of_another_ca_is_reissued(tmp_path: Path, pki: DevPki) -> None:
    stranger = ensure_dev_pki(tmp_path / "other", components=("directory",), establishments=())
    pki.cert_file("directory").write_bytes(stranger.cert_file("directory").read_bytes())
    pki.key_file("directory").write_bytes(stranger.key_file("directory").read_bytes())

    ensure_dev_pki(pki.directory, components=("directory",), establishments=())

    load(pki.cert_file("directory")).verify_directly_issued_by(load(pki.ca_file))


@pytest.mark.parametrize("finess", ["42000001", "4200000170", "ABCDEFGHI"])
def test_malformed_finess_is_refused(tmp_path: Path, finess: str) -> None:
    with pytest.raises(ValueError, match="FINESS"):
        ensure_dev_pki(tmp_path, components=(), establishments=(finess,))


def test_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.kit.pki", "--dir", str(tmp_path), "--establishment", "2A0000031"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2A0000031" in result.stdout
    assert common_name(load(tmp_path / "establishment-2A0000031.pem")) == "2A0000031"
    assert (tmp_path / "workflows.pem").exists()
