"""What the console tells officers, in the console and by e-mail, as each one chose on /preferences.

- **Case notifications** (`CaseNotificationPoller`): every `notification_poll_seconds`, for each officer who
  signed in within the last week, the console asks the contracts service *as that officer*
  (ListNotifications, with their delegate token: the service decides what they may hear of) for what came
  after the last notification it took for them (`console.notification_cursors`), and tells them of each
  event: a French sentence naming the event and the case, with a link to the case. Nothing that happened
  before the officer's first sign-in the console remembers is replayed to them.
- **The daily digest** (`DailyDigest`): once a day, at `digest_hour` (Europe/Paris), every officer seen this
  week gets one notification counting their "à échéance", overdue and to-process cases, read as them.

Both deliver through `Deliveries`: in the console (a `console.notifications` row) when the officer's
preference for that event has in-app on (the default), and by e-mail through the hub's SMTP transport
(services/kit/notify.py, the `PARCOURS_SMTP_*` settings) when they chose e-mail and the OpenID provider gave
their address. Each is keyed per officer (`contracts-{id}`, `digest-{day}`): several replicas, a restart or
a second pass never tell twice. No patient data, and nothing of the case but its name, in either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from parcours.contracts.v1 import contracts_pb2

from services.console.french import EVENTS, KINDS, PARIS, label, number
from services.console.hub import Hub, ServiceError
from services.console.security import Officer
from services.console.store import Store
from services.kit.notify import DeliveryFailed, Notice, SmtpTransport

logger = logging.getLogger(__name__)

# Officers told: those who signed in within this long.
SEEN_WITHIN = timedelta(days=7)

# The console's preference each contracts event falls under (services/contracts/models.py EventKind); any
# other event a case tells an officer of is "case_changed".
PREFERENCE_OF_EVENT = {
    "STEP_OPENED": "case_assigned",
    "CLAIMED": "case_assigned",
    "RELEASED": "case_assigned",
    "REASSIGNED": "case_assigned",
    "OVERDUE": "step_overdue",
    "ESCALATED": "step_overdue",
    "REMINDED": "step_due_soon",
    "RENEWAL_REMINDER": "step_due_soon",
    "OPINION_GIVEN": "opinion_given",
    "OPINION_REVOKED": "opinion_given",
    "MESSAGE_POSTED": "message_received",
    "DOCUMENT_ADDED": "message_received",
    "DOCUMENTS_COMPLETED": "message_received",
    "RESUBMITTED": "message_received",
}


def preference_of(event: str) -> str:
    return PREFERENCE_OF_EVENT.get(event, "case_changed")


def case_text(item: contracts_pb2.Notification) -> str:
    """The in-app sentence (and the e-mail's first line): the event and the case, by its name only."""
    kind = label(KINDS, contracts_pb2.CaseKind.Name(item.case_kind))
    return f"{label(EVENTS, f'EVENT_KIND_{item.event}')} : {kind.lower()} {item.case}."


# What telling an officer came to (see `Deliveries.deliver`).
Outcome = Literal["told", "unchanged", "retry"]


class Deliveries:
    """Tells one officer of one thing, on the channels they chose for its event."""

    def __init__(self, store: Store, mailer: SmtpTransport | None, public_url: str) -> None:
        self._store, self._mailer, self._public_url = store, mailer, public_url.rstrip("/")

    async def deliver(
        self,
        officer: Officer,
        preferences: Mapping[str, tuple[bool, bool]],
        *,
        event: str,
        text: str,
        link: str,
        key: str,
        case: str = "",
    ) -> Outcome:
        """In-app and by e-mail as `preferences[event]` says: `told` if something new went out, `unchanged`
        if nothing (turned off, or already told), `retry` when an e-mail was due and could not be sent (the
        caller tries again later: the in-app row and a sent e-mail are keyed, never repeated)."""
        in_app, email = preferences.get(event, (True, False))
        told = in_app and await self._store.notify(officer.subject, event, text, link, key)
        if not email:
            return "told" if told else "unchanged"
        if not officer.email:
            logger.info("e-mail notification skipped: the provider gave no address for the officer")
            return "told" if told else "unchanged"
        if self._mailer is None or not self._mailer.enabled:
            logger.info("e-mail notification skipped: no SMTP relay is configured (PARCOURS_SMTP_HOST)")
            return "told" if told else "unchanged"
        if not await self._store.claim_mail(officer.subject, key):
            return "told" if told else "unchanged"
        url = f"{self._public_url}{link}"
        notice = Notice(
            key=f"console|{officer.subject}|{key}",
            case=case,
            event_type=f"parcours.console.{event}",
            kind=event,
            label=key,
            recipient=officer.subject,
            subject=f"Parcours : {text}"[:200],
            text=(
                f"{text}\n\nOuvrir dans la console : {url}\n\n"
                f"Vous recevez ce courriel selon vos préférences de notification : "
                f"{self._public_url}/preferences\n"
            ),
            occur_time=datetime.now(UTC),
        )
        try:
            await self._mailer.send(officer.email, notice)
        except DeliveryFailed as failed:
            await self._store.release_mail(officer.subject, key)
            logger.warning("e-mail notification not sent (%s): tried again at the next pass", failed)
            return "retry"
        return "told"


class CaseNotificationPoller:
    """One pass (`run_once`) tells every officer seen this week of their new case notifications."""

    name = "case-notifications"

    def __init__(self, store: Store, hub: Hub, deliveries: Deliveries, page_size: int = 200) -> None:
        self._store, self._hub, self._deliveries, self._page_size = store, hub, deliveries, page_size
        # At most this many pages per officer and pass (a long absence is caught up over a few passes).
        self._max_pages = 10

    async def run_once(self) -> int:
        """How many notifications went out (in the console or by e-mail) in this pass."""
        if self._hub.contracts is None:
            return 0
        taken = 0
        for data in await self._store.officers_seen(SEEN_WITHIN):
            officer = Officer.from_json(data)
            try:
                taken += await self._take(officer)
            except ServiceError as error:
                logger.info(
                    "case notifications not read for one officer: %s", error.reason or error.code.name
                )
        if taken:
            logger.info("case notifications: %d told", taken)
        return taken

    async def _take(self, officer: Officer) -> int:
        assert self._hub.contracts is not None
        cursor = await self._store.notification_cursor(officer.subject)
        preferences = await self._store.preferences(officer.subject)
        after, taken = cursor.last_notification_id, 0
        try:
            for _ in range(self._max_pages):
                reply = await self._hub.call(
                    officer,
                    "contracts",
                    self._hub.contracts.ListNotifications,
                    contracts_pb2.ListNotificationsRequest(
                        after_notification_id=after, page_size=self._page_size
                    ),
                )
                for item in reply.notifications:
                    if item.create_time.ToDatetime(tzinfo=UTC) >= cursor.since:
                        outcome = await self._deliveries.deliver(
                            officer,
                            preferences,
                            event=preference_of(item.event),
                            text=case_text(item),
                            link=f"/dossiers/{item.case}",
                            key=f"contracts-{item.notification_id}",
                            case=item.case,
                        )
                        if outcome == "retry":
                            return taken
                        taken += outcome == "told"
                    after = item.notification_id
                if not reply.next_page_token:
                    break
        finally:
            await self._store.advance_cursor(officer.subject, after)
        return taken


async def officers_to_digest(store: Store) -> list[Officer]:
    """Officers seen this week who did not turn the digest off on both channels."""
    found = []
    for data in await store.officers_seen(SEEN_WITHIN):
        officer = Officer.from_json(data)
        if any((await store.preferences(officer.subject))["daily_digest"]):
            found.append(officer)
    return found


async def send_digests(
    pool: asyncpg.Pool,
    store: Store,
    hub: Hub,
    now: datetime | None = None,
    deliveries: Deliveries | None = None,
) -> int:
    """One digest per officer for today's date; to how many officers it went."""
    now = now or datetime.now(UTC)
    today = now.astimezone(PARIS).date().isoformat()
    deliveries = deliveries or Deliveries(store, None, "")
    if hub.contracts is None:
        return 0
    written = 0
    for officer in await officers_to_digest(store):
        try:
            counted = await hub.call(
                officer, "contracts", hub.contracts.CountCases, contracts_pb2.CountCasesRequest()
            )
        except ServiceError as error:
            logger.info("digest skipped for one officer: %s", error.reason or error.code.name)
            continue
        counts = counted.counts
        text = (
            f"Synthèse du jour : {number(counts.due_soon)} dossier(s) à échéance, "
            f"{number(counts.overdue)} en "
            f"retard, {number(counts.to_process)} à traiter."
        )
        preferences = await store.preferences(officer.subject)
        outcome = await deliveries.deliver(
            officer,
            preferences,
            event="daily_digest",
            text=text,
            link="/dossiers?onglet=a-echeance",
            key=f"digest-{today}",
        )
        written += outcome == "told"
    return written


class DailyDigest:
    """Checks every few minutes whether today's digest is due and not yet sent."""

    name = "daily-digest"

    def __init__(
        self, pool: asyncpg.Pool, store: Store, hub: Hub, hour: int, deliveries: Deliveries | None = None
    ) -> None:
        self._pool, self._store, self._hub, self._hour = pool, store, hub, hour
        self._deliveries = deliveries

    async def run_once(self) -> None:
        if datetime.now(UTC).astimezone(PARIS).hour >= self._hour:
            sent = await send_digests(self._pool, self._store, self._hub, deliveries=self._deliveries)
            if sent:
                logger.info("daily digest: %d officer(s) notified", sent)
