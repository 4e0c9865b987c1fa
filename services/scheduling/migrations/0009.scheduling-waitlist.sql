-- depends: 0008.scheduling-appointment-series

-- Issue 13 item 15: the waitlist. A patient waits for a specialty in a GHT; a slot of that specialty in that
-- GHT freed by a cancellation is offered to the first in line as a proposal (an appointment `proposed`, holding
-- the slot for the offer's hold time), with a notification; when the offer lapses the slot goes to the next
-- (the service's lapse job), and accepting books it. Everything is in these rows, changed in transactions:
-- nothing is lost when a process stops.
CREATE TABLE scheduling.waitlist_entries (
    entry_id uuid NOT NULL,
    patient_id uuid NOT NULL,
    ght_id text NOT NULL,
    specialty text NOT NULL,
    state text NOT NULL DEFAULT 'STATE_WAITING',
    requester_rpps text,
    booked_by_finess text,
    booked_by_ght text,
    booked_by_rpps text,
    booked_appointment_id uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waitlist_entries_pkey PRIMARY KEY (entry_id),
    CONSTRAINT waitlist_entries_state_known CHECK (
        state IN ('STATE_WAITING', 'STATE_OFFERED', 'STATE_BOOKED', 'STATE_CANCELLED')),
    CONSTRAINT waitlist_entries_booked_has_appointment CHECK (
        (state = 'STATE_BOOKED') = (booked_appointment_id IS NOT NULL))
);
-- The line: who waits for what, first come first offered.
CREATE INDEX waitlist_entries_line_idx ON scheduling.waitlist_entries (ght_id, specialty, create_time, entry_id)
    WHERE state = 'STATE_WAITING';
CREATE INDEX waitlist_entries_patient_idx ON scheduling.waitlist_entries (patient_id, create_time DESC);

CREATE TABLE scheduling.waitlist_offers (
    offer_id uuid NOT NULL,
    entry_id uuid NOT NULL,
    slot_id uuid NOT NULL,
    appointment_id uuid NOT NULL,
    state text NOT NULL DEFAULT 'OFFERED',
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waitlist_offers_pkey PRIMARY KEY (offer_id),
    CONSTRAINT waitlist_offers_entry_fkey FOREIGN KEY (entry_id) REFERENCES scheduling.waitlist_entries (entry_id),
    CONSTRAINT waitlist_offers_appointment_fkey FOREIGN KEY (appointment_id)
        REFERENCES scheduling.appointments (appointment_id),
    CONSTRAINT waitlist_offers_state_known CHECK (state IN ('OFFERED', 'ACCEPTED', 'LAPSED', 'WITHDRAWN')),
    -- A slot is offered once to each entry: when an offer lapses, the slot goes to the next in line.
    CONSTRAINT waitlist_offers_once UNIQUE (slot_id, entry_id)
);
CREATE INDEX waitlist_offers_open_idx ON scheduling.waitlist_offers (expire_time) WHERE state = 'OFFERED';
CREATE UNIQUE INDEX waitlist_offers_one_open_per_entry ON scheduling.waitlist_offers (entry_id)
    WHERE state = 'OFFERED';

ALTER TABLE scheduling.notifications DROP CONSTRAINT notifications_kind_known;
ALTER TABLE scheduling.notifications ADD CONSTRAINT notifications_kind_known
    CHECK (kind IN ('KIND_REMINDER', 'KIND_JOIN_LINK', 'KIND_REPORT', 'KIND_WAITLIST_OFFER'));
