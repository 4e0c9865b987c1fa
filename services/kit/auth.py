"""Who is calling: the establishment (client certificate) and the acting person (bearer token).

Hospital systems present a client certificate whose CN is their FINESS; Parcours components present a
hub-issued certificate whose CN is `parcours-<component>`. The acting practitioner is named by a signed
bearer token shaped like a Pro Santé Connect access token (see services/kit/tokens.py). Handlers read one
`Principal` with `current_principal()`.

Who sees everything. Only a Parcours component acting on its own behalf (a component certificate, no token,
no acting metadata: a workflow worker recording a charge) and a hub operator see every establishment, region
and patient (`Principal.unrestricted`); every "sees everything" check in the services asks that one property,
never a role or the certificate alone.

Which components may act as the hub. A component certificate alone is not the hub: only the identities in
an explicit allow-list (`PARCOURS_HUB_COMPONENTS`, default `DEFAULT_HUB_COMPONENTS`: the workflow workers and
the services that call other services without a token) get ROLE_HUB_SERVICE without a token, and only they
may name a caller in acting metadata. Any other component certificate — the console's, which always calls
with an officer's delegate token — is refused without a token like an establishment's certificate
(UNAUTHENTICATED `TOKEN_MISSING`), acting metadata or not, so a compromised console host cannot read the hub
as the hub.

Delegation: a component acting for someone is scoped like that someone, never like the hub (`delegated`).
- A component presenting a bearer token acts for the token's person (the console sends an officer's
  delegate token): the principal has that token's roles, region and territory only — no ROLE_HUB_SERVICE,
  no establishment — and is `delegated`, so it gets no more through the component than the person would get
  by themselves. The audit still names the component (`component/<name>` where an establishment would be).
- A component serving a caller it has authenticated itself asks another service *on that caller's behalf*
  by naming the caller's establishment (and practitioner) in call metadata
  (`x-parcours-acting-establishment`, `x-parcours-acting-practitioner`; `services.kit.directory
  .acting_metadata` writes them). Those headers are honoured only from an allow-listed component's
  certificate without a token (the component vouches for a caller it has already bound to its
  establishment); from anyone else they are ignored. The principal names the acting establishment and
  practitioner, keeps ROLE_HUB_SERVICE (so the audit log shows the call came through the hub) and is
  `delegated`.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from parcours.options.v1 import options_pb2

from services.kit.errors import Unauthenticated
from services.kit.tokens import TokenVerifier, VerifiedToken, bearer_token

Role = options_pb2.Role

FINESS_RE = re.compile(r"^(?:[0-9]{2}|2[AB])[0-9]{7}$")
RPPS_RE = re.compile(r"^[0-9]{11}$")
COMPONENT_PREFIX = "parcours-"
# Call metadata by which a component names the caller it acts for (see the module docstring).
ACTING_ESTABLISHMENT_HEADER = "x-parcours-acting-establishment"
ACTING_PRACTITIONER_HEADER = "x-parcours-acting-practitioner"

# The component identities (CN `parcours-<name>`) that act as the hub without a token, unless the settings
# say otherwise (`KitSettings.hub_components`): the workflow workers (recording charges, reading patients for
# the record) and the services that ask others without a token — scheduling and expertise the directory,
# billing the directory and contracts, contracts the directory. Not the console (it always calls with an
# officer's delegate token) nor `cli` (the tools call with a hub operator's token; health needs no principal).
DEFAULT_HUB_COMPONENTS: frozenset[str] = frozenset(
    {"workflows", "scheduling", "expertise", "billing", "contracts"}
)

_TOKEN_ROLES: Mapping[str, int] = {
    "hub_operator": options_pb2.ROLE_HUB_OPERATOR,
    "billing": options_pb2.ROLE_BILLING,
    "ars_officer": options_pb2.ROLE_ARS_OFFICER,
    "ars_supervisor": options_pb2.ROLE_ARS_SUPERVISOR,
    "ars_signatory": options_pb2.ROLE_ARS_SIGNATORY,
    "ordre_reviewer": options_pb2.ROLE_ORDRE_REVIEWER,
    "promoter": options_pb2.ROLE_PROMOTER,
}


@dataclass(frozen=True)
class Principal:
    """The caller of an RPC."""

    # `establishments/{finess}` for a hospital system; '' for a hub component.
    establishment: str
    # The hub component for a Parcours component's certificate ('' otherwise).
    component: str
    # `practitioners/{rpps}` when the token names a health professional.
    practitioner: str
    # The token subject ("8"+RPPS or "staff:<id>"); '' without a token.
    subject: str
    profession: str | None
    specialty: str | None
    roles: frozenset[int]  # parcours.options.v1.Role values
    # ARS region code for ARS staff (officer, supervisor, signatory).
    region: str | None = None
    # A component acting for someone: the person of the token it presents, or the establishment (and
    # practitioner) above, named in its call metadata. Scoped like them, never like the hub.
    delegated: bool = False
    # An Ordre reviewer's territory: a département code, or `FR` for the national council.
    territory: str | None = None

    def has_any(self, roles: Iterable[int]) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def hub_component(self) -> bool:
        """A Parcours component acting on its own behalf (not for a token's person or a named caller)."""
        return bool(self.component) and not self.delegated and options_pb2.ROLE_HUB_SERVICE in self.roles

    @property
    def unrestricted(self) -> bool:
        """Sees every establishment, region and patient: a hub component acting on its own behalf, or a hub
        operator (a role only a verified token gives, through whatever certificate it is presented). A
        component acting for anyone else gets nothing more than they would: its ROLE_HUB_SERVICE does not
        count then."""
        return self.hub_component or options_pb2.ROLE_HUB_OPERATOR in self.roles

    @property
    def rpps(self) -> str | None:
        return self.practitioner.removeprefix("practitioners/") if self.practitioner else None

    def role_names(self) -> list[str]:
        return list(_role_names(self.roles))


# A server sees a handful of role sets; their names are written in every span and audit record.
@functools.lru_cache(maxsize=256)
def _role_names(roles: frozenset[int]) -> tuple[str, ...]:
    return tuple(sorted(options_pb2.Role.Name(options_pb2.Role.ValueType(r)) for r in roles))


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "parcours_principal", default=None
)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        # Only reachable if a handler runs outside the kit's interceptors.
        raise Unauthenticated("NO_PRINCIPAL", "the call carries no authenticated principal")
    return principal


def set_principal(principal: Principal) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


@dataclass(frozen=True)
class PeerIdentity:
    establishment: str
    component: str


def peer_identity(common_name: str | None) -> PeerIdentity:
    """The establishment or hub component a verified client certificate names."""
    if common_name is None:
        raise Unauthenticated("CLIENT_CERTIFICATE_REQUIRED", "a client certificate is required")
    if FINESS_RE.match(common_name):
        return PeerIdentity(establishment=f"establishments/{common_name}", component="")
    if common_name.startswith(COMPONENT_PREFIX) and len(common_name) > len(COMPONENT_PREFIX):
        return PeerIdentity(establishment="", component=common_name.removeprefix(COMPONENT_PREFIX))
    raise Unauthenticated(
        "CLIENT_CERTIFICATE_UNRECOGNISED",
        "the client certificate names neither an establishment (FINESS) nor a Parcours component",
    )


def _token_roles(token: VerifiedToken) -> set[int]:
    roles: set[int] = set()
    if token.rpps:
        roles.add(options_pb2.ROLE_PRACTITIONER)
    for name in token.roles:
        role = _TOKEN_ROLES.get(name)
        if role is not None:
            roles.add(role)
    return roles


class Authenticator:
    """Builds the principal of a call from its certificate and its token."""

    def __init__(
        self,
        verifier: TokenVerifier | None,
        *,
        insecure_dev_mode: bool = False,
        hub_components: Iterable[str] = DEFAULT_HUB_COMPONENTS,
    ) -> None:
        self._verifier = verifier
        self._insecure = insecure_dev_mode
        self._hub_components = frozenset(hub_components)

    def authenticate(self, common_name: str | None, metadata: Mapping[str, str]) -> Principal:
        if self._insecure and common_name is None:
            peer = PeerIdentity(
                establishment=metadata.get("x-parcours-dev-establishment", ""), component="dev"
            )
        else:
            peer = peer_identity(common_name)
        authorization = metadata.get("authorization")
        raw = None if authorization is None else bearer_token(authorization)
        if raw is None:
            if peer.component in self._hub_components or (self._insecure and peer.component == "dev"):
                delegated = _delegation(peer.component, metadata)
                if delegated is not None:
                    return delegated
                # A Parcours component acting on its own behalf (a workflow worker recording a charge).
                roles: set[int] = {options_pb2.ROLE_HUB_SERVICE}
                if self._insecure and peer.component == "dev":
                    roles = {int(r) for r in options_pb2.Role.values()} - {options_pb2.ROLE_UNSPECIFIED}
                return Principal(
                    establishment=peer.establishment,
                    component=peer.component,
                    practitioner="",
                    subject="",
                    profession=None,
                    specialty=None,
                    roles=frozenset(roles),
                )
            raise Unauthenticated("TOKEN_MISSING", "a bearer token naming the acting person is required")
        if self._verifier is None:
            raise Unauthenticated("TOKEN_UNVERIFIABLE", "this server has no token keys configured")
        token = self._verifier.verify(raw)
        roles = _token_roles(token)
        if peer.establishment:
            roles.add(options_pb2.ROLE_ESTABLISHMENT)
        return Principal(
            establishment=peer.establishment,
            component=peer.component,
            practitioner=f"practitioners/{token.rpps}" if token.rpps else "",
            subject=token.subject,
            profession=token.profession,
            specialty=token.specialty,
            roles=frozenset(roles),
            region=token.region,
            territory=token.territory,
            # A component presenting a token acts for the token's person: their roles and scope only.
            delegated=bool(peer.component),
        )


def _delegation(component: str, metadata: Mapping[str, str]) -> Principal | None:
    """The principal of a component acting for the caller its metadata names; None when it names none."""
    establishment = metadata.get(ACTING_ESTABLISHMENT_HEADER)
    practitioner = metadata.get(ACTING_PRACTITIONER_HEADER, "")
    if establishment is None:
        if practitioner:
            raise Unauthenticated(
                "DELEGATION_MALFORMED", "an acting practitioner is named only with their establishment"
            )
        return None
    if not (
        establishment.startswith("establishments/")
        and FINESS_RE.match(establishment.removeprefix("establishments/"))
        and (not practitioner or RPPS_RE.match(practitioner.removeprefix("practitioners/")))
        and (not practitioner or practitioner.startswith("practitioners/"))
    ):
        raise Unauthenticated(
            "DELEGATION_MALFORMED",
            "acting metadata must name establishments/{finess} and optionally practitioners/{rpps}",
        )
    return Principal(
        establishment=establishment,
        component=component,
        practitioner=practitioner,
        subject="",
        profession=None,
        specialty=None,
        roles=frozenset({options_pb2.ROLE_HUB_SERVICE}),
        delegated=True,
    )
