"""Scheduling on the kit's case plumbing: the one idempotency ledger and the one outbox shape.

`scheduling.requests` becomes `scheduling.idempotency` (rows recorded before knew neither actor nor digest:
they keep '' and a retry of them is checked on the method only) and `scheduling.workflow_outbox` becomes
`scheduling.outbox` (pending commands carried over, so no booking loses its workflow start).
"""

from yoyo import step

from services.kit.cases import outbox_migration
from services.kit.idempotency import ledger_migration

__depends__ = {"0001.scheduling-schema"}

steps = [
    step(
        ledger_migration("scheduling")
        + """
INSERT INTO scheduling.idempotency (request_id, method, resources, create_time)
SELECT request_id, method, resources, create_time FROM scheduling.requests;
DROP TABLE scheduling.requests;
""",
        "DROP TABLE scheduling.idempotency",
    ),
    step(
        outbox_migration("scheduling")
        + """
INSERT INTO scheduling.outbox
    (case_id, command, create_time, attempts, next_attempt_time, last_error, done_time)
SELECT appointment_id, kind, create_time, attempts, next_attempt_time, last_error, done_time
FROM scheduling.workflow_outbox ORDER BY event_id;
DROP TABLE scheduling.workflow_outbox;
""",
        "DROP TABLE scheduling.outbox",
    ),
]
