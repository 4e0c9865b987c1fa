"""The waitlist (issue 13 item 15): a slot freed by a cancellation goes to the first patient waiting for
its specialty in its GHT, as a proposal that holds it for `waitlist_offer_hold`; when the offer lapses the
slot goes to the next in line; accepting books it.

Why a transactional design rather than a Temporal workflow: an offer is a proposal, which the scheduling
database already holds and lapses by itself (its claim carries its own end); the line is a table ordered by
the time each patient joined it. What must happen at the lapse — offer the slot to the next — is one
transaction that the service's lapse job runs for every offer past its hold time (`FOR UPDATE SKIP LOCKED`:
several processes may run it, each offer is passed on once; `UNIQUE (slot_id, entry_id)`: a slot is never
offered twice to one patient). A process that stops loses nothing: the next run of any process finds the
offers still due. The freed slot is offered in the cancellation's own transaction, so a cancellation that
commits has its offer.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.kit import names
from services.kit.server import Periodic
from services.scheduling import store

log = logging.getLogger(__name__)

SYSTEM = "component/scheduling"
OFFER = "KIND_WAITLIST_OFFER"
LAPSE_BATCH = 100


async def offer_freed_slot(
    tx: asyncpg.Connection,
    slot_id: uuid.UUID,
    *,
    hold: timedelta,
    join_window_before: timedelta,
    no_show_grace: timedelta,
) -> uuid.UUID | None:
    """Offer a freed slot to the first in line for it (none: nobody waits, or the slot is no longer
    bookable); the offered appointment's id."""
    slot = await store.get_slot(tx, slot_id)
    if slot is None or slot["ght_id"] is None or not slot["active"] or not slot["bookable"]:
        return None
    while True:
        entry = await store.next_in_line(tx, slot["ght_id"], slot["specialty"], slot_id)
        if entry is None:
            return None
        new = store.NewAppointment(
            appointment_id=uuid.uuid4(),
            status="proposed",
            claim=hold,
            patient_id=entry["patient_id"],
            requester_rpps=entry["requester_rpps"],
            treating_rpps=None,
            booked_by_finess=entry["booked_by_finess"],
            booked_by_ght=entry["booked_by_ght"],
            booked_by_rpps=entry["booked_by_rpps"],
            consent_method=None,
            actor=SYSTEM,
            join_window_before=join_window_before,
            no_show_grace=no_show_grace,
            reason="WAITLIST_OFFER",
        )
        try:
            async with tx.transaction():  # a savepoint: a slot taken meanwhile is simply not offered
                row = await store.insert_appointment_on_slot(tx, slot_id, new, None)
        except asyncpg.ExclusionViolationError:
            return None
        if row is None:
            return None
        await store.insert_offer(tx, entry["entry_id"], slot_id, new.appointment_id, row["hold_expire_time"])
        await store.set_entry_state(tx, entry["entry_id"], "STATE_OFFERED")
        # The hub's notification of the offer, on the offered appointment, to the patient.
        await store.add_notification(
            tx, new.appointment_id, OFFER, "offer", names.PATIENT.format(entry["patient_id"])
        )
        return new.appointment_id


async def close_offer(
    tx: asyncpg.Connection,
    offer: Any,
    state: str,
    *,
    hold: timedelta,
    join_window_before: timedelta,
    no_show_grace: timedelta,
) -> uuid.UUID | None:
    """An open offer lapsed (LAPSED: the entry waits again) or was withdrawn (WITHDRAWN: the entry is being
    cancelled): its proposal is released and the slot offered to the next in line."""
    appointment = await store.lock_appointment(tx, offer["appointment_id"])
    if appointment is not None and appointment["status"] == "proposed":
        await store.cancel(
            tx,
            appointment,
            status="cancelled",
            initiator="PARTY_SYSTEM",
            reason="CANCELLATION_REASON_HOLD_EXPIRED",
            note="",
            actor=SYSTEM,
        )
    await store.set_offer_state(tx, offer["offer_id"], state)
    if state == "LAPSED":
        await store.set_entry_state(tx, offer["entry_id"], "STATE_WAITING")
    return await offer_freed_slot(
        tx, offer["slot_id"], hold=hold, join_window_before=join_window_before, no_show_grace=no_show_grace
    )


class WaitlistLapser(Periodic):
    """The service's lapse job: every offer past its hold time goes to the next in line."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        hold: timedelta,
        join_window_before: timedelta,
        no_show_grace: timedelta,
        interval: float,
    ) -> None:
        super().__init__("waitlist-lapse", self.lapse_due, interval)
        self._pool = pool
        self._durations = {
            "hold": hold,
            "join_window_before": join_window_before,
            "no_show_grace": no_show_grace,
        }

    async def lapse_due(self, as_of: datetime | None = None) -> int:
        """Pass on every offer whose hold time has passed at `as_of` (now by default); how many."""
        moment = as_of or datetime.now(UTC)
        passed = 0
        while True:
            async with store.transaction(self._pool) as tx:
                offers = await store.due_offers(tx, moment, LAPSE_BATCH)
                for offer in offers:
                    await close_offer(tx, offer, "LAPSED", **self._durations)
            passed += len(offers)
            if len(offers) < LAPSE_BATCH:
                break
        if passed:
            log.info("waitlist: %d offers lapsed and passed on", passed)
        return passed
