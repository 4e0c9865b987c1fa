"""Reflection as grpcurl and IDEs use it, against real servers over mTLS: v1 and v1alpha, comments included,
a method described by its full name, and the billing catalogs discoverable."""

from __future__ import annotations

import asyncio
import json
import subprocess

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from services.kit.tokens import mint_token
from tests.integrator.conftest import Hub, grpcurl
from tests.support import AUDIENCE, ISSUER, LOIRE, establishment_channel


def tls(hub: Hub, finess: str = LOIRE) -> list[str]:
    pki = hub.pki
    return [
        "-cacert", str(pki.ca_file),
        "-cert", str(pki.establishment_cert_file(finess)),
        "-key", str(pki.establishment_key_file(finess)),
    ]  # fmt: skip


async def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [grpcurl(), *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_grpcurl_lists_services_and_describes_a_method_with_its_comment(hub: Hub) -> None:
    listed = await run_grpcurl(*tls(hub), hub.directory, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "parcours.directory.v1.DirectoryService",
    ]

    method = await run_grpcurl(
        *tls(hub), hub.directory, "describe", "parcours.directory.v1.DirectoryService.ListRegions"
    )
    assert method.returncode == 0, method.stderr
    assert "is a method" in method.stdout
    assert "// Lists the 18 ARS regions." in method.stdout
    assert "rpc ListRegions ( .parcours.directory.v1.ListRegionsRequest )" in method.stdout

    message = await run_grpcurl(
        *tls(hub), hub.directory, "describe", "parcours.directory.v1.ListRegionsRequest"
    )
    assert message.returncode == 0, message.stderr
    assert "above 1000 is refused (INVALID_ARGUMENT)" in message.stdout

    service = await run_grpcurl(
        *tls(hub), hub.directory, "describe", "parcours.directory.v1.DirectoryService"
    )
    assert service.returncode == 0, service.stderr
    assert service.stdout.count("rpc ") >= 10 and "// Lists the 18 ARS regions." in service.stdout


async def test_a_symbol_of_another_service_is_not_described_by_this_one(hub: Hub) -> None:
    found = await run_grpcurl(*tls(hub), hub.directory, "describe", "parcours.billing.v1.BillingService")
    assert found.returncode != 0
    assert "not found" in (found.stderr + found.stdout).lower()


async def test_reflection_v1_answers_with_source_info(hub: Hub) -> None:
    """grpcurl 1.8.6 speaks v1alpha only: v1 is checked by a client of its own (same messages on the wire)."""
    async with establishment_channel(hub.pki, hub.directory, LOIRE) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="parcours.directory.v1.DirectoryService.ListRegions"
            ),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="parcours.nothing.v1.Nothing"),
        ]
        answers = [answer async for answer in call(iter(requests))]
    assert [s.name for s in answers[0].list_services_response.service] == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "parcours.directory.v1.DirectoryService",
    ]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    assert files[0].name == "parcours/directory/v1/directory.proto"
    assert files[0].source_code_info.location, "the descriptor carries its comments"
    # Every import travels with it, down to buf/validate (which no package ships as source).
    assert {"buf/validate/validate.proto", "parcours/options/v1/options.proto"} <= {f.name for f in files}
    assert answers[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_catalog_names_are_discoverable(hub: Hub) -> None:
    token = mint_token(
        signing_key_file=hub.pki.signing_key_file,
        kid=hub.pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="staff:clerk",
        profession=None,
        specialty=None,
        roles=["billing"],
    )
    header = ["-H", f"authorization: Bearer {token}"]
    listed = await run_grpcurl(
        *tls(hub), *header, "-d", "{}", hub.billing, "parcours.billing.v1.BillingService/ListCatalogs"
    )
    assert listed.returncode == 0, listed.stderr
    catalogs = json.loads(listed.stdout)["catalogs"]
    assert [c["name"] for c in catalogs] == ["catalogs/ngap-telemedicine"]
    assert catalogs[0]["version"] and "entries" not in catalogs[0]

    # The name it gives is the one GetCatalog takes.
    got = await run_grpcurl(
        *tls(hub), *header, "-d", json.dumps({"name": catalogs[0]["name"]}), hub.billing,
        "parcours.billing.v1.BillingService/GetCatalog",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert any(e["code"] == "TE2" for e in json.loads(got.stdout)["catalog"]["entries"])

    forged = await run_grpcurl(
        *tls(hub), *header, "-d", '{"page_token": "bm90LW91cnM"}', hub.billing,
        "parcours.billing.v1.BillingService/ListCatalogs",
    )  # fmt: skip
    assert forged.returncode != 0 and "InvalidArgument" in forged.stderr and "page_token" in forged.stderr
