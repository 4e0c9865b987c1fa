"""Scheduling, issue 13 items 17, 13, 16, 12: notifications that leave the hub, the record as a FHIR document,
activity reports, téléconseils.

- `notifications` gain their delivery: the channel (e-mail or webhook), where it stands, attempts and the last
  error (a reason code, never an address). Rows written before keep `DELIVERY_STATE_RECORDED`.
- `join_tokens`: the tokens of join links, kept hashed (SHA-256): the database never holds a usable link.
- `record_documents` / `dmp_submissions`: the kit's shapes (services/kit/records.py).
- `slot_supply`: how many slots each (schedule, local month) offered and how many were taken, tallied when
  past slots are pruned, so slot utilisation outlives the slots themselves.
- `teleconseils`: téléconseils personnalisés traced in the patient's care (never billed).
"""

from yoyo import step

from services.kit.records import records_migration

__depends__ = {"0002.scheduling-case-kit"}

steps = [
    step(
        """
ALTER TABLE scheduling.notifications
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

CREATE TABLE scheduling.join_tokens (
    token_hash bytea NOT NULL,
    appointment_id uuid NOT NULL,
    participant text NOT NULL,
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT join_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT join_tokens_appointment_fkey FOREIGN KEY (appointment_id)
        REFERENCES scheduling.appointments (appointment_id),
    CONSTRAINT join_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);
CREATE INDEX join_tokens_appointment_idx ON scheduling.join_tokens (appointment_id);

CREATE TABLE scheduling.slot_supply (
    schedule_id uuid NOT NULL,
    month date NOT NULL,
    region_code text NOT NULL,
    ght_id text,
    finess text NOT NULL,
    specialty text NOT NULL,
    offered integer NOT NULL,
    used integer NOT NULL,
    CONSTRAINT slot_supply_pkey PRIMARY KEY (schedule_id, month),
    CONSTRAINT slot_supply_month_first_day CHECK (extract(day FROM month) = 1),
    CONSTRAINT slot_supply_counts CHECK (offered >= 0 AND used >= 0 AND used <= offered)
);

CREATE TABLE scheduling.teleconseils (
    teleconseil_id uuid NOT NULL,
    patient_id uuid NOT NULL,
    rpps text NOT NULL,
    finess text NOT NULL,
    ght_id text,
    region_code text NOT NULL,
    advice_time timestamptz NOT NULL,
    channel text NOT NULL,
    summary text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT teleconseils_pkey PRIMARY KEY (teleconseil_id),
    CONSTRAINT teleconseils_rpps_format CHECK (rpps ~ '^[0-9]{11}$'),
    CONSTRAINT teleconseils_channel_known CHECK (
        channel IN ('CHANNEL_PHONE', 'CHANNEL_VIDEO', 'CHANNEL_MESSAGE')),
    CONSTRAINT teleconseils_summary_length CHECK (length(summary) BETWEEN 1 AND 4000)
);
CREATE INDEX teleconseils_patient_idx
    ON scheduling.teleconseils (patient_id, advice_time DESC, teleconseil_id);
COMMENT ON TABLE scheduling.teleconseils IS
    'Téléconseils personnalisés traced in the patient''s care (CNOM 2016 proposal 7); never billed (§7.1).';
"""
        + records_migration("scheduling"),
        """
DROP TABLE scheduling.dmp_submissions;
DROP TABLE scheduling.record_documents;
DROP TABLE scheduling.teleconseils;
DROP TABLE scheduling.slot_supply;
DROP TABLE scheduling.join_tokens;
ALTER TABLE scheduling.notifications
    DROP COLUMN channel, DROP COLUMN delivery_state, DROP COLUMN attempts, DROP COLUMN last_error,
    DROP COLUMN deliver_time;
""",
    ),
]
