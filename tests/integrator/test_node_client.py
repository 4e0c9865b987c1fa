"""The Node client bundle against the real hub: `examples/flows.mjs` of the package `make sdk` builds books a
teleconsultation and creates a téléexpertise request over mTLS with a practitioner's token, and the hub
shows both (the booking's Teleconsultation workflow started, the request's Teleexpertise workflow running)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from services.directory.demo import DEMO_PATIENTS
from services.kit.tokens import mint_token
from tests.integrator.conftest import Hub, tool
from tests.scheduling.helpers import add_rules, every_day, new_practitioner, new_schedule
from tests.support import AUDIENCE, ISSUER, LOIRE, bearer, establishment_channel, repo_root

GP = "10000000101"  # Dr Martinon, GP at 420000025 in GHT Loire: acts through 420000017, same GHT
PATIENT = f"patients/{DEMO_PATIENTS[0].patient_id}"  # known at 420000017


def token(hub: Hub, subject: str, **claims: object) -> str:
    return mint_token(
        signing_key_file=hub.pki.signing_key_file,
        kid=hub.pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=subject,
        profession=claims.pop("profession", None),  # type: ignore[arg-type]
        specialty=claims.pop("specialty", None),  # type: ignore[arg-type]
        **claims,  # type: ignore[arg-type]
    )


async def test_node_books_a_teleconsultation_and_asks_for_a_teleexpertise(hub: Hub) -> None:
    flows = tool("build/sdk/node/examples/flows.mjs")
    node = shutil.which("node")
    assert node, "Node.js runs the client bundle"
    operator = bearer(token(hub, "staff:ops-integrator", roles=["hub_operator"]))
    async with (
        establishment_channel(hub.pki, hub.directory, LOIRE) as directory_channel,
        establishment_channel(hub.pki, hub.scheduling, LOIRE) as scheduling_channel,
    ):
        # The hospital's side, set up beforehand: a teleconsultant with an agenda at 420000017.
        rpps = await new_practitioner(
            directory_pb2_grpc.DirectoryServiceStub(directory_channel), operator, LOIRE
        )
        agendas = scheduling_pb2_grpc.SchedulingServiceStub(scheduling_channel)
        schedule = await new_schedule(agendas, operator, rpps, LOIRE, horizon_days=2)
        await add_rules(agendas, operator, schedule.name, every_day())

    gp = token(hub, f"8{GP}", profession="PROFESSION_PHYSICIAN", specialty="SPECIALTY_GENERAL_MEDICINE")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PARCOURS_PKI_DIR": str(hub.pki.directory),
        "PARCOURS_FINESS": LOIRE,
        "PARCOURS_TOKEN": gp,
        "PARCOURS_PATIENT": PATIENT,
        "PARCOURS_TELECONSULTANT": f"practitioners/{rpps}",
        "PARCOURS_SCHEDULING_ADDRESS": hub.scheduling,
        "PARCOURS_EXPERTISE_ADDRESS": hub.expertise,
    }
    ran = await asyncio.to_thread(
        subprocess.run, [node, str(flows)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)

    appointment = result["appointment"]
    assert appointment["state"] == "BOOKED" and appointment["fhirStatus"] == "booked"
    assert appointment["practitioner"] == f"practitioners/{rpps}"
    assert appointment["sameOnRetry"] is True
    assert result["refusal"] == {"code": "FailedPrecondition", "reason": "SLOT_ALREADY_BOOKED"}
    request = result["teleexpertise"]
    assert request["requester"] == f"practitioners/{GP}"
    assert request["name"].startswith("teleexpertiseRequests/") and request["candidates"] > 0

    # What the hub made of it: the booking's workflow was started by the outbox relay, the request's runs.
    booked = hub.temporal.get_workflow_handle(f"teleconsultation-{appointment['name'].split('/')[1]}")
    async with asyncio.timeout(20):
        while True:
            try:
                described = await booked.describe()
                break
            except RPCError as exc:  # not started yet: the relay polls the outbox every 0.5 s
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.1)
    assert described.status == WorkflowExecutionStatus.RUNNING
    case = await hub.temporal.get_workflow_handle(f"teleexpertise-{request['name'].split('/')[1]}").describe()
    assert case.status == WorkflowExecutionStatus.RUNNING
    async with establishment_channel(hub.pki, hub.expertise, LOIRE) as channel:
        seen = await expertise_pb2_grpc.ExpertiseServiceStub(channel).GetTeleexpertiseRequest(
            expertise_pb2.GetTeleexpertiseRequestRequest(name=request["name"]), metadata=bearer(gp)
        )
    state = expertise_pb2.TeleexpertiseRequest.State.Name(seen.teleexpertise_request.state)
    assert state == f"STATE_{request['state']}" == "STATE_AWAITING_EXPERT"


def test_the_bundle_is_self_contained() -> None:
    """Every file the API imports is in parcours.binpb, buf/validate included, with the protos' comments."""
    from google.protobuf import descriptor_pb2

    bundle = descriptor_pb2.FileDescriptorSet.FromString(tool("build/sdk/node/parcours.binpb").read_bytes())
    names = {f.name for f in bundle.file}
    for file in bundle.file:
        assert set(file.dependency) <= names, f"{file.name} imports a file the bundle lacks"
    assert {"buf/validate/validate.proto", "google/rpc/error_details.proto"} <= names
    ours = [f for f in bundle.file if f.name.startswith("parcours/")]
    protos = repo_root() / "protos"
    assert {f.name for f in ours} == {str(p.relative_to(protos)) for p in protos.rglob("*.proto")}
    assert all(f.source_code_info.location for f in ours)
