"""PSC-shaped tokens: what verifies, and the stable reason of every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.kit.errors import Unauthenticated
from services.kit.pki import DevPki, ensure_dev_pki, kid_for_public_key, load_ec_private_key, public_jwk
from services.kit.tokens import (
    ROLE_PRACTITIONER,
    Reason,
    TokenVerifier,
    VerifiedToken,
    bearer_token,
    load_jwks,
    mint_token,
    practitioner_subject,
)

ISSUER = "https://auth.example.invalid/realms/test"
AUDIENCE = "parcours-test"
RPPS = "10001234567"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def dev_pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki", components=(), establishments=())


@pytest.fixture
def verifier(dev_pki: DevPki) -> TokenVerifier:
    return TokenVerifier(jwks_file=dev_pki.jwks_file, issuer=ISSUER, audience=AUDIENCE)


def mint(dev_pki: DevPki, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "signing_key_file": dev_pki.signing_key_file,
        "kid": dev_pki.signing_kid,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": practitioner_subject(RPPS),
        "profession": "PROFESSION_PHYSICIAN",
        "specialty": "SPECIALTY_CARDIOLOGY",
        "given_name": "Camille",
        "family_name": "Martin",
    }
    values.update(overrides)
    return mint_token(**values)


def refusal(verifier: TokenVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    # Whatever the reason, the token itself never appears in what is reported or logged.
    if token:
        assert token not in caught.value.message
        assert token not in str(caught.value)
    return caught.value


def write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key


def test_practitioner_token_roundtrip(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(dev_pki, roles=["billing"], ttl=timedelta(hours=2))

    verified = verifier.verify(token)

    assert verified == VerifiedToken(
        subject="8" + RPPS,
        rpps=RPPS,
        profession="PROFESSION_PHYSICIAN",
        specialty="SPECIALTY_CARDIOLOGY",
        roles=frozenset({ROLE_PRACTITIONER, "billing"}),
        region=None,
        token_id=verified.token_id,
        expires_at=verified.expires_at,
        given_name="Camille",
        family_name="Martin",
    )
    assert verified.token_id
    assert timedelta(hours=1, minutes=59) < verified.expires_at - datetime.now(UTC) <= timedelta(hours=2)


def test_claims_have_the_psc_shape(dev_pki: DevPki) -> None:
    token = mint(dev_pki, now=NOW)

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})

    assert header["alg"] == "ES256"
    assert header["kid"] == dev_pki.signing_kid
    assert claims["sub"] == claims["preferred_username"] == "8" + RPPS
    assert claims["acr"] == "eidas3"
    assert claims["SubjectRefPro"] == {
        "codeProfession": "PROFESSION_PHYSICIAN",
        "codeSavoirFaire": "SPECIALTY_CARDIOLOGY",
    }
    assert claims["iat"] == claims["nbf"] == int(NOW.timestamp())
    assert claims["exp"] == int((NOW + timedelta(hours=8)).timestamp())
    assert claims["parcours_roles"] == []


def test_staff_token_with_roles_and_region(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(
        dev_pki,
        subject="staff:ars-paca-07",
        profession=None,
        specialty=None,
        roles=["ars_officer", "hub_operator"],
        region="93",
    )

    verified = verifier.verify(token)

    assert verified.subject == "staff:ars-paca-07"
    assert verified.rpps is None
    assert verified.profession is None
    assert verified.specialty is None
    assert verified.roles == frozenset({"ars_officer", "hub_operator"})
    assert verified.region == "93"
    assert "SubjectRefPro" not in jwt.decode(token, options={"verify_signature": False})


def test_expired(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(dev_pki, now=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1))
    assert refusal(verifier, token).reason == Reason.EXPIRED


def test_expiry_tolerates_the_leeway(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    # Expired 10 s ago; the verifier allows 30 s of clock difference.
    token = mint(
        dev_pki, now=datetime.now(UTC) - timedelta(minutes=10, seconds=10), ttl=timedelta(minutes=10)
    )
    assert verifier.verify(token).rpps == RPPS


def test_not_yet_valid(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(dev_pki, now=datetime.now(UTC) + timedelta(minutes=5))
    assert refusal(verifier, token).reason == Reason.NOT_YET_VALID


def test_wrong_issuer(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(dev_pki, issuer="https://elsewhere.invalid/")
    assert refusal(verifier, token).reason == Reason.WRONG_ISSUER


def test_wrong_audience(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    token = mint(dev_pki, audience="another-app")
    assert refusal(verifier, token).reason == Reason.WRONG_AUDIENCE


def test_forged_signature_with_the_same_kid(tmp_path: Path, dev_pki: DevPki, verifier: TokenVerifier) -> None:
    write_key(tmp_path / "forger.pem")
    token = mint(dev_pki, signing_key_file=tmp_path / "forger.pem", kid=dev_pki.signing_kid)
    assert refusal(verifier, token).reason == Reason.BAD_SIGNATURE


def test_tampered_claims(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    header, _, signature = mint(dev_pki).split(".")
    claims = jwt.decode(mint(dev_pki), options={"verify_signature": False})
    claims["parcours_roles"] = ["hub_operator"]
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert refusal(verifier, f"{header}.{payload}.{signature}").reason == Reason.BAD_SIGNATURE


def test_unknown_kid(tmp_path: Path, dev_pki: DevPki, verifier: TokenVerifier) -> None:
    key = write_key(tmp_path / "other.pem")
    token = mint(dev_pki, signing_key_file=tmp_path / "other.pem", kid=kid_for_public_key(key.public_key()))
    assert refusal(verifier, token).reason == Reason.BAD_SIGNATURE


def test_missing_kid(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    claims = jwt.decode(mint(dev_pki), options={"verify_signature": False})
    token = jwt.encode(claims, load_ec_private_key(dev_pki.signing_key_file), algorithm="ES256")
    assert refusal(verifier, token).reason == Reason.BAD_SIGNATURE


def test_alg_none_is_rejected(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    claims = jwt.decode(mint(dev_pki), options={"verify_signature": False})
    token = jwt.encode(claims, "", algorithm="none", headers={"kid": dev_pki.signing_kid})
    assert refusal(verifier, token).reason == Reason.BAD_SIGNATURE


def test_hs256_signed_with_the_public_key_is_rejected(dev_pki: DevPki, verifier: TokenVerifier) -> None:
    # The classic confusion attack: HMAC keyed with the (public) verification key.
    # PyJWT refuses to produce such a token, so it is assembled by hand.
    claims = jwt.decode(mint(dev_pki), options={"verify_signature": False})
    public_pem = (
        load_ec_private_key(dev_pki.signing_key_file)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": dev_pki.signing_kid}
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims)
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    assert refusal(verifier, token).reason == Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", Reason.MISSING),
        ("abc", Reason.MALFORMED),
        ("a.b.c", Reason.MALFORMED),
        ("x" * 9000, Reason.MALFORMED),
        # A well-formed JWT with an empty header names no algorithm: nothing we accept.
        ("e30.e30.", Reason.BAD_SIGNATURE),
    ],
)
def test_malformed(verifier: TokenVerifier, token: str, reason: str) -> None:
    assert refusal(verifier, token).reason == reason


@pytest.mark.parametrize(
    "claims_change",
    [
        {"sub": "12345"},
        {"sub": "8123"},
        {"parcours_roles": ["superuser"]},
        {"parcours_roles": ["practitioner"]},
        {"parcours_roles": "billing"},
        {"acr": "eidas1"},
        {"parcours_roles": ["ars_officer"]},
        {"parcours_region": "PACA"},
        {"SubjectRefPro": {"codeProfession": "10"}},
        {"sub": "staff:someone"},
        {"jti": None},
    ],
)
def test_invalid_claims(dev_pki: DevPki, verifier: TokenVerifier, claims_change: dict[str, Any]) -> None:
    claims = jwt.decode(mint(dev_pki), options={"verify_signature": False})
    claims.update(claims_change)
    claims = {k: v for k, v in claims.items() if v is not None}
    token = jwt.encode(
        claims,
        load_ec_private_key(dev_pki.signing_key_file),
        algorithm="ES256",
        headers={"kid": dev_pki.signing_kid},
    )
    assert refusal(verifier, token).reason == Reason.CLAIMS_INVALID


def test_key_rotation(tmp_path: Path, dev_pki: DevPki) -> None:
    # The JWKS publishes the old and the new key: tokens signed by either verify.
    new_key = write_key(tmp_path / "new.pem")
    new_kid = kid_for_public_key(new_key.public_key())
    jwks = json.loads(dev_pki.jwks_file.read_text())
    jwks["keys"].insert(0, public_jwk(new_key.public_key()))
    rotated = tmp_path / "rotated-jwks.json"
    rotated.write_text(json.dumps(jwks))
    verifier = TokenVerifier(jwks_file=rotated, issuer=ISSUER, audience=AUDIENCE)

    old_token = mint(dev_pki)
    new_token = mint(dev_pki, signing_key_file=tmp_path / "new.pem", kid=new_kid)

    assert verifier.verify(old_token).rpps == RPPS
    assert verifier.verify(new_token).rpps == RPPS
    assert set(load_jwks(rotated)) == {dev_pki.signing_kid, new_kid}


def test_mint_refuses_what_the_verifier_would(dev_pki: DevPki) -> None:
    with pytest.raises(ValueError, match="subject"):
        mint(dev_pki, subject="10001234567")
    with pytest.raises(ValueError, match="unknown roles"):
        mint(dev_pki, roles=["admin"])
    with pytest.raises(ValueError, match="region"):
        mint(dev_pki, subject="staff:x", profession=None, specialty=None, roles=["ars_officer"])
    with pytest.raises(ValueError, match="practitioner"):
        mint(dev_pki, subject="staff:x")


def test_bearer_token_header() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    with pytest.raises(Unauthenticated) as missing:
        bearer_token(None)
    assert missing.value.reason == Reason.MISSING
    with pytest.raises(Unauthenticated) as malformed:
        bearer_token("Basic dXNlcjpwYXNz")
    assert malformed.value.reason == Reason.MALFORMED


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    """Verified tokens are remembered; a remembered token is refused once its expiry has passed."""
    pki = ensure_dev_pki(tmp_path, components=(), establishments=())
    token = mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer="iss",
        audience="aud",
        subject="810000000101",
        profession="PROFESSION_PHYSICIAN",
        specialty=None,
        ttl=timedelta(minutes=5),
    )
    now = [datetime.now(UTC)]
    verifier = TokenVerifier(
        jwks_file=pki.jwks_file, issuer="iss", audience="aud", leeway_seconds=0, clock=lambda: now[0]
    )
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # remembered: no second signature check
    now[0] += timedelta(minutes=6)
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(token)
    assert refused.value.reason == "TOKEN_EXPIRED"
