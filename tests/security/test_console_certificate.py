"""The console's certificate alone is not the hub (issue 9): written as the attacker who took the console's
host and holds its key, but no officer's delegate token.

A component certificate without a token used to be ROLE_HUB_SERVICE and hub-wide, whatever the component: the
console's certificate then read every patient, charge and case of every region. Only the allow-listed
identities (`PARCOURS_HUB_COMPONENTS`: the workers and the services that call others without a token) act as
the hub now; the console's certificate without a token is refused like an establishment's, with or without
acting metadata naming a caller, by every method of every service. The workers keep their reach (the control
here, and every worker test of the suite); the console with an officer's token and the tools with a hub
operator's token keep theirs.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.kit.auth import ACTING_ESTABLISHMENT_HEADER, ACTING_PRACTITIONER_HEADER, DEFAULT_HUB_COMPONENTS
from services.kit.errors import DomainError
from services.kit.pki import DevPki
from services.kit.server import build_authenticator
from services.kit.settings import KitSettings
from tests.conftest import Minter
from tests.directory.builders import random_ins, register
from tests.security.conftest import SecurityHub
from tests.security.world import SERVICES, request_type
from tests.support import LOIRE, bearer, kit_settings
from tests.support.calls import call, details

GP_LOIRE = "10000000101"
Metadata = tuple[tuple[str, str], ...]

# What the attacker sends with the console's certificate: nothing, or acting metadata naming a Loire caller.
WITHOUT_TOKEN: dict[str, Metadata] = {
    "no token": (),
    "acting establishment": ((ACTING_ESTABLISHMENT_HEADER, f"establishments/{LOIRE}"),),
    "acting establishment and practitioner": (
        (ACTING_ESTABLISHMENT_HEADER, f"establishments/{LOIRE}"),
        (ACTING_PRACTITIONER_HEADER, f"practitioners/{GP_LOIRE}"),
    ),
}


async def _answer(hub: SecurityHub, service: str, identity: str, method: str, metadata: Metadata) -> str:
    """`code reason` of an empty request to `method` presenting `identity`'s certificate."""
    rpc = hub.channel(service, identity).unary_unary(
        f"/{SERVICES[service]}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        await rpc(request_type(service, method)(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        info, _ = details(error)
        return f"{error.code().name} {info.reason if info else ''}"
    return "OK"


@pytest.mark.parametrize("component", ["console", "cli"])
async def test_a_component_certificate_off_the_allow_list_without_a_token_is_refused_by_every_method(
    hub: SecurityHub, component: str
) -> None:
    answered: dict[str, int] = {}
    wrong: list[str] = []
    for service, full_name in SERVICES.items():
        for method in descriptor_pool.Default().FindServiceByName(full_name).methods:
            for variant, metadata in WITHOUT_TOKEN.items():
                answer = await _answer(hub, service, f"component:{component}", method.name, metadata)
                answered[service] = answered.get(service, 0) + 1
                if answer != "UNAUTHENTICATED TOKEN_MISSING":
                    wrong.append(f"{service}.{method.name} ({variant}): {answer}")
    assert set(answered) == set(SERVICES) and all(answered.values())
    assert not wrong, "\n".join(wrong)


async def test_the_workers_and_a_hub_operator_s_tools_keep_their_reach_the_console_gets_its_officer_s(
    hub: SecurityHub, mint: Minter
) -> None:
    # The demo loaders and the tokens tool: the `cli` certificate with a hub operator's token.
    operator = bearer(mint(staff="ops-console-attack", roles=["hub_operator"]))
    patient = await register(hub.directory("component:cli"), operator, LOIRE, random_ins())
    read = directory_pb2.GetPatientRequest(name=patient.name)

    # The workers, on their own behalf and for a caller they name, read the patient.
    workers = hub.directory("component:workflows")
    assert (await workers.GetPatient(read)).patient.name == patient.name
    acting = WITHOUT_TOKEN["acting establishment and practitioner"]
    assert (await workers.GetPatient(read, metadata=acting)).patient.name == patient.name

    # The console's certificate: nothing without a token, an ARS officer's scope with one.
    console: directory_pb2_grpc.DirectoryServiceStub = hub.directory("component:console")
    for metadata in WITHOUT_TOKEN.values():
        error = await call(console.GetPatient(read, metadata=metadata))
        info, _ = details(error)
        assert (error.code(), info and info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    officer = bearer(mint(staff="ars-ara-officer", roles=["ars_officer"], region="84"))
    error = await call(console.GetPatient(read, metadata=officer))
    info, _ = details(error)
    assert (error.code(), info and info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    assert (await console.ListGhts(directory_pb2.ListGhtsRequest(region="regions/84"), metadata=officer)).ghts


def test_the_allow_list_is_the_settings_and_its_default_leaves_out_the_console_and_the_tools(
    pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"console", "cli"}.isdisjoint(DEFAULT_HUB_COMPONENTS) and "workflows" in DEFAULT_HUB_COMPONENTS
    values = kit_settings(pki, "postgresql://parcours@127.0.0.1:1/parcours", "billing")

    default = build_authenticator(KitSettings(**values))  # type: ignore[arg-type]
    assert default.authenticate("parcours-workflows", {}).unrestricted
    with pytest.raises(DomainError) as refused:
        default.authenticate("parcours-console", {ACTING_ESTABLISHMENT_HEADER: f"establishments/{LOIRE}"})
    assert refused.value.reason == "TOKEN_MISSING"

    # A site that runs no worker under the `workflows` identity takes it off; a name that is not one fails.
    monkeypatch.setenv("PARCOURS_HUB_COMPONENTS", "billing, contracts")
    narrowed = build_authenticator(KitSettings(**values))  # type: ignore[arg-type]
    assert narrowed.authenticate("parcours-billing", {}).unrestricted
    with pytest.raises(DomainError) as refused:
        narrowed.authenticate("parcours-workflows", {})
    assert refused.value.reason == "TOKEN_MISSING"
    monkeypatch.setenv("PARCOURS_HUB_COMPONENTS", "billing,parcours-console!")
    with pytest.raises(ValueError, match="not a component name"):
        KitSettings(**values)  # type: ignore[arg-type]
