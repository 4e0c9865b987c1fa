"""The contracts roles as tokens carry them: ARS staff scoped to a region, Ordre reviewers to a territory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from parcours.options.v1 import options_pb2

from services.kit.auth import Authenticator
from services.kit.errors import Unauthenticated
from services.kit.pki import DevPki, load_ec_private_key
from services.kit.tokens import TokenVerifier, mint_token, staff_subject
from tests.support import AUDIENCE, ISSUER


@pytest.fixture(scope="module")
def authenticator(pki: DevPki) -> Authenticator:
    return Authenticator(TokenVerifier(jwks_file=pki.jwks_file, issuer=ISSUER, audience=AUDIENCE))


def staff_token(pki: DevPki, roles: list[str], **scope: Any) -> str:
    return mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=staff_subject("agent-1"),
        profession=None,
        specialty=None,
        roles=roles,
        **scope,
    )


@pytest.mark.parametrize(
    ("roles", "scope", "role", "region", "territory"),
    [
        (["ars_supervisor"], {"region": "84"}, options_pb2.ROLE_ARS_SUPERVISOR, "84", None),
        (["ars_signatory"], {"region": "93"}, options_pb2.ROLE_ARS_SIGNATORY, "93", None),
        (["ordre_reviewer"], {"territory": "42"}, options_pb2.ROLE_ORDRE_REVIEWER, None, "42"),
        (["ordre_reviewer"], {"territory": "FR"}, options_pb2.ROLE_ORDRE_REVIEWER, None, "FR"),
        (["promoter"], {}, options_pb2.ROLE_PROMOTER, None, None),
    ],
)
def test_a_token_grants_the_contracts_roles_with_their_scope(
    pki: DevPki,
    authenticator: Authenticator,
    roles: list[str],
    scope: dict[str, str],
    role: int,
    region: str | None,
    territory: str | None,
) -> None:
    token = staff_token(pki, roles, **scope)
    principal = authenticator.authenticate("420000017", {"authorization": f"Bearer {token}"})
    # Through an establishment's certificate: that establishment's role besides the token's.
    assert principal.roles == frozenset({role, options_pb2.ROLE_ESTABLISHMENT})
    assert (principal.region, principal.territory) == (region, territory)
    assert principal.establishment == "establishments/420000017"


@pytest.mark.parametrize(
    ("roles", "scope", "problem"),
    [
        (["ars_supervisor"], {}, "region"),
        (["ars_signatory"], {}, "region"),
        (["ordre_reviewer"], {}, "territory"),
        (["ordre_reviewer"], {"territory": "420"}, "territory"),
    ],
)
def test_a_scoped_role_needs_its_scope(
    pki: DevPki, roles: list[str], scope: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        staff_token(pki, roles, **scope)


def test_a_verified_token_without_its_scope_is_refused(pki: DevPki, authenticator: Authenticator) -> None:
    # Signed by the hub's key, so only the claims are wrong: an Ordre reviewer with no territory.
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "staff:agent-2",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "jti": "j-1",
        "acr": "eidas3",
        "parcours_roles": ["ordre_reviewer"],
    }
    token = jwt.encode(
        claims, load_ec_private_key(pki.signing_key_file), algorithm="ES256", headers={"kid": pki.signing_kid}
    )
    with pytest.raises(Unauthenticated) as refused:
        authenticator.authenticate("420000017", {"authorization": f"Bearer {token}"})
    assert refused.value.reason == "TOKEN_CLAIMS_INVALID"
