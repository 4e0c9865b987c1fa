"""A Parcours component presenting a bearer token acts for the token's person, never as the hub (issue 9).

The console calls the services with its own component certificate and an officer's five-minute delegate
token. Such a call used to get the token's roles plus ROLE_HUB_SERVICE, not `delegated`: billing, scheduling,
the directory and the activity reports then took an ARS officer's token sent through the console's
certificate (or any token, sent by anyone holding a component's certificate) for the hub itself — every
establishment's charges in every region, with their patients. Written as that attacker: the token's person
gets through a component exactly what their token gives them, never more; a token that does not verify is
UNAUTHENTICATED, never a fallback to the component's own identity.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import jwt
import pytest
import temporalio.client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.options.v1 import options_pb2
from parcours.scheduling.v1 import scheduling_pb2, scheduling_pb2_grpc

from services.kit.auth import ACTING_ESTABLISHMENT_HEADER, Authenticator
from services.kit.pki import DevPki
from services.kit.server import open_channel
from services.kit.tokens import TokenVerifier, mint_token
from tests.billing.builders import DERM, GP, GP_REUNION, gp, paris, teleconsultation, teleexpertise
from tests.conftest import Minter
from tests.directory.builders import register
from tests.scheduling.conftest import scheduling_settings
from tests.support import (
    AUDIENCE,
    DAUPHINE,
    ISSUER,
    LOIRE,
    REUNION,
    bearer,
    component_channel,
    establishment_channel,
    request_id,
)
from tests.support.calls import call, details

Metadata = tuple[tuple[str, str], ...]
# Acts recorded here are dated in a month no other test bills (the period asked below).
SEPTEMBER_2023 = {
    "start_date": date_pb2.Date(year=2023, month=9, day=1),
    "end_date": date_pb2.Date(year=2023, month=9, day=30),
}


def _charges(**filters: str) -> billing_pb2.ListChargesRequest:
    return billing_pb2.ListChargesRequest(page_size=500, **SEPTEMBER_2023, **filters)  # type: ignore[arg-type]


async def _refused(coro: object) -> tuple[grpc.StatusCode, str]:
    error = await call(coro)
    info, _ = details(error)
    return error.code(), info.reason if info is not None else ""


@pytest.fixture(scope="module")
def officer84(mint: Minter) -> Metadata:
    """The console's delegate token of an ARS officer of region 84 (as services/console/security.py mints)."""
    return bearer(mint(staff="agent84", roles=["ars_officer"], region="84", ttl=timedelta(minutes=5)))


@pytest.fixture(scope="module")
async def ledger(pki: DevPki, billing_address: str, directory_address: str, mint: Minter) -> dict[str, str]:
    """Patients known at Loire (region 84) and at La Réunion (region 04), and what the hub's workflows billed
    for them in September 2023: names of a patient and of a charge of each region."""
    operator = bearer(mint(staff="ops-component-tokens", roles=["hub_operator"]))
    directory = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    hub = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))
    found: dict[str, str] = {}
    for region, finess, act in (
        ("84", LOIRE, teleexpertise(paris("2023-09-12 10:00"))),
        (
            "04",
            REUNION,
            teleconsultation(paris("2023-09-13 10:00"), gp(GP_REUNION), region="04", establishment=REUNION),
        ),
    ):
        patient = (await register(directory, operator, finess)).name
        recorded = await hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act
            )
        )
        found[f"patient{region}"] = patient
        found[f"charge{region}"] = recorded.charges[0].name
    found["patient_dauphine"] = (await register(directory, operator, DAUPHINE)).name
    return found


@pytest.fixture(scope="module")
async def scheduling_address(
    pki: DevPki,
    database_url: str,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    temporal_client: temporalio.client.Client,
) -> AsyncIterator[str]:
    """The scheduling service's gRPC server alone (no outbox relay: it would race the suite's own)."""
    from services.scheduling.server import build

    settings = scheduling_settings(pki, database_url, directory_address, "127.0.0.1:1")
    directory = open_channel(settings, directory_address)
    runtime = await build(settings, seeded_pool, temporal=temporal_client, directory=directory)
    await runtime.kit.start()
    await runtime.kit.set_serving(True)
    try:
        yield f"127.0.0.1:{runtime.port}"
    finally:
        await runtime.kit.stop(0.5)
        await directory.close()


# --- the principal ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"staff": "agent84", "roles": ["ars_officer"], "region": "84"}, {options_pb2.ROLE_ARS_OFFICER}),
        ({"rpps": GP}, {options_pb2.ROLE_PRACTITIONER}),
        # A valid token naming nobody in particular gives no role at all, through a component as elsewhere.
        ({"staff": "someone"}, set()),
    ],
)
def test_a_token_through_a_component_certificate_is_its_person_not_the_hub(
    pki: DevPki, mint: Minter, claims: dict[str, object], roles: set[int]
) -> None:
    authenticator = Authenticator(TokenVerifier(jwks_file=pki.jwks_file, issuer=ISSUER, audience=AUDIENCE))
    token = mint(**claims)
    principal = authenticator.authenticate("parcours-console", dict(bearer(token)))
    assert principal.roles == frozenset(roles)
    assert principal.delegated and not principal.unrestricted and not principal.hub_component
    # The audit still shows the call came through the console.
    assert (principal.component, principal.establishment) == ("console", "")

    # Acting metadata cannot lend it an establishment either: with a token, the token's person acts.
    lent = authenticator.authenticate(
        "parcours-console", {**dict(bearer(token)), ACTING_ESTABLISHMENT_HEADER: f"establishments/{LOIRE}"}
    )
    assert lent == principal

    # The same certificate without a token is the component acting for itself.
    itself = authenticator.authenticate("parcours-workflows", {})
    assert itself.hub_component and itself.unrestricted and not itself.delegated


def test_a_hub_operator_token_through_a_component_certificate_keeps_the_operator_s_reach(
    pki: DevPki, mint: Minter
) -> None:
    # Hub staff have no establishment: their tools (the demo loader, `tokens`, the console) present a
    # component certificate; the operator's reach is the token's, never the component's ROLE_HUB_SERVICE.
    authenticator = Authenticator(TokenVerifier(jwks_file=pki.jwks_file, issuer=ISSUER, audience=AUDIENCE))
    operator = authenticator.authenticate(
        "parcours-cli", dict(bearer(mint(staff="ops", roles=["hub_operator"])))
    )
    assert operator.roles == frozenset({options_pb2.ROLE_HUB_OPERATOR})
    assert operator.unrestricted and not operator.hub_component


# --- an ARS officer's delegate token through the console's certificate --------------------------------------


async def test_an_ars_officer_through_the_console_reads_no_establishments_charges_in_any_region(
    pki: DevPki, billing_address: str, ledger: dict[str, str], officer84: Metadata
) -> None:
    console = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "console"))
    denied = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    for finess in (LOIRE, REUNION):
        establishment = f"establishments/{finess}"
        listed = console.ListCharges(_charges(establishment=establishment), metadata=officer84)
        assert await _refused(listed) == denied
        assert (
            await _refused(
                console.ExportCharges(
                    billing_pb2.ExportChargesRequest(
                        establishment=establishment, format=billing_pb2.EXPORT_FORMAT_CSV, **SEPTEMBER_2023
                    ),
                    metadata=officer84,
                )
            )
            == denied
        )
    for charge in (ledger["charge84"], ledger["charge04"]):
        assert (
            await _refused(console.GetCharge(billing_pb2.GetChargeRequest(name=charge), metadata=officer84))
            == denied
        )
    # Nor by naming an establishment to act for: a token's person is never someone else.
    acting = (*officer84, (ACTING_ESTABLISHMENT_HEADER, f"establishments/{LOIRE}"))
    assert await _refused(console.ListCharges(_charges(), metadata=acting)) == denied


async def test_an_ars_officer_through_the_console_reads_no_patient_and_no_appointment(
    pki: DevPki,
    directory_address: str,
    scheduling_address: str,
    ledger: dict[str, str],
    officer84: Metadata,
) -> None:
    directory = directory_pb2_grpc.DirectoryServiceStub(component_channel(pki, directory_address, "console"))
    denied = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    for patient in (ledger["patient84"], ledger["patient04"]):
        assert (
            await _refused(
                directory.GetPatient(directory_pb2.GetPatientRequest(name=patient), metadata=officer84)
            )
            == denied
        )
    scheduling = scheduling_pb2_grpc.SchedulingServiceStub(
        component_channel(pki, scheduling_address, "console")
    )
    for finess in (LOIRE, REUNION):
        assert (
            await _refused(
                scheduling.ListAppointments(
                    scheduling_pb2.ListAppointmentsRequest(establishment=f"establishments/{finess}"),
                    metadata=officer84,
                )
            )
            == denied
        )
    # What an officer may read, they read as themselves: their region's activity, not another's.
    refused = await _refused(
        scheduling.GetTeleconsultationActivityReport(
            scheduling_pb2.GetTeleconsultationActivityReportRequest(
                start_month=date_pb2.Date(year=2023, month=9),
                end_month=date_pb2.Date(year=2023, month=9),
                region="regions/04",
            ),
            metadata=officer84,
        )
    )
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "REPORT_SCOPE_NOT_VISIBLE")


async def test_a_token_naming_nobody_through_a_component_gets_nothing(
    pki: DevPki, billing_address: str, directory_address: str, ledger: dict[str, str], mint: Minter
) -> None:
    nobody = bearer(mint(staff="not-an-officer"))
    # Any component's certificate: the workflows' own, with a token, acts for that token's person.
    billing = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))
    directory = directory_pb2_grpc.DirectoryServiceStub(
        component_channel(pki, directory_address, "workflows")
    )
    denied = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    assert await _refused(billing.ListCharges(_charges(), metadata=nobody)) == denied
    assert (
        await _refused(
            directory.GetPatient(directory_pb2.GetPatientRequest(name=ledger["patient84"]), metadata=nobody)
        )
        == denied
    )


# --- a practitioner's token through a component's certificate -----------------------------------------------


async def test_a_practitioner_through_a_component_gets_no_more_than_through_their_establishment(
    pki: DevPki, billing_address: str, directory_address: str, ledger: dict[str, str], mint: Minter
) -> None:
    doctor = bearer(mint(rpps=GP))
    through_loire = billing_pb2_grpc.BillingServiceStub(establishment_channel(pki, billing_address, LOIRE))
    through_component = billing_pb2_grpc.BillingServiceStub(
        component_channel(pki, billing_address, "console")
    )

    # Their own lines: the same through either.
    own = _charges(practitioner=f"practitioners/{GP}")
    mine = await through_loire.ListCharges(own, metadata=doctor)
    assert mine.charges
    assert list((await through_component.ListCharges(own, metadata=doctor)).charges) == list(mine.charges)

    # Another practitioner's lines: refused through either.
    for stub in (through_loire, through_component):
        assert await _refused(
            stub.ListCharges(_charges(practitioner=f"practitioners/{DERM}"), metadata=doctor)
        ) == (grpc.StatusCode.PERMISSION_DENIED, "PRACTITIONER_NOT_CALLER")
    # Without a filter, or naming a Réunion establishment: still only their own lines.
    everything = await through_component.ListCharges(_charges(), metadata=doctor)
    assert {c.practitioner for c in everything.charges} == {f"practitioners/{GP}"}
    reunion = await through_component.ListCharges(
        _charges(establishment=f"establishments/{REUNION}"), metadata=doctor
    )
    assert list(reunion.charges) == []
    assert await _refused(
        through_component.GetCharge(billing_pb2.GetChargeRequest(name=ledger["charge04"]), metadata=doctor)
    ) == (grpc.StatusCode.PERMISSION_DENIED, "CHARGE_NOT_VISIBLE")

    # A patient of another GHT: hidden through either (and through the component, no establishment's
    # patients at all: the component lends it none).
    for channel in (
        establishment_channel(pki, directory_address, LOIRE),
        component_channel(pki, directory_address, "console"),
    ):
        directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        assert await _refused(
            directory.GetPatient(
                directory_pb2.GetPatientRequest(name=ledger["patient_dauphine"]), metadata=doctor
            )
        ) == (grpc.StatusCode.PERMISSION_DENIED, "PATIENT_NOT_VISIBLE")

    # Billing a line in another doctor's name (the dermatologist's TE2), which only the hub's workflows do.
    act = teleexpertise(paris("2023-09-20 10:00"), requester=gp())
    refused = await _refused(
        through_component.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(),
                act_id=f"act-{uuid.uuid4()}",
                patient=ledger["patient84"],
                act=act,
            ),
            metadata=doctor,
        )
    )
    assert refused[0] == grpc.StatusCode.PERMISSION_DENIED


# --- tokens that do not verify ------------------------------------------------------------------------------


def _forged(tmp_path: Path, pki: DevPki) -> str:
    key = tmp_path / "forged.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return mint_token(
        signing_key_file=key,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="staff:agent84",
        profession=None,
        specialty=None,
        roles=["ars_officer", "hub_operator"],
        region="84",
        ttl=timedelta(minutes=5),
    )


def _expired(pki: DevPki) -> str:
    """The console's delegate token of five minutes, issued an hour ago."""
    return mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="staff:agent84",
        profession=None,
        specialty=None,
        roles=["ars_officer"],
        region="84",
        ttl=timedelta(minutes=5),
        now=datetime.now(UTC) - timedelta(hours=1),
    )


def _unsigned() -> str:
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "staff:agent84",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "parcours_roles": ["hub_operator"],
    }
    return jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "TOKEN_MALFORMED"),
        ("empty bearer", "TOKEN_MALFORMED"),
        ("another scheme", "TOKEN_MALFORMED"),
        ("forged", "TOKEN_BAD_SIGNATURE"),
        ("alg none", "TOKEN_BAD_SIGNATURE"),
        ("expired", "TOKEN_EXPIRED"),
    ],
)
async def test_a_token_that_does_not_verify_through_a_component_is_unauthenticated(
    kind: str, reason: str, tmp_path: Path, pki: DevPki, billing_address: str
) -> None:
    authorization = {
        "garbage": lambda: "Bearer not.a.jwt",
        "empty bearer": lambda: "Bearer ",
        "another scheme": lambda: "Basic YWdlbnQ4NDpzZWNyZXQ=",
        "forged": lambda: f"Bearer {_forged(tmp_path, pki)}",
        "alg none": lambda: f"Bearer {_unsigned()}",
        "expired": lambda: f"Bearer {_expired(pki)}",
    }[kind]()
    console = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "console"))
    error = await call(console.ListCharges(_charges(), metadata=(("authorization", authorization),)))
    info, _ = details(error)
    assert (error.code(), info.reason if info else "") == (grpc.StatusCode.UNAUTHENTICATED, reason)
