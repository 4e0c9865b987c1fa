"""The service kit as a client sees it, over real mTLS sockets to the directory service: transport identity,
tokens, roles, validation, error mapping, health and reflection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.kit.pki import DevPki
from services.kit.tokens import mint_token
from tests.conftest import Minter
from tests.support import AUDIENCE, ISSUER, LOIRE, bearer, establishment_channel, request_id
from tests.support.calls import call, details

GP = "10000000101"  # a demo GP practising in GHT Loire


@pytest.fixture
async def loire(pki: DevPki, directory_address: str) -> directory_pb2_grpc.DirectoryServiceStub:
    channel = establishment_channel(pki, directory_address, LOIRE)
    return directory_pb2_grpc.DirectoryServiceStub(channel)


# --- transport identity ---------------------------------------------------------------------------------


async def test_health_is_serving_and_reflection_lists_the_service(
    pki: DevPki, directory_address: str
) -> None:
    async with establishment_channel(pki, directory_address, LOIRE) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "parcours.directory.v1.DirectoryService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = [
            r
            async for r in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        ]
        names = {s.name for s in replies[0].list_services_response.service}
        assert "parcours.directory.v1.DirectoryService" in names


async def test_health_watch_streams_the_status(pki: DevPki, directory_address: str) -> None:
    """Watch is a server stream: it must not be broken by the tracing interceptor of unary calls."""
    async with establishment_channel(pki, directory_address, LOIRE) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="parcours.directory.v1.DirectoryService"), timeout=10
        )
        first = await call.read()
        call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_call_without_a_client_certificate_never_reaches_the_service(
    pki: DevPki, directory_address: str, mint: Minter
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    async with grpc.aio.secure_channel(directory_address, credentials) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        error = await call(
            stub.ListRegions(directory_pb2.ListRegionsRequest(), metadata=bearer(mint(rpps=GP)), timeout=5)
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_authority_is_refused(
    tmp_path: Path, pki: DevPki, directory_address: str, mint: Minter
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOIRE)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )
    async with grpc.aio.secure_channel(directory_address, credentials) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        error = await call(
            stub.ListRegions(directory_pb2.ListRegionsRequest(), metadata=bearer(mint(rpps=GP)), timeout=5)
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


# --- tokens ---------------------------------------------------------------------------------------------


async def test_an_establishment_call_without_a_token_is_unauthenticated(
    loire: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    error = await call(loire.ListRegions(directory_pb2.ListRegionsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = details(error)
    assert info is not None and info.reason == "TOKEN_MISSING"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("expired", "TOKEN_EXPIRED"),
        ("issuer", "TOKEN_WRONG_ISSUER"),
        ("audience", "TOKEN_WRONG_AUDIENCE"),
        ("forged", "TOKEN_BAD_SIGNATURE"),
        ("garbage", "TOKEN_MALFORMED"),
    ],
)
async def test_bad_tokens_are_unauthenticated_with_a_stable_reason(
    change: str, reason: str, tmp_path: Path, pki: DevPki, loire: directory_pb2_grpc.DirectoryServiceStub
) -> None:
    signing_key, kid, issuer, audience = pki.signing_key_file, pki.signing_kid, ISSUER, AUDIENCE
    now = datetime.now(UTC)
    if change == "expired":
        now -= timedelta(hours=2)  # a one-hour token issued two hours ago
    elif change == "issuer":
        issuer = "https://someone-else.invalid"
    elif change == "audience":
        audience = "another-hub"
    elif change == "forged":
        # Same key id, another private key: the signature cannot verify against the hub's JWKS.
        forged = tmp_path / "forged.pem"
        forged.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        signing_key = forged
    token = (
        "not.a.jwt"
        if change == "garbage"
        else mint_token(
            signing_key_file=signing_key,
            kid=kid,
            issuer=issuer,
            audience=audience,
            subject=f"8{GP}",
            profession="PROFESSION_PHYSICIAN",
            specialty="SPECIALTY_GENERAL_MEDICINE",
            ttl=timedelta(hours=1),
            now=now,
        )
    )
    error = await call(loire.ListRegions(directory_pb2.ListRegionsRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = details(error)
    assert info is not None and info.reason == reason
    assert token not in (error.details() or "")


async def test_a_practitioner_cannot_call_a_hub_operator_method(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    request = directory_pb2.CreateGhtRequest(
        request_id=request_id(),
        ght_id="ght-nope",
        ght=directory_pb2.Ght(display_name="Nope", region="regions/84"),
    )
    error = await call(loire.CreateGht(request, metadata=bearer(mint(rpps=GP))))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = details(error)
    assert info is not None and info.reason == "ROLE_REQUIRED"


# --- validation and error mapping ----------------------------------------------------------------------


async def test_bad_input_names_each_field(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    operator = bearer(mint(staff="ops", roles=["hub_operator"]))
    request = directory_pb2.CreatePractitionerRequest(
        request_id="not-a-uuid",
        practitioner=directory_pb2.PractitionerInput(
            rpps="1234567890",  # 10 digits
            family_name="Test",
            given_name="Test",
            profession=1,
            specialty=2,
            sector=1,
            practice_places=[directory_pb2.PracticePlace(establishment="establishments/42000001")],
        ),
    )
    error = await call(loire.CreatePractitioner(request, metadata=operator))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(error)
    fields = {f for f, _ in violations}
    assert {"request_id", "practitioner.rpps", "practitioner.practice_places[0].establishment"} <= fields


async def test_a_finess_of_eight_characters_is_refused_naming_the_field(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    request = directory_pb2.CreateEstablishmentRequest(
        request_id=request_id(),
        establishment=directory_pb2.EstablishmentInput(
            finess="42000001", display_name="X", kind=2, region="regions/84", time_zone="Europe/Paris"
        ),
    )
    error = await call(
        loire.CreateEstablishment(request, metadata=bearer(mint(staff="ops", roles=["hub_operator"])))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(error)
    assert [f for f, _ in violations] == ["establishment.finess"]


async def test_an_unknown_time_zone_is_refused(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    request = directory_pb2.CreateEstablishmentRequest(
        request_id=request_id(),
        establishment=directory_pb2.EstablishmentInput(
            finess="420009999", display_name="X", kind=2, region="regions/84", time_zone="Europe/Lyon"
        ),
    )
    error = await call(
        loire.CreateEstablishment(request, metadata=bearer(mint(staff="ops", roles=["hub_operator"])))
    )
    _, violations = details(error)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violations[0][0] == "establishment.time_zone"


async def test_not_found_carries_a_stable_reason_and_no_internals(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    error = await call(
        loire.GetEstablishment(
            directory_pb2.GetEstablishmentRequest(name="establishments/420999999"),
            metadata=bearer(mint(rpps=GP)),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(error)
    assert info is not None and info.reason == "ESTABLISHMENT_NOT_FOUND" and info.domain == "parcours.health"
    assert "Traceback" not in (error.details() or "")


async def test_a_business_refusal_is_failed_precondition_with_its_reason(
    loire: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    request = directory_pb2.CreateEstablishmentRequest(
        request_id=request_id(),
        establishment=directory_pb2.EstablishmentInput(
            finess="420009998",
            display_name="Clinique X",
            kind=2,
            ght="ghts/ght-unknown",
            region="regions/84",
            time_zone="Europe/Paris",
        ),
    )
    error = await call(
        loire.CreateEstablishment(request, metadata=bearer(mint(staff="ops", roles=["hub_operator"])))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(error)
    assert info is not None and info.reason == "UNKNOWN_GHT"


# --- development mode ---------------------------------------------------------------------------------


async def test_plaintext_without_a_token_works_only_in_explicit_development_mode(
    pki: DevPki, database_url: str, seeded_pool: object
) -> None:
    from services.directory.server import build
    from services.directory.settings import DirectorySettings
    from tests.support import kit_settings

    assert DirectorySettings.model_fields["insecure_dev_mode"].default is False
    settings = DirectorySettings(**kit_settings(pki, database_url, "directory", insecure_dev_mode=True))  # type: ignore[arg-type]
    kit = await build(settings, seeded_pool)
    await kit.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{kit.port}") as channel:
            stub = directory_pb2_grpc.DirectoryServiceStub(channel)
            reply = await stub.ListRegions(directory_pb2.ListRegionsRequest())
            assert len(reply.regions) == 18
    finally:
        await kit.stop(0.5)
