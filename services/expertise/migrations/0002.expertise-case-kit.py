"""Expertise on the kit's case plumbing: the one idempotency ledger and the one outbox shape.

`expertise.applied_requests` becomes `expertise.idempotency` (rows recorded before knew no payload digest:
they keep '' and a retry of them is checked on the method only), and every case still REQUESTED (created,
its workflow maybe never started) gets a `start` command in `expertise.outbox`, so none stays without its
workflow.
"""

from yoyo import step

from services.kit.cases import outbox_migration
from services.kit.idempotency import ledger_migration

__depends__ = {"0001.expertise-schema"}

steps = [
    step(
        ledger_migration("expertise")
        + """
INSERT INTO expertise.idempotency (request_id, method, actor, resources, create_time)
SELECT request_id, method, 'practitioners/' || actor, ARRAY['teleexpertiseRequests/' || case_id::text],
       create_time
FROM expertise.applied_requests;
DROP TABLE expertise.applied_requests;
""",
        "DROP TABLE expertise.idempotency",
    ),
    step(
        outbox_migration("expertise")
        + """
INSERT INTO expertise.outbox (case_id, command)
SELECT case_id, 'start' FROM expertise.requests WHERE state = 'REQUESTED' ORDER BY create_time;
""",
        "DROP TABLE expertise.outbox",
    ),
]
