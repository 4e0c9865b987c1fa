"""Exports of the filtered inbox, CSV or XLSX, produced in the background.

An export is a row of `console.exports` (PENDING → RUNNING → DONE or FAILED); one worker task per console
process takes the oldest pending one (`FOR UPDATE SKIP LOCKED`, so replicas share the queue), pages through
`ListCases` as the officer who asked, writes the file (XlsxWriter in constant-memory mode for XLSX) and
notifies them. A process stopped mid-export leaves it RUNNING; the next start queues it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qs, parse_qsl

from parcours.contracts.v1 import contracts_pb2

from services.console import french
from services.console.hub import Hub, ServiceError
from services.console.inbox import InboxQuery
from services.console.security import Officer
from services.console.store import ExportRow, Store

logger = logging.getLogger(__name__)

COLUMNS = (
    "Dossier",
    "Type",
    "État",
    "Titre",
    "Région",
    "Département",
    "GHT",
    "Porteur",
    "Étape",
    "Pris en charge par",
    "Échéance de l'étape",
    "En retard",
    "Échéance légale",
    "Fin de validité",
    "Avis en attente",
    "Dernière modification",
)


def row_of(case: contracts_pb2.CaseSummary, region: str | None) -> list[object]:
    step = case.current_step if case.HasField("current_step") else None

    def instant(ts: object) -> str:
        return french.when(ts.ToDatetime(tzinfo=UTC), region) if ts is not None else ""  # type: ignore[attr-defined]

    return [
        case.name,
        french.label(french.KINDS, contracts_pb2.CaseKind.Name(case.kind)),
        french.label(french.STATES, case.state),
        case.title,
        case.region.removeprefix("regions/"),
        case.departement,
        case.ght.removeprefix("ghts/"),
        case.promoter,
        french.label(french.STEPS, contracts_pb2.Step.Name(step.step)) if step else "",
        step.claimant.removeprefix("staff/") if step else "",
        instant(step.due_time) if step and step.HasField("due_time") else "",
        "oui" if step and step.overdue else "non",
        instant(case.legal_deadline_time) if case.HasField("legal_deadline_time") else "",
        instant(case.expire_time) if case.HasField("expire_time") else "",
        case.open_opinions,
        instant(case.update_time) if case.HasField("update_time") else "",
    ]


def to_csv(rows: Iterable[Sequence[object]]) -> bytes:
    out = io.StringIO()
    # A BOM and semicolons: what a French spreadsheet opens as columns without an import wizard.
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def to_xlsx(rows: Iterable[Sequence[object]]) -> bytes:
    # Imported on the first spreadsheet export: a console that has not made one does not carry it.
    import xlsxwriter

    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"constant_memory": True, "in_memory": True})
    sheet = book.add_worksheet("Dossiers")
    bold = book.add_format({"bold": True})
    sheet.write_row(0, 0, COLUMNS, bold)
    sheet.freeze_panes(1, 0)
    for index, row in enumerate(rows, start=1):
        sheet.write_row(index, 0, row)
    book.close()
    return out.getvalue()


async def produce(hub: Hub, store: Store, export: ExportRow) -> int:
    """Write the export's file; the number of rows."""
    officer = Officer.from_json(export.officer)
    params = dict(parse_qsl(export.query))
    multi = {k: v for k, v in parse_qs(export.query).items()}
    query = InboxQuery.parse(params, multi)
    query.page_token = ""
    hub.require("contracts")
    assert hub.contracts is not None
    request = query.list_request(page_size=500)
    rows: list[list[object]] = []
    while True:
        response = await hub.call(officer, "contracts", hub.contracts.ListCases, request)
        rows += [row_of(case, officer.region) for case in response.cases]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    stamp = datetime.now(UTC).astimezone(french.zone_of(officer.region)).strftime("%Y-%m-%d-%H%M")
    if export.format == "xlsx":
        content, filename = await asyncio.to_thread(to_xlsx, rows), f"dossiers-{stamp}.xlsx"
    else:
        content, filename = await asyncio.to_thread(to_csv, rows), f"dossiers-{stamp}.csv"
    await store.finish_export(export.export_id, content, filename, len(rows))
    return len(rows)


class ExportWorker:
    """The background task: produces pending exports one at a time."""

    name = "exports"

    def __init__(self, hub: Hub, store: Store, poll_seconds: float = 5.0) -> None:
        self._hub = hub
        self._store = store
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set after each export finishes (tests and the bench await it).
        self.finished = asyncio.Condition()
        self.done_count = 0

    def nudge(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self._store.requeue_running_exports()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                export = await self._store.claim_export()
                if export is None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
                    continue
                await self._one(export)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("export worker failed; retrying in %ss", self._poll)
                await asyncio.sleep(self._poll)

    async def _one(self, export: ExportRow) -> None:
        try:
            count = await produce(self._hub, self._store, export)
            await self._store.notify(
                export.owner,
                "export_ready",
                f"Votre export {export.format.upper()} de {french.number(count)} dossier(s) est prêt.",
                f"/exports/{export.export_id}",
            )
            logger.info("export %s done: %d rows", export.export_id, count)
        except ServiceError as error:
            await self._store.fail_export(export.export_id, french.refusal(error.reason, error.code.name))
            await self._store.notify(export.owner, "export_ready", "Votre export a échoué.", "/exports")
        async with self.finished:
            self.done_count += 1
            self.finished.notify_all()
