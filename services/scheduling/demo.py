"""`python -m services.scheduling.demo`: demo agendas for `make run`, through the scheduling service's API.

Run by the orchestrator once every service is SERVING (the service materialises the slots). A dozen demo
practitioners get a teleconsultation agenda at their first practice place: weekdays 09:00–12:00 and
14:00–17:00 in the place's own time zone, 20-minute follow-ups and 30-minute first visits. Request ids
derive from the practitioner and the rule, so a second `make run` replays the first one's answers instead of
adding agendas.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from google.type import timeofday_pb2  # type: ignore[import-untyped]
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.directory.demo import DEMO_PRACTITIONERS
from services.kit import names
from services.kit.settings import KitSettings
from services.kit.tokens import mint_token, staff_subject

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/scheduling/demo")
SPECIALTIES = {
    "SPECIALTY_GENERAL_MEDICINE": 4,
    "SPECIALTY_DERMATOLOGY": 2,
    "SPECIALTY_PSYCHIATRY": 2,
    "SPECIALTY_CARDIOLOGY": 2,
    "SPECIALTY_PEDIATRICS": 1,
}
WINDOWS = (((9, 0), (12, 0)), ((14, 0), (17, 0)))


def demo_agendas() -> list[tuple[str, str]]:
    """(RPPS, FINESS) of the practitioners given an agenda, including one practising overseas."""
    chosen: list[tuple[str, str]] = []
    for specialty, count in SPECIALTIES.items():
        doctors = [p for p in DEMO_PRACTITIONERS if p.specialty == specialty]
        chosen += [(p.rpps, p.practice_places[0]) for p in doctors[:count]]
    overseas = next(
        p
        for p in DEMO_PRACTITIONERS
        if p.practice_places[0].startswith("974") and p.specialty == "SPECIALTY_GENERAL_MEDICINE"
    )
    if (overseas.rpps, overseas.practice_places[0]) not in chosen:
        chosen.append((overseas.rpps, overseas.practice_places[0]))
    return chosen


def _request_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def _minutes(value: int) -> Duration:
    return Duration(seconds=value * 60)


async def load(channel: grpc.aio.Channel, token: str) -> int:
    stub = scheduling_pb2_grpc.SchedulingServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)
    for rpps, finess in demo_agendas():
        reply = await stub.CreateSchedule(
            s.CreateScheduleRequest(
                request_id=_request_id("schedule", rpps, finess),
                schedule=s.ScheduleInput(
                    practitioner=names.PRACTITIONER.format(rpps),
                    establishment=names.ESTABLISHMENT.format(finess),
                    service_types=[
                        s.ServiceTypeDuration(
                            service_type=s.SERVICE_TYPE_FOLLOW_UP, slot_duration=_minutes(20)
                        ),
                        s.ServiceTypeDuration(
                            service_type=s.SERVICE_TYPE_FIRST_VISIT, slot_duration=_minutes(30)
                        ),
                    ],
                    buffer=_minutes(5),
                    minimum_notice=_minutes(60),
                    cancellation_cutoff=_minutes(24 * 60),
                    booking_horizon_days=28,
                ),
            ),
            metadata=metadata,
        )
        for day in range(1, 6):
            for (start_h, start_m), (end_h, end_m) in WINDOWS:
                for service_type in (s.SERVICE_TYPE_FOLLOW_UP, s.SERVICE_TYPE_FIRST_VISIT):
                    await stub.CreateAvailabilityRule(
                        s.CreateAvailabilityRuleRequest(
                            request_id=_request_id("rule", rpps, finess, day, start_h, service_type),
                            parent=reply.schedule.name,
                            rule=s.AvailabilityRuleInput(
                                day_of_week=day,
                                start_time_of_day=timeofday_pb2.TimeOfDay(hours=start_h, minutes=start_m),
                                end_time_of_day=timeofday_pb2.TimeOfDay(hours=end_h, minutes=end_m),
                                service_type=service_type,
                            ),
                        ),
                        metadata=metadata,
                    )
    return len(demo_agendas())


async def _main() -> int:
    address = os.environ.get("PARCOURS_SCHEDULING_ADDRESS")
    pki_dir = os.environ.get("PARCOURS_DEV_PKI_DIR")
    if not address or not pki_dir:
        sys.stderr.write("needs PARCOURS_SCHEDULING_ADDRESS and PARCOURS_DEV_PKI_DIR (run by `make run`)\n")
        return 2
    pki = Path(pki_dir)
    kid = json.loads((pki / "jwks.json").read_text())["keys"][0]["kid"]
    token = mint_token(
        signing_key_file=pki / "token-signing-key.pem",
        kid=kid,
        issuer=os.environ.get("PARCOURS_TOKEN_ISSUER", KitSettings.model_fields["token_issuer"].default),
        audience=os.environ.get(
            "PARCOURS_TOKEN_AUDIENCE", KitSettings.model_fields["token_audience"].default
        ),
        subject=staff_subject("demo-loader"),
        profession=None,
        specialty=None,
        roles=["hub_operator"],
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "cli-key.pem").read_bytes(),
        certificate_chain=(pki / "cli.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        count = await load(channel, token)
    print(f"demo agendas: {count} practitioners, weekdays 09:00-12:00 and 14:00-17:00 local time")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main()))
