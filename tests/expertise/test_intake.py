"""Routing tiers and intake checks, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2

from services.expertise import intake
from services.expertise.models import Tier
from services.kit.errors import InvalidArgument

P = "practitioners/"


def offer(name: str, members: list[str], backup: str = "") -> directory_pb2.ExpertiseOffer:
    return directory_pb2.ExpertiseOffer(
        name=f"expertiseOffers/{name}",
        members=[P + m for m in members],
        backup_expert=P + backup if backup else "",
        accepting=True,
    )


def test_tiers_go_from_the_named_expert_to_the_ght_pool_the_region_pool_then_the_backups() -> None:
    tiers = intake.tiers(
        requester=P + "1",
        named_expert=P + "9",
        ght_offers=[offer("ght", ["2", "9"], backup="5")],
        region_offers=[offer("region", ["3", "4", "2"], backup="6")],
    )
    assert tiers == [
        Tier(source=P + "9", members=[P + "9"]),
        Tier(source="expertiseOffers/ght", members=[P + "2"]),
        Tier(source="expertiseOffers/region", members=[P + "3", P + "4"]),
        Tier(source="backup", members=[P + "5", P + "6"]),
    ]


def test_the_requester_is_never_a_candidate_and_empty_tiers_are_dropped() -> None:
    tiers = intake.tiers(
        requester=P + "1",
        named_expert=None,
        ght_offers=[offer("ght", ["1"], backup="2")],
        region_offers=[offer("region", ["2"], backup="1")],
    )
    assert tiers == [Tier(source="expertiseOffers/region", members=[P + "2"])]
    assert intake.tiers(requester=P + "1", named_expert=None, ght_offers=[], region_offers=[]) == []


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def test_the_answer_deadline_is_bounded_by_urgency() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    bounds = (timedelta(hours=2), timedelta(hours=24), timedelta(hours=48))
    assert intake.answer_deadline(None, now, bounds, "URGENT") == now + timedelta(hours=24)
    assert intake.answer_deadline(_stamp(now + timedelta(hours=2)), now, bounds, "URGENT") == now + timedelta(
        hours=2
    )
    with pytest.raises(InvalidArgument) as refused:
        intake.answer_deadline(_stamp(now + timedelta(hours=49)), now, bounds, "URGENT")
    assert refused.value.reason == "DEADLINE_OUT_OF_BOUNDS"
    assert (
        refused.value.violations[0].description
        == "must be between 2 hours and 2 days from now for URGENCY_URGENT"
    )
