"""Billing on the kit's one idempotency ledger (services/kit/idempotency.py).

Request ids of RecordAct and ReverseCharge are checked and recorded in `billing.idempotency` like every other
service's (the same id for another call is REQUEST_ID_REUSED). The acts and charges keep the request id that
wrote them, as part of the record; their own uniqueness constraints, a second copy of that check, go. An act
id still names one act (ACT_ID_REUSED), a rule of the ledger's, not of idempotency.
"""

from yoyo import step

from services.kit.idempotency import ledger_migration

__depends__ = {"0003.billing-catalog-2026-2"}

steps = [
    step(
        ledger_migration("billing")
        + """
INSERT INTO billing.idempotency (request_id, method, resources, create_time)
SELECT request_id, 'RecordAct', ARRAY['acts/' || act_id], recorded_at FROM billing.acts;
INSERT INTO billing.idempotency (request_id, method, resources, create_time)
SELECT request_id, 'ReverseCharge', ARRAY['charges/' || charge_id::text], create_time
FROM billing.charges WHERE request_id IS NOT NULL;
ALTER TABLE billing.acts DROP CONSTRAINT acts_request_id_key;
ALTER TABLE billing.charges DROP CONSTRAINT charges_request_id_key;
""",
    )
]
