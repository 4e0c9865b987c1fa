"""The Temporal Web UI's codec endpoint: who may decode, and that a grant covers its workflow's payloads only.

The grant comes from opening a real case in Temporal from the console ("Voir l'historique technique dans
Temporal"): the console reads the case through the contracts service as the officer, then grants its
workflow's payloads; another region's workflow stays encrypted, and its officer is not granted anything.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import temporalio.client
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from services.console import codec
from services.kit.codec import AesGcmPayloadCodec, Keyring
from services.kit.pki import DevPki
from tests.console.cases import contract_84, region_93_contract
from tests.console.conftest import RunningConsole
from tests.console.support import sign_in
from tests.support import PAYLOAD_KEYS

UI = "http://127.0.0.1:8233"


async def _started(client: temporalio.client.Client, workflow_id: str, secret: str) -> None:
    # No worker needed: the start event already holds the (encrypted) input the UI would show.
    await client.start_workflow(
        "ArsContract", {"motivation": secret}, id=workflow_id, task_queue=f"nobody-{uuid.uuid4()}"
    )


async def _payloads_of(client: temporalio.client.Client, workflow_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = [p for e in history.events for p in codec.payloads_in(e) if codec.encrypted(p)]
    return json_format.MessageToJson(Payloads(payloads=found))


async def test_a_grant_decodes_its_workflows_payloads_and_nothing_else(
    temporal_client: temporalio.client.Client,
) -> None:
    mine, other = f"ars-contract-{uuid.uuid4()}", f"ars-contract-{uuid.uuid4()}"
    await _started(temporal_client, mine, "motivation du dossier 84")
    await _started(temporal_client, other, "motivation d'un dossier 93")
    payload_codec = AesGcmPayloadCodec(Keyring.parse(PAYLOAD_KEYS))
    session: dict[str, object] = {}

    # No grant: nothing is decoded.
    with pytest.raises(codec.CodecRefused) as refused:
        await codec.decode(
            (await _payloads_of(temporal_client, mine)).encode(), session, payload_codec, temporal_client
        )
    assert refused.value.status == 403

    codec.add_grant(
        session,
        mine,
        await codec.history_digests(temporal_client, mine),
        datetime.now(UTC) + timedelta(minutes=30),
    )
    decoded = json.loads(
        await codec.decode(
            (await _payloads_of(temporal_client, mine)).encode(), session, payload_codec, temporal_client
        )
    )
    texts = [json.loads(base64.b64decode(p["data"])) for p in decoded["payloads"]]
    assert {"motivation": "motivation du dossier 84"} in texts

    # Another case's payloads stay encrypted for this officer, even with a live grant.
    with pytest.raises(codec.CodecRefused) as foreign:
        await codec.decode(
            (await _payloads_of(temporal_client, other)).encode(), session, payload_codec, temporal_client
        )
    assert foreign.value.status == 403

    # An expired grant decodes nothing.
    codec.add_grant(session, mine, [], datetime.now(UTC) - timedelta(seconds=1))
    assert codec.live_grants(session, datetime.now(UTC)) == {}


async def test_the_endpoint_needs_a_signed_in_officer_and_answers_the_ui_origin_only(
    console: RunningConsole,
) -> None:
    body = json.dumps({"payloads": []})
    async with httpx.AsyncClient() as client:
        preflight = await client.options(
            f"{console.url}/codec/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        anonymous = await client.post(f"{console.url}/codec/decode", content=body, headers={"Origin": UI})
        stranger = await client.post(
            f"{console.url}/codec/decode", content=body, headers={"Origin": "http://evil.invalid"}
        )
        await sign_in(client, console.url, "agent84")
        ungranted = await client.post(
            f"{console.url}/codec/default/decode", content=body, headers={"Origin": UI}
        )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == UI
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == UI
    assert "access-control-allow-origin" not in stranger.headers
    assert ungranted.status_code == 403
    assert ungranted.headers["cache-control"] == "no-store"


def _workflow_of(name: str) -> str:
    return f"ars-contract-{name.removeprefix('arsContracts/')}"


async def test_opening_a_case_in_temporal_grants_its_payloads_and_another_region_s_stay_encrypted(
    console: RunningConsole,
    pki: DevPki,
    temporal_client: temporalio.client.Client,
    paca_follows_cnom: object,
) -> None:
    address = console.settings.contracts_address
    ours = await contract_84(pki, address)
    theirs = await region_93_contract(pki, address)
    ours_payloads = await _payloads_of(temporal_client, _workflow_of(ours))
    theirs_payloads = await _payloads_of(temporal_client, _workflow_of(theirs))
    decode = f"{console.url}/codec/default/decode"

    async with httpx.AsyncClient() as agent84, httpx.AsyncClient() as agent93:
        await sign_in(agent84, console.url, "agent84")
        await sign_in(agent93, console.url, "agent93")
        # Before opening the case, its payloads are not decoded.
        before = await agent84.post(decode, content=ours_payloads, headers={"Origin": UI})
        assert before.status_code == 403

        opened = await agent84.get(f"{console.url}/dossiers/{ours}/temporal")
        assert opened.status_code == 303
        assert opened.headers["location"] == f"{UI}/namespaces/default/workflows/{_workflow_of(ours)}"
        decoded = await agent84.post(decode, content=ours_payloads, headers={"Origin": UI})
        assert decoded.status_code == 200
        texts = [base64.b64decode(p.get("data", "")).decode() for p in decoded.json()["payloads"]]
        # The workflow's input: the case as it was filed, in clear.
        started = json.loads(texts[0])
        assert started["core"]["case_id"] == ours.removeprefix("arsContracts/")
        assert started["activity"]["act_type"] == "TELECONSULTATION"

        # Region 93's workflow stays encrypted for region 84's officer, granted or not.
        foreign = await agent84.post(decode, content=theirs_payloads, headers={"Origin": UI})
        assert foreign.status_code == 403

        # Region 93's officer cannot open region 84's case in Temporal (a missing case's page) and so
        # decodes none of its payloads.
        refused = await agent93.get(f"{console.url}/dossiers/{ours}/temporal")
        assert refused.status_code == 404 and "Dossier introuvable" in refused.text
        stranger = await agent93.post(decode, content=ours_payloads, headers={"Origin": UI})
        assert stranger.status_code == 403
