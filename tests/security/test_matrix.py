"""The authorisation matrix (issue 9, item 15): every RPC that takes a patient-bound resource, in every
service, called by every kind of outsider — another GHT, another region, an establishment certificate without
a token, no token, an expired, a forged or an `alg=none` token, a token presented through another
establishment — once with the id of a real resource they may not see and once with a random id. The two
answers must be the same to the byte (the id aside): the hidden resource leaks nothing, not even its
existence. The rightful party's reads are the control: they see the hidden resources, and a random id is
refused to them too."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.pki import DevPki
from services.kit.tokens import mint_token
from tests.conftest import Minter
from tests.security.conftest import SecurityHub
from tests.security.world import RPCS, SERVICES, Ids, Rpc, World, make_world, random_ids, response_type
from tests.support import AUDIENCE, DAUPHINE, ISSUER, LOIRE, REUNION, STRANGER, bearer
from tests.support.chaos import Chaos

GP_LOIRE = "10000000101"  # practises at 420000025, GHT Loire (calls through 420000017)
GP_DAUPHINE = "10000000501"  # practises at 380000032, GHT Alpes-Dauphiné
GP_REUNION = "10000001501"  # practises at 974000013, La Réunion, outside any GHT
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Persona:
    name: str
    finess: str  # whose certificate the call presents
    metadata: Metadata


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(pki: DevPki, *, key_file: Path | None = None, now: datetime | None = None) -> str:
    return mint_token(
        signing_key_file=key_file or pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=f"8{GP_LOIRE}",
        profession="PROFESSION_PHYSICIAN",
        specialty="SPECIALTY_GENERAL_MEDICINE",
        ttl=timedelta(hours=1),
        now=now,
    )


def personas(pki: DevPki, mint: Minter, tmp_path: Path) -> list[Persona]:
    """Every outsider the matrix tries. The token-borne ones carry the rightful GP's own claims."""
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged_key_file = tmp_path / "forger.pem"
    forged_key_file.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    genuine = _token(pki)
    claims = genuine.split(".")[1]
    unsigned = (
        _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": pki.signing_kid}).encode()) + "." + claims + "."
    )
    return [
        Persona("another GHT", DAUPHINE, bearer(mint(rpps=GP_DAUPHINE))),
        Persona("another region", REUNION, bearer(mint(rpps=GP_REUNION))),
        Persona("an establishment certificate without a token", DAUPHINE, ()),
        Persona("no token", STRANGER, (("authorization", "Bearer"),)),
        Persona("an expired token", LOIRE, bearer(_token(pki, now=datetime.now(UTC) - timedelta(hours=3)))),
        Persona("a forged token", LOIRE, bearer(_token(pki, key_file=forged_key_file))),
        Persona("alg=none", LOIRE, bearer(unsigned)),
        Persona("a token through another establishment", LOIRE, bearer(mint(rpps=GP_DAUPHINE))),
    ]


@pytest.fixture(scope="module")
async def world(hub: SecurityHub, mint: Minter) -> World:
    return await make_world(hub, mint)


@dataclass(frozen=True)
class Answer:
    """What a caller learns from a call, with the ids it was given written `<id>`."""

    code: str
    body: bytes

    @classmethod
    def of(cls, outcome: Message | grpc.aio.AioRpcError, ids: Ids) -> Answer:
        if isinstance(outcome, grpc.aio.AioRpcError):
            status = rpc_status.from_call(outcome)  # type: ignore[arg-type]
            body = (outcome.details() or "").encode() + b"|"
            if status is not None:
                for detail in status.details:
                    if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                        info = error_details_pb2.ErrorInfo()
                        detail.Unpack(info)
                        body += info.SerializeToString(deterministic=True)
                    else:
                        body += detail.SerializeToString(deterministic=True)
            found = cls(outcome.code().name, body)
        else:
            found = cls("OK", outcome.SerializeToString(deterministic=True))
        text = found.body
        for value in ids.texts():
            text = text.replace(value.encode(), b"<id>")
        return replace(found, body=text)


async def ask(hub: SecurityHub, rpc: Rpc, persona: Persona, request: Message, ids: Ids) -> Answer:
    channel = hub.channel(rpc.service, persona.finess)
    method = channel.unary_unary(
        f"/{SERVICES[rpc.service]}/{rpc.method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type(rpc.service, rpc.method).FromString,
    )
    try:
        return Answer.of(await method(request, metadata=persona.metadata, timeout=10), ids)
    except grpc.aio.AioRpcError as error:
        return Answer.of(error, ids)


@pytest.mark.chaos
async def test_no_outsider_tells_a_hidden_resource_from_a_random_id(
    hub: SecurityHub, world: World, pki: DevPki, mint: Minter, tmp_path: Path, chaos: Chaos
) -> None:
    leaks: list[str] = []
    pairs = 0
    for persona in personas(pki, mint, tmp_path):
        for rpc in RPCS:
            random = random_ids()
            hidden_answer = await ask(
                hub, rpc, persona, rpc.build(world, world.hidden, persona.finess), world.hidden
            )
            random_answer = await ask(hub, rpc, persona, rpc.build(world, random, persona.finess), random)
            pairs += 1
            if hidden_answer != random_answer:
                leaks.append(
                    f"{persona.name} × {rpc.label}: hidden {hidden_answer.code}, random {random_answer.code}"
                )

    # The control: the rightful party sees what is hidden from the others, and is refused a random id.
    rightful = Persona("the rightful party", LOIRE, bearer(mint(rpps=GP_LOIRE)))
    seen = 0
    reads = [rpc for rpc in RPCS if rpc.read]
    for rpc in reads:
        random = random_ids()
        hidden_answer = await ask(hub, rpc, rightful, rpc.build(world, world.hidden, LOIRE), world.hidden)
        random_answer = await ask(hub, rpc, rightful, rpc.build(world, random, LOIRE), random)
        assert hidden_answer.code == "OK", f"{rpc.label}: the rightful party gets {hidden_answer.code}"
        assert random_answer.code != "OK", f"{rpc.label}: a random id is answered OK"
        seen += 1
    chaos.figures(
        "authorisation matrix",
        f"{len(personas(pki, mint, tmp_path))} outsiders × {len(RPCS)} RPCs = {pairs} hidden/random pairs, "
        f"{len(leaks)} leaks; the rightful party reads {seen}/{len(reads)} hidden resources",
    )
    assert not leaks, "\n".join(leaks)
