"""Expertise, issue 13 items 17 and 13: notifications that leave the hub, the record as a FHIR document.

- `notifications` gain their delivery: the channel (e-mail or webhook), where it stands, attempts and the last
  error (a reason code, never an address). Rows written before keep `DELIVERY_STATE_RECORDED`.
- `record_documents` / `dmp_submissions`: the kit's shapes (services/kit/records.py).
- an index for the activity reports (region, month of creation).
"""

from yoyo import step

from services.kit.records import records_migration

__depends__ = {"0002.expertise-case-kit"}

steps = [
    step(
        """
ALTER TABLE expertise.notifications
    ADD COLUMN channel text,
    ADD COLUMN delivery_state text NOT NULL DEFAULT 'DELIVERY_STATE_RECORDED',
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN deliver_time timestamptz,
    ADD CONSTRAINT notifications_channel_known CHECK (
        channel IS NULL OR channel IN ('NOTIFICATION_CHANNEL_EMAIL', 'NOTIFICATION_CHANNEL_WEBHOOK')),
    ADD CONSTRAINT notifications_delivery_state_known CHECK (delivery_state IN (
        'DELIVERY_STATE_RECORDED', 'DELIVERY_STATE_PENDING', 'DELIVERY_STATE_DELIVERED',
        'DELIVERY_STATE_FAILED')),
    ADD CONSTRAINT notifications_delivered_has_time CHECK (
        (delivery_state = 'DELIVERY_STATE_DELIVERED') = (deliver_time IS NOT NULL));
CREATE INDEX requests_region_create_time_idx ON expertise.requests (region, create_time);
"""
        + records_migration("expertise"),
        """
DROP TABLE expertise.dmp_submissions;
DROP TABLE expertise.record_documents;
DROP INDEX expertise.requests_region_create_time_idx;
ALTER TABLE expertise.notifications
    DROP COLUMN channel, DROP COLUMN delivery_state, DROP COLUMN attempts, DROP COLUMN last_error,
    DROP COLUMN deliver_time;
""",
    ),
]
