"""Bearer tokens shaped like Pro Santé Connect (PSC) access tokens: minting (development) and verification.

A practitioner's token names them by RPPS (`sub` = "8" + 11 digits, as PSC does) and carries their profession
and specialty in `SubjectRefPro`; hub staff (operators, billing clerks, ARS officers) have `sub` =
"staff:<id>". Extra roles travel in `parcours_roles`, ARS staff's region in `parcours_region`, an Ordre
reviewer's territory (a département, or `FR` for the national council) in `parcours_territory`.

Only ES256 signatures from a key of the configured JWKS are accepted. Every refusal is an `Unauthenticated`
error with a stable reason; no message ever repeats the token.

    python -m services.kit.tokens mint --pki-dir .data/pki --rpps 10003456789 \
        --profession PROFESSION_PHYSICIAN --specialty SPECIALTY_CARDIOLOGY
    python -m services.kit.tokens mint --pki-dir .data/pki --staff ops --role hub_operator

The kit knows no practitioner: for the demo region's, `python -m services.devstack.tokens` fills in their
profession and specialty and lists where each practises.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from services.kit.errors import Unauthenticated
from services.kit.pki import kid_for_public_key, load_ec_private_key

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
ACR = "eidas3"

ROLE_PRACTITIONER = "practitioner"
ROLE_HUB_OPERATOR = "hub_operator"
ROLE_BILLING = "billing"
ROLE_ARS_OFFICER = "ars_officer"
ROLE_ARS_SUPERVISOR = "ars_supervisor"
ROLE_ARS_SIGNATORY = "ars_signatory"
ROLE_ORDRE_REVIEWER = "ordre_reviewer"
ROLE_PROMOTER = "promoter"
# Roles a token may grant in `parcours_roles`; "practitioner" is never listed, an RPPS subject implies it.
EXTRA_ROLES = frozenset(
    {
        ROLE_HUB_OPERATOR,
        ROLE_BILLING,
        ROLE_ARS_OFFICER,
        ROLE_ARS_SUPERVISOR,
        ROLE_ARS_SIGNATORY,
        ROLE_ORDRE_REVIEWER,
        ROLE_PROMOTER,
    }
)
# Roles scoped to one ARS region (their token names it).
REGION_ROLES = frozenset({ROLE_ARS_OFFICER, ROLE_ARS_SUPERVISOR, ROLE_ARS_SIGNATORY})


class Reason:
    """Stable `Unauthenticated` reasons (google.rpc.ErrorInfo.reason) of a refused token."""

    MISSING = "TOKEN_MISSING"
    MALFORMED = "TOKEN_MALFORMED"
    EXPIRED = "TOKEN_EXPIRED"
    NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
    WRONG_ISSUER = "TOKEN_WRONG_ISSUER"
    WRONG_AUDIENCE = "TOKEN_WRONG_AUDIENCE"
    # Also: not ES256, or signed by a key the JWKS does not hold.
    BAD_SIGNATURE = "TOKEN_BAD_SIGNATURE"
    CLAIMS_INVALID = "TOKEN_CLAIMS_INVALID"


# A PSC token is about 1-2 KiB; anything far larger is not one and is not worth parsing.
MAX_TOKEN_LENGTH = 8192

_RPPS_SUBJECT_RE = re.compile(r"^8([0-9]{11})$")
_STAFF_SUBJECT_RE = re.compile(r"^staff:[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_PROFESSION_RE = re.compile(r"^PROFESSION_[A-Z0-9_]+$")
_SPECIALTY_RE = re.compile(r"^SPECIALTY_[A-Z0-9_]+$")
# INSEE region code (2 digits), as `regions/{code}` in the directory.
_REGION_RE = re.compile(r"^[0-9]{2}$")
# An Ordre council's territory: a département (`42`, `2A`, `971`), or `FR` for the national council.
_TERRITORY_RE = re.compile(r"^(?:[0-9]{2}|2A|2B|97[1-6]|FR)$")
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]


@dataclass(frozen=True)
class VerifiedToken:
    """The principal a valid token names."""

    subject: str
    # The RPPS when the subject is a practitioner ("8" + 11 digits), else None.
    rpps: str | None
    profession: str | None
    specialty: str | None
    roles: frozenset[str]
    region: str | None
    token_id: str
    expires_at: datetime
    given_name: str = ""
    family_name: str = ""
    # An Ordre reviewer's territory.
    territory: str | None = None


def practitioner_subject(rpps: str) -> str:
    """The PSC subject of a practitioner: "8" followed by their 11-digit RPPS."""
    subject = "8" + rpps
    if not _RPPS_SUBJECT_RE.fullmatch(subject):
        raise ValueError("an RPPS is 11 digits")
    return subject


def staff_subject(staff_id: str) -> str:
    subject = "staff:" + staff_id
    if not _STAFF_SUBJECT_RE.fullmatch(subject):
        raise ValueError("a staff id is 1-64 characters among letters, digits and . _ @ -")
    return subject


def bearer_token(authorization: str | None) -> str:
    """The token of an `authorization: Bearer <token>` header value; TOKEN_MISSING / TOKEN_MALFORMED."""
    if authorization is None or not authorization.strip():
        raise Unauthenticated(Reason.MISSING, "a bearer token is required (authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(Reason.MALFORMED, "the authorization header is not 'Bearer <token>'")
    return token.strip()


def mint_token(
    *,
    signing_key_file: Path,
    kid: str,
    issuer: str,
    audience: str,
    subject: str,
    profession: str | None,
    specialty: str | None,
    roles: Sequence[str] = (),
    region: str | None = None,
    territory: str | None = None,
    given_name: str = "",
    family_name: str = "",
    ttl: timedelta = timedelta(hours=8),
    now: datetime | None = None,
) -> str:
    """Sign a PSC-shaped access token (development and tests; production tokens come from PSC)."""
    is_practitioner = _RPPS_SUBJECT_RE.fullmatch(subject) is not None
    if not is_practitioner and not _STAFF_SUBJECT_RE.fullmatch(subject):
        raise ValueError("subject must be '8' + an 11-digit RPPS or 'staff:<id>'")
    if not is_practitioner and (profession or specialty):
        raise ValueError("only a practitioner (RPPS subject) has a profession and specialty")
    if is_practitioner and profession is None and specialty is not None:
        raise ValueError("a specialty needs a profession")
    if profession is not None and not _PROFESSION_RE.fullmatch(profession):
        raise ValueError(f"profession must be a Profession enum name, not {profession!r}")
    if specialty is not None and not _SPECIALTY_RE.fullmatch(specialty):
        raise ValueError(f"specialty must be a Specialty enum name, not {specialty!r}")
    unknown = set(roles) - EXTRA_ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; allowed: {sorted(EXTRA_ROLES)}")
    if region is not None and not _REGION_RE.fullmatch(region):
        raise ValueError("region must be a 2-digit INSEE region code")
    if REGION_ROLES.intersection(roles) and region is None:
        raise ValueError("an ARS staff token names their region")
    if territory is not None and not _TERRITORY_RE.fullmatch(territory):
        raise ValueError("territory must be a département code or FR")
    if ROLE_ORDRE_REVIEWER in roles and territory is None:
        raise ValueError("an Ordre reviewer's token names their territory")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")

    issued = (now or datetime.now(UTC)).astimezone(UTC)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": int(issued.timestamp()),
        "nbf": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": str(uuid.uuid4()),
        "acr": ACR,
        "preferred_username": subject,
        "given_name": given_name,
        "family_name": family_name,
        "parcours_roles": sorted(set(roles)),
    }
    if profession is not None:
        claims["SubjectRefPro"] = {"codeProfession": profession, "codeSavoirFaire": specialty or ""}
    if region is not None:
        claims["parcours_region"] = region
    if territory is not None:
        claims["parcours_territory"] = territory
    key = load_ec_private_key(signing_key_file)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


class TokenVerifier:
    """Verifies tokens against the public keys of a JWKS file, read once at construction.

    A hospital system sends the same token with many calls, and an ES256 verification costs about 0.3 ms:
    tokens already verified are remembered (bounded, least recently used first out) until they expire, so
    a repeated token costs a dictionary lookup and an expiry check. Only verified tokens are remembered.
    """

    CACHE_SIZE = 4096

    def __init__(
        self,
        *,
        jwks_file: Path,
        issuer: str,
        audience: str,
        leeway_seconds: int = 30,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = load_jwks(jwks_file)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._clock = clock
        self._verified: OrderedDict[str, VerifiedToken] = OrderedDict()
        logger.info("token verifier: %d key(s) from %s", len(self._keys), jwks_file)

    def verify(self, token: str) -> VerifiedToken:
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at + timedelta(seconds=self._leeway) <= self._clock():
                del self._verified[token]
                raise Unauthenticated(Reason.EXPIRED, "the token has expired")
            self._verified.move_to_end(token)
            return known
        verified = self._verify(token)
        self._verified[token] = verified
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return verified

    def _verify(self, token: str) -> VerifiedToken:
        if not token:
            raise Unauthenticated(Reason.MISSING, "a bearer token is required")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(Reason.MALFORMED, "the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated(Reason.MALFORMED, "the token is not a JWT") from None
        # Checked before anything else so that `none` or an HMAC made with a public key as the secret
        # never reach a verification routine.
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(Reason.BAD_SIGNATURE, f"only {ALGORITHM} tokens are accepted")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated(Reason.BAD_SIGNATURE, "the token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(Reason.BAD_SIGNATURE, "the token's signature is not valid") from None
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(Reason.EXPIRED, "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(Reason.NOT_YET_VALID, "the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(Reason.WRONG_ISSUER, "the token was issued by another issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(Reason.WRONG_AUDIENCE, "the token is meant for another audience") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(Reason.BAD_SIGNATURE, f"only {ALGORITHM} tokens are accepted") from None
        except (jwt.MissingRequiredClaimError, jwt.InvalidIssuedAtError):
            raise Unauthenticated(Reason.CLAIMS_INVALID, "the token's claims are incomplete") from None
        except jwt.DecodeError:
            raise Unauthenticated(Reason.MALFORMED, "the token is not a valid JWT") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated(Reason.CLAIMS_INVALID, "the token's claims are not valid") from None
        return _principal(claims)


def load_jwks(jwks_file: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid → public key of every ES256 key of a JWKS file. A malformed file is a configuration error."""
    try:
        document = json.loads(jwks_file.read_text())
        entries = document["keys"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{jwks_file}: not a readable JWKS ({exc.__class__.__name__})") from None
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ValueError(f"{jwks_file}: a key is not an object")
        kid = entry.get("kid")
        alg = entry.get("alg", ALGORITHM)
        if entry.get("kty") != "EC" or entry.get("crv") != "P-256" or alg != ALGORITHM:
            logger.warning("%s: skipping key %s, not an ES256 key", jwks_file, kid)
            continue
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{jwks_file}: an ES256 key has no kid")
        if kid in keys:
            raise ValueError(f"{jwks_file}: kid {kid} appears twice")
        try:
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(_b64url_decode(entry["x"]), "big"),
                int.from_bytes(_b64url_decode(entry["y"]), "big"),
                ec.SECP256R1(),
            )
            keys[kid] = numbers.public_key()
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"{jwks_file}: key {kid} is not a valid P-256 point") from None
    if not keys:
        raise ValueError(f"{jwks_file}: no ES256 key")
    return keys


def _principal(claims: Mapping[str, Any]) -> VerifiedToken:
    def invalid(why: str) -> Unauthenticated:
        return Unauthenticated(Reason.CLAIMS_INVALID, f"the token's claims are not valid: {why}")

    subject = claims["sub"]
    if not isinstance(subject, str):
        raise invalid("sub")
    rpps_match = _RPPS_SUBJECT_RE.fullmatch(subject)
    if rpps_match is None and not _STAFF_SUBJECT_RE.fullmatch(subject):
        raise invalid("sub is neither an RPPS nor a staff id")
    if claims.get("acr") != ACR:
        raise invalid("acr")
    token_id = claims["jti"]
    if not isinstance(token_id, str) or not token_id:
        raise invalid("jti")

    extra_roles = claims.get("parcours_roles", [])
    if not isinstance(extra_roles, list) or not all(isinstance(r, str) for r in extra_roles):
        raise invalid("parcours_roles")
    unknown = set(extra_roles) - EXTRA_ROLES
    if unknown:
        raise invalid(f"unknown roles {sorted(unknown)}")
    roles = set(extra_roles)
    if rpps_match is not None:
        roles.add(ROLE_PRACTITIONER)

    region = claims.get("parcours_region")
    if region is not None and (not isinstance(region, str) or not _REGION_RE.fullmatch(region)):
        raise invalid("parcours_region")
    if REGION_ROLES.intersection(roles) and region is None:
        raise invalid("an ARS staff token names no region")
    territory = claims.get("parcours_territory")
    if territory is not None and (not isinstance(territory, str) or not _TERRITORY_RE.fullmatch(territory)):
        raise invalid("parcours_territory")
    if ROLE_ORDRE_REVIEWER in roles and territory is None:
        raise invalid("an Ordre reviewer's token names no territory")

    profession: str | None = None
    specialty: str | None = None
    ref_pro = claims.get("SubjectRefPro")
    if ref_pro is not None:
        if rpps_match is None:
            raise invalid("SubjectRefPro on a staff token")
        if not isinstance(ref_pro, Mapping):
            raise invalid("SubjectRefPro")
        code_profession = ref_pro.get("codeProfession")
        code_specialty = ref_pro.get("codeSavoirFaire") or None
        if not isinstance(code_profession, str) or not _PROFESSION_RE.fullmatch(code_profession):
            raise invalid("SubjectRefPro.codeProfession")
        if code_specialty is not None and (
            not isinstance(code_specialty, str) or not _SPECIALTY_RE.fullmatch(code_specialty)
        ):
            raise invalid("SubjectRefPro.codeSavoirFaire")
        profession, specialty = code_profession, code_specialty

    given_name = claims.get("given_name", "")
    family_name = claims.get("family_name", "")
    return VerifiedToken(
        subject=subject,
        rpps=rpps_match.group(1) if rpps_match else None,
        profession=profession,
        specialty=specialty,
        roles=frozenset(roles),
        region=region,
        token_id=token_id,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        given_name=given_name if isinstance(given_name, str) else "",
        family_name=family_name if isinstance(family_name, str) else "",
        territory=territory,
    )


def _b64url_decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError("base64url member expected")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _setting_default(name: str) -> str:
    # The CLI's defaults are the servers' defaults, so a minted token verifies with no flags on either side.
    from services.kit.settings import KitSettings

    default = KitSettings.model_fields[name].default
    assert isinstance(default, str)
    return default


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.kit.tokens", description="Development tokens shaped like PSC access tokens."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a development token signed with the dev PKI's key")
    add_mint_arguments(mint)
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--rpps", help="a practitioner's 11-digit RPPS (needs --profession)")
    who.add_argument("--staff", metavar="ID", help="a hub staff member's id")
    mint.add_argument("--profession", help="a Profession enum name, e.g. PROFESSION_PHYSICIAN")
    mint.add_argument("--specialty", help="a Specialty enum name, e.g. SPECIALTY_CARDIOLOGY")
    args = parser.parse_args(argv)
    if args.rpps is not None:
        if args.profession is None:
            parser.error(
                "--rpps needs --profession (a demo practitioner's are filled in by "
                "`python -m services.devstack.tokens mint --rpps ...`)"
            )
        try:
            subject = practitioner_subject(args.rpps)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        if args.profession or args.specialty:
            parser.error("a staff token has no profession or specialty")
        try:
            subject = staff_subject(args.staff)
        except ValueError as exc:
            parser.error(str(exc))
    print(mint_from_arguments(parser, args, subject, args.profession, args.specialty))
    return 0


def add_mint_arguments(parser: argparse.ArgumentParser, *, pki_dir: Path | None = None) -> None:
    """The options every `mint` command shares (this one and the dev stack's)."""
    parser.add_argument(
        "--pki-dir",
        type=Path,
        required=pki_dir is None,
        default=pki_dir,
        help="the dev PKI folder (e.g. .data/pki)" + (f"; default {pki_dir}" if pki_dir else ""),
    )
    parser.add_argument("--role", action="append", default=[], choices=sorted(EXTRA_ROLES))
    parser.add_argument("--region", metavar="CODE", help="INSEE region code (ARS staff), e.g. 84")
    parser.add_argument("--territory", metavar="CODE", help="Ordre reviewer's département, or FR, e.g. 42")
    parser.add_argument("--ttl-hours", type=float, default=8.0)
    parser.add_argument("--issuer", default=_setting_default("token_issuer"))
    parser.add_argument("--audience", default=_setting_default("token_audience"))


def mint_from_arguments(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    subject: str,
    profession: str | None,
    specialty: str | None,
    *,
    given_name: str = "",
    family_name: str = "",
) -> str:
    """A token for `subject` signed with the key of `--pki-dir`; usage errors through `parser`."""
    key_file = args.pki_dir / "token-signing-key.pem"
    if not key_file.exists():
        parser.error(f"{key_file} does not exist: run `make run` or `python -m services.kit.pki` first")
    try:
        return mint_token(
            signing_key_file=key_file,
            kid=kid_for_public_key(load_ec_private_key(key_file).public_key()),
            issuer=args.issuer,
            audience=args.audience,
            subject=subject,
            profession=profession,
            specialty=specialty,
            roles=args.role,
            region=args.region,
            territory=args.territory,
            given_name=given_name,
            family_name=family_name,
            ttl=timedelta(hours=args.ttl_hours),
        )
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
