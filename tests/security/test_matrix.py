"""The authorisation matrix (issue 9, item 15): every RPC that takes a patient- or case-bound resource, in
every service, called by every kind of outsider — another GHT, another region, an establishment certificate
without a token, no token, an expired, a forged or an `alg=none` token, a token presented through another
establishment; and for the contracts service's cases also an ARS officer of another region (through the
console's certificate, or an establishment's), an Ordre reviewer of another territory, a promoter that is not
the case's, a promoter's token through another establishment, a practitioner who did not file it — once with
the id of a real resource they may not see and once with a random id. The two answers must be the same to the
byte (the id aside): the hidden resource leaks nothing, not even its existence. The rightful party's reads are
the control: they see the hidden resources, and a random id is refused to them too. Hidden cases move no
outsider's tab counters or lists either."""

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
from parcours.contracts.v1 import contracts_pb2 as c

from services.kit.pki import DevPki
from services.kit.tokens import mint_token
from tests.conftest import Minter
from tests.security.conftest import SecurityHub
from tests.security.world import (
    OFFICER_84,
    PROMOTER_STAFF,
    RPCS,
    SERVICES,
    Ids,
    Rpc,
    World,
    make_cases,
    make_world,
    random_ids,
    response_type,
)
from tests.support import AUDIENCE, DAUPHINE, ISSUER, LOIRE, REUNION, STRANGER, bearer
from tests.support.chaos import Chaos

GP_LOIRE = "10000000101"  # practises at 420000025, GHT Loire (calls through 420000017)
GP_DAUPHINE = "10000000501"  # practises at 380000032, GHT Alpes-Dauphiné
GP_REUNION = "10000001501"  # practises at 974000013, La Réunion, outside any GHT
GP_FOREZ = "10000000301"  # practises at 420000017, GHT Loire: not the one who filed the review
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


def _ordre(pki: DevPki, territory: str) -> str:
    """An Ordre reviewer's token (the suite's `mint` names no territory)."""
    return mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=f"staff:ordre-{territory}",
        profession=None,
        specialty=None,
        roles=["ordre_reviewer"],
        territory=territory,
        ttl=timedelta(hours=1),
    )


def case_outsiders(pki: DevPki, mint: Minter) -> list[Persona]:
    """The outsiders that matter for the contracts service's cases (region 84, département 42, filed by the
    Loire establishment's promoter and a Loire doctor), besides everyone above."""
    officer_93 = bearer(mint(staff="ars-93-officer", roles=["ars_officer"], region="93"))
    return [
        Persona("an ARS officer of another region, through the console", "component:console", officer_93),
        Persona("an ARS officer of another region, through an establishment", DAUPHINE, officer_93),
        Persona(
            "an ARS signatory of another region, through the console",
            "component:console",
            bearer(mint(staff="ars-93-dg", roles=["ars_signatory", "ars_supervisor"], region="93")),
        ),
        Persona(
            "an Ordre reviewer of another territory",
            "component:console",
            bearer(_ordre(pki, "13")),
        ),
        Persona(
            "a promoter that is not the case's",
            DAUPHINE,
            bearer(mint(staff="promoter-dauphine", roles=["promoter"])),
        ),
        Persona(
            "the promoter's token through another establishment",
            DAUPHINE,
            bearer(mint(staff=PROMOTER_STAFF, roles=["promoter"])),
        ),
        Persona("a practitioner of the promoter's GHT", LOIRE, bearer(mint(rpps=GP_FOREZ))),
    ]


def rightful(mint: Minter) -> dict[str, Persona]:
    """Who may read what the world holds (`Rpc.reader`)."""
    return {
        "gp": Persona("the rightful GP", LOIRE, bearer(mint(rpps=GP_LOIRE))),
        "officer": Persona(
            "the region's ARS officer",
            "component:console",
            bearer(mint(staff=OFFICER_84, roles=["ars_officer"], region="84")),
        ),
        "promoter": Persona("the promoter", LOIRE, bearer(mint(staff=PROMOTER_STAFF, roles=["promoter"]))),
    }


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
    generic, cases = personas(pki, mint, tmp_path), case_outsiders(pki, mint)
    for persona in [*generic, *cases]:
        for rpc in RPCS:
            if persona in cases and rpc.service != "contracts":
                continue
            random = random_ids()
            hidden_answer = await ask(
                hub, rpc, persona, rpc.build(world, world.hidden, persona.finess), world.hidden
            )
            random_answer = await ask(hub, rpc, persona, rpc.build(world, random, persona.finess), random)
            pairs += 1
            if hidden_answer != random_answer:
                leaks.append(
                    f"{persona.name} × {rpc.label}: hidden {hidden_answer.code} {hidden_answer.body!r}, "
                    f"random {random_answer.code} {random_answer.body!r}"
                )

    # The control: the rightful party sees what is hidden from the others, and is refused a random id.
    readers = rightful(mint)
    seen = 0
    reads = [rpc for rpc in RPCS if rpc.read]
    for rpc in reads:
        reader = readers[rpc.reader]
        random = random_ids()
        hidden_answer = await ask(
            hub, rpc, reader, rpc.build(world, world.hidden, reader.finess), world.hidden
        )
        random_answer = await ask(hub, rpc, reader, rpc.build(world, random, reader.finess), random)
        assert hidden_answer.code == "OK", (
            f"{rpc.label}: {reader.name} gets {hidden_answer.code} {hidden_answer.body!r}"
        )
        assert random_answer.code != "OK", f"{rpc.label}: a random id is answered OK"
        seen += 1
    contracts = sum(1 for rpc in RPCS if rpc.service == "contracts")
    chaos.figures(
        "authorisation matrix",
        f"{len(generic)} outsiders × {len(RPCS)} RPCs + {len(cases)} case outsiders × {contracts} contracts "
        f"RPCs = {pairs} hidden/random pairs, {len(leaks)} leaks; the rightful parties read "
        f"{seen}/{len(reads)} hidden resources",
    )
    assert not leaks, "\n".join(leaks)


async def what_they_see(hub: SecurityHub, persona: Persona) -> dict[str, str]:
    """The contracts service's counters and lists as `persona` sees them (or the refusal it gets)."""
    stub = hub.contracts(persona.finess)
    asks: dict[str, object] = {
        "CountCases": stub.CountCases(c.CountCasesRequest(include_closed=True), metadata=persona.metadata),
        **{
            f"ListCases {c.Tab.Name(tab)}": stub.ListCases(
                c.ListCasesRequest(tab=tab, include_closed=True, page_size=500), metadata=persona.metadata
            )
            for tab in c.Tab.values()
        },
        "ListArsContracts": stub.ListArsContracts(
            c.ListArsContractsRequest(page_size=500), metadata=persona.metadata
        ),
        "ListOperatorDeclarations": stub.ListOperatorDeclarations(
            c.ListOperatorDeclarationsRequest(page_size=500), metadata=persona.metadata
        ),
        "ListIntermediaryContractReviews": stub.ListIntermediaryContractReviews(
            c.ListIntermediaryContractReviewsRequest(page_size=500), metadata=persona.metadata
        ),
        "ListAgrementApplications": stub.ListAgrementApplications(
            c.ListAgrementApplicationsRequest(page_size=500), metadata=persona.metadata
        ),
    }
    seen: dict[str, str] = {}
    for label, pending in asks.items():
        try:
            reply = await pending  # type: ignore[misc]
        except grpc.aio.AioRpcError as error:
            seen[label] = f"{error.code().name} {error.details()}"
            continue
        if isinstance(reply, c.CountCasesResponse):
            seen[label] = str(reply.counts)
        else:
            listed = next(f for f in reply.DESCRIPTOR.fields if f.name != "next_page_token")
            seen[label] = " ".join(sorted(item.name for item in getattr(reply, listed.name)))
    return seen


async def test_hidden_cases_move_no_outsider_s_tab_counters_or_lists(
    hub: SecurityHub, mint: Minter, pki: DevPki, tmp_path: Path
) -> None:
    outsiders = [
        *case_outsiders(pki, mint),
        *(p for p in personas(pki, mint, tmp_path) if p.name in ("another GHT", "another region")),
    ]
    promoter = rightful(mint)["promoter"]
    before = {persona.name: await what_they_see(hub, persona) for persona in outsiders}
    promoter_before = await what_they_see(hub, promoter)

    made = await make_cases(hub, mint)

    for persona in outsiders:
        after = await what_they_see(hub, persona)
        moved = {label for label in after if after[label] != before[persona.name][label]}
        assert not moved, f"{persona.name}: {sorted(moved)} moved for hidden cases"
    # The control: the promoter's own counters and lists hold them.
    promoter_after = await what_they_see(hub, promoter)
    assert promoter_after["CountCases"] != promoter_before["CountCases"]
    assert made["ars_contract"] in promoter_after["ListCases TAB_ALL"]
    assert made["agrement"] in promoter_after["ListAgrementApplications"]
