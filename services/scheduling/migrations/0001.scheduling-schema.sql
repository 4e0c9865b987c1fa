-- The scheduling service's own schema: schedules (one agenda per practitioner and practice place), weekly
-- availability rules written in the practice place's time zone, one-off exceptions, the slots materialised
-- from them, appointments and their history, and the transactional outbox that starts each booking's
-- Teleconsultation workflow.
--
-- Every instant is a UTC timestamptz; local wall-clock values (rule times, exception days) are `time` and
-- `date` read in the schedule's own time zone. Enumerated values are stored as proto enum NAMEs, except
-- appointment statuses, stored as FHIR Appointment.status codes.
--
-- Directory facts a schedule depends on (specialty, GHT, region, time zone of the practice place) are copied
-- here when the schedule is created, so that slot search never calls another service.

-- Equality on text in a GiST index, for the exclusion constraint that makes double booking impossible.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE SCHEMA scheduling;

CREATE FUNCTION scheduling.touch_update_time() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.update_time := now();
    RETURN NEW;
END;
$$;

CREATE TABLE scheduling.schedules (
    schedule_id uuid NOT NULL,
    rpps text NOT NULL,
    profession text NOT NULL,
    specialty text NOT NULL,
    finess text NOT NULL,
    ght_id text,
    region_code text NOT NULL,
    time_zone text NOT NULL,
    buffer interval NOT NULL DEFAULT '0',
    minimum_notice interval NOT NULL DEFAULT '0',
    cancellation_cutoff interval NOT NULL DEFAULT '0',
    booking_horizon_days integer NOT NULL DEFAULT 28,
    active boolean NOT NULL DEFAULT true,
    -- The last local day whose slots are materialised (NULL: none yet).
    materialised_until date,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_pkey PRIMARY KEY (schedule_id),
    -- One agenda per practice place (SAS IG: one Schedule per PractitionerRole).
    CONSTRAINT schedules_rpps_finess_key UNIQUE (rpps, finess),
    CONSTRAINT schedules_rpps_format CHECK (rpps ~ '^[0-9]{11}$'),
    CONSTRAINT schedules_finess_format CHECK (finess ~ '^(?:[0-9]{2}|2[AB])[0-9]{7}$'),
    CONSTRAINT schedules_time_zone_known CHECK (time_zone IN (
        'Europe/Paris', 'America/Guadeloupe', 'America/Martinique', 'America/Cayenne', 'Indian/Reunion',
        'Indian/Mayotte'
    )),
    CONSTRAINT schedules_buffer_range CHECK (buffer >= '0' AND buffer <= '2 hours'),
    CONSTRAINT schedules_minimum_notice_range CHECK (minimum_notice >= '0' AND minimum_notice <= '30 days'),
    CONSTRAINT schedules_cutoff_range CHECK (cancellation_cutoff >= '0' AND cancellation_cutoff <= '30 days'),
    CONSTRAINT schedules_horizon_range CHECK (booking_horizon_days BETWEEN 1 AND 400)
);
CREATE INDEX schedules_finess_idx ON scheduling.schedules (finess, schedule_id);
CREATE INDEX schedules_region_idx ON scheduling.schedules (region_code, schedule_id);
CREATE TRIGGER schedules_touch BEFORE UPDATE ON scheduling.schedules
    FOR EACH ROW EXECUTE FUNCTION scheduling.touch_update_time();

CREATE TABLE scheduling.schedule_service_types (
    schedule_id uuid NOT NULL,
    service_type text NOT NULL,
    slot_duration interval NOT NULL,
    CONSTRAINT schedule_service_types_pkey PRIMARY KEY (schedule_id, service_type),
    CONSTRAINT schedule_service_types_schedule_fkey FOREIGN KEY (schedule_id)
        REFERENCES scheduling.schedules (schedule_id) ON DELETE CASCADE,
    CONSTRAINT schedule_service_types_known CHECK (
        service_type ~ '^SERVICE_TYPE_[A-Z_]+$' AND service_type <> 'SERVICE_TYPE_UNSPECIFIED'
    ),
    CONSTRAINT schedule_service_types_duration_range CHECK (
        slot_duration >= '5 minutes' AND slot_duration <= '4 hours'
    )
);

CREATE TABLE scheduling.availability_rules (
    rule_id uuid NOT NULL,
    schedule_id uuid NOT NULL,
    -- ISO day of week, local: 1 = Monday ... 7 = Sunday.
    day_of_week smallint NOT NULL,
    start_local time NOT NULL,
    end_local time NOT NULL,
    service_type text NOT NULL,
    valid_from date,
    valid_until date,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT availability_rules_pkey PRIMARY KEY (rule_id),
    -- A rule offers a service type its schedule has a slot length for.
    CONSTRAINT availability_rules_service_type_fkey FOREIGN KEY (schedule_id, service_type)
        REFERENCES scheduling.schedule_service_types (schedule_id, service_type) ON DELETE CASCADE,
    CONSTRAINT availability_rules_day_range CHECK (day_of_week BETWEEN 1 AND 7),
    CONSTRAINT availability_rules_times_ordered CHECK (end_local > start_local),
    CONSTRAINT availability_rules_validity_ordered CHECK (valid_until IS NULL OR valid_from IS NULL
        OR valid_until >= valid_from)
);
CREATE INDEX availability_rules_schedule_idx ON scheduling.availability_rules (schedule_id, rule_id);

-- A period without availability for one schedule, every schedule of a practitioner, of an establishment or of
-- a region. Either instants (`period`) or whole local days (`days`, read in each schedule's own time zone).
CREATE TABLE scheduling.availability_exceptions (
    exception_id uuid NOT NULL,
    schedule_id uuid,
    rpps text,
    finess text,
    region_code text,
    kind text NOT NULL,
    period tstzrange,
    days daterange,
    note text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT availability_exceptions_pkey PRIMARY KEY (exception_id),
    CONSTRAINT availability_exceptions_schedule_fkey FOREIGN KEY (schedule_id)
        REFERENCES scheduling.schedules (schedule_id) ON DELETE CASCADE,
    CONSTRAINT availability_exceptions_one_scope CHECK (
        num_nonnulls(schedule_id, rpps, finess, region_code) = 1
    ),
    CONSTRAINT availability_exceptions_one_period CHECK (num_nonnulls(period, days) = 1),
    CONSTRAINT availability_exceptions_period_bounded CHECK (
        period IS NULL OR (NOT lower_inf(period) AND NOT upper_inf(period) AND NOT isempty(period))
    ),
    CONSTRAINT availability_exceptions_days_bounded CHECK (
        days IS NULL OR (NOT lower_inf(days) AND NOT upper_inf(days) AND NOT isempty(days))
    ),
    CONSTRAINT availability_exceptions_kind_known CHECK (
        kind ~ '^EXCEPTION_KIND_[A-Z_]+$' AND kind <> 'EXCEPTION_KIND_UNSPECIFIED'
    ),
    CONSTRAINT availability_exceptions_note_length CHECK (length(note) <= 200)
);
CREATE INDEX availability_exceptions_schedule_idx ON scheduling.availability_exceptions (schedule_id)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX availability_exceptions_rpps_idx ON scheduling.availability_exceptions (rpps)
    WHERE rpps IS NOT NULL;
CREATE INDEX availability_exceptions_finess_idx ON scheduling.availability_exceptions (finess)
    WHERE finess IS NOT NULL;
CREATE INDEX availability_exceptions_region_idx ON scheduling.availability_exceptions (region_code)
    WHERE region_code IS NOT NULL;

-- Bookable periods materialised from the rules minus the exceptions, with the schedule's search keys copied
-- in so that a search reads one table in start order. `occupied` is the slot plus the schedule's buffer: what
-- an appointment on it keeps the practitioner from. A slot's id is derived from (schedule, service type,
-- start), so materialising again yields the same ids.
CREATE TABLE scheduling.slots (
    slot_id uuid NOT NULL,
    schedule_id uuid NOT NULL,
    rpps text NOT NULL,
    finess text NOT NULL,
    ght_id text,
    region_code text NOT NULL,
    specialty text NOT NULL,
    time_zone text NOT NULL,
    service_type text NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    occupied tstzrange NOT NULL,
    minimum_notice interval NOT NULL,
    CONSTRAINT slots_pkey PRIMARY KEY (slot_id),
    CONSTRAINT slots_schedule_fkey FOREIGN KEY (schedule_id)
        REFERENCES scheduling.schedules (schedule_id) ON DELETE CASCADE,
    CONSTRAINT slots_schedule_start_key UNIQUE (schedule_id, service_type, start_time),
    CONSTRAINT slots_times_ordered CHECK (end_time > start_time),
    CONSTRAINT slots_occupied_covers CHECK (lower(occupied) = start_time AND upper(occupied) >= end_time)
);
-- One index per way of searching, each in start order so that "the earliest free slots" is a short scan.
CREATE INDEX slots_specialty_start_idx ON scheduling.slots (specialty, start_time, slot_id);
CREATE INDEX slots_region_specialty_start_idx ON scheduling.slots (region_code, specialty, start_time, slot_id);
CREATE INDEX slots_ght_specialty_start_idx ON scheduling.slots (ght_id, specialty, start_time, slot_id);
CREATE INDEX slots_rpps_start_idx ON scheduling.slots (rpps, start_time, slot_id);
CREATE INDEX slots_finess_start_idx ON scheduling.slots (finess, start_time, slot_id);
CREATE INDEX slots_start_idx ON scheduling.slots (start_time, slot_id);

-- Appointments. No two live claims of one practitioner may overlap (the exclusion constraint below): this is
-- what makes double booking impossible, whatever the concurrency, across every practice place.
--
-- A claim is live over `claimed`, a range of instants: from the moment the row is written to its
-- `hold_expire_time` for a hold or a proposal, without end once booked. Two rows conflict only if their
-- occupied periods AND their claims overlap, so a hold that has lapsed no longer conflicts with anything
-- written after its expiry: holds lapse by themselves, no sweeper needed. A cancelled, entered-in-error or
-- superseded row leaves the constraint through its status.
CREATE TABLE scheduling.appointments (
    appointment_id uuid NOT NULL,
    slot_id uuid,
    schedule_id uuid NOT NULL,
    rpps text NOT NULL,
    finess text NOT NULL,
    ght_id text,
    region_code text NOT NULL,
    specialty text NOT NULL,
    time_zone text NOT NULL,
    service_type text NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    occupied tstzrange NOT NULL,
    -- FHIR Appointment.status as stored; a hold or proposal past its hold_expire_time reads as `cancelled`
    -- (the store computes the status as of now when it reads a row).
    status text NOT NULL,
    claimed tstzrange NOT NULL,
    hold_expire_time timestamptz,
    patient_id uuid,
    requester_rpps text,
    treating_rpps text,
    booked_by_finess text,
    booked_by_ght text,
    booked_by_rpps text,
    consent_method text,
    consent_time timestamptz,
    consent_recorded_by text,
    cancel_initiator text,
    cancel_reason text,
    cancel_note text,
    cancel_time timestamptz,
    cancelled_by text,
    rescheduled_from uuid,
    rescheduled_to uuid,
    join_open_time timestamptz NOT NULL,
    no_show_time timestamptz NOT NULL,
    -- The R.6316-4 record (TeleconsultationRecord as proto JSON) once fulfilled.
    record jsonb,
    -- The patient's situation for billing (parcours.billing.v1.Circumstances as proto JSON).
    billing_circumstances jsonb,
    billing_state text,
    billing_charges text[] NOT NULL DEFAULT '{}',
    billing_reason text,
    billing_message text,
    billing_update_time timestamptz,
    -- Set in the transaction that books it, with the outbox row that starts the workflow.
    workflow_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointments_pkey PRIMARY KEY (appointment_id),
    CONSTRAINT appointments_schedule_fkey FOREIGN KEY (schedule_id) REFERENCES scheduling.schedules (schedule_id),
    CONSTRAINT appointments_status_known CHECK (status IN (
        'proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow', 'entered-in-error'
    )),
    CONSTRAINT appointments_times_ordered CHECK (end_time > start_time),
    CONSTRAINT appointments_hold_expiry CHECK (
        status NOT IN ('proposed', 'pending') OR hold_expire_time IS NOT NULL
    ),
    CONSTRAINT appointments_booked_has_patient CHECK (
        status IN ('pending', 'cancelled', 'entered-in-error') OR patient_id IS NOT NULL
    ),
    CONSTRAINT appointments_rescheduled_from_fkey FOREIGN KEY (rescheduled_from)
        REFERENCES scheduling.appointments (appointment_id),
    CONSTRAINT appointments_rescheduled_to_fkey FOREIGN KEY (rescheduled_to)
        REFERENCES scheduling.appointments (appointment_id),
    -- Deferrable so that a reschedule can book the new slot before cancelling the old one in one transaction
    -- even when both overlap (a move by a few minutes); immediate everywhere else.
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (rpps WITH =, occupied WITH &&, claimed WITH &&)
        WHERE (status IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'noshow'))
        DEFERRABLE INITIALLY IMMEDIATE
);
CREATE INDEX appointments_rpps_start_idx ON scheduling.appointments (rpps, start_time, appointment_id);
CREATE INDEX appointments_patient_idx ON scheduling.appointments (patient_id, start_time)
    WHERE patient_id IS NOT NULL;
CREATE INDEX appointments_ght_start_idx ON scheduling.appointments (ght_id, start_time, appointment_id);
CREATE INDEX appointments_booked_by_ght_idx ON scheduling.appointments (booked_by_ght, start_time)
    WHERE booked_by_ght IS NOT NULL;
CREATE INDEX appointments_requester_idx ON scheduling.appointments (requester_rpps, start_time)
    WHERE requester_rpps IS NOT NULL;
CREATE INDEX appointments_treating_idx ON scheduling.appointments (treating_rpps, start_time)
    WHERE treating_rpps IS NOT NULL;
CREATE TRIGGER appointments_touch BEFORE UPDATE ON scheduling.appointments
    FOR EACH ROW EXECUTE FUNCTION scheduling.touch_update_time();

-- Every status change, append-only (who created, moved, cancelled).
-- Keyed by appointment first: an appointment's history is one index range (and a booking writes one index).
CREATE TABLE scheduling.appointment_history (
    appointment_id uuid NOT NULL,
    change_id bigint GENERATED ALWAYS AS IDENTITY,
    status text NOT NULL,
    change_time timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    reason text NOT NULL DEFAULT '',
    CONSTRAINT appointment_history_pkey PRIMARY KEY (appointment_id, change_id),
    CONSTRAINT appointment_history_appointment_fkey FOREIGN KEY (appointment_id)
        REFERENCES scheduling.appointments (appointment_id)
);

-- Reminders, join links and reports sent; the key makes a retried activity send once.
CREATE TABLE scheduling.notifications (
    appointment_id uuid NOT NULL,
    kind text NOT NULL,
    label text NOT NULL,
    recipient text NOT NULL,
    send_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (appointment_id, kind, label, recipient),
    CONSTRAINT notifications_appointment_fkey FOREIGN KEY (appointment_id)
        REFERENCES scheduling.appointments (appointment_id),
    CONSTRAINT notifications_kind_known CHECK (kind IN ('KIND_REMINDER', 'KIND_JOIN_LINK', 'KIND_REPORT'))
);

-- Client request ids of mutating RPCs, written in the transaction of the write they caused: a retried
-- request finds its first outcome (the resources it wrote) and never writes twice.
-- (Rows past the clients' retry horizon may be purged by create_time; a rare sweep, so no index on it.)
CREATE TABLE scheduling.requests (
    request_id uuid NOT NULL,
    method text NOT NULL,
    resources text[] NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT requests_pkey PRIMARY KEY (request_id)
);

-- Transactional outbox: a row per workflow command, written in the transaction of the change that needs it,
-- relayed to Temporal after commit (and again at every process start until done). `start` starts the
-- appointment's Teleconsultation workflow (an already-started id counts as done); `cancel` signals it.
CREATE TABLE scheduling.workflow_outbox (
    event_id bigint GENERATED ALWAYS AS IDENTITY,
    appointment_id uuid NOT NULL,
    kind text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_error text,
    done_time timestamptz,
    CONSTRAINT workflow_outbox_pkey PRIMARY KEY (event_id),
    CONSTRAINT workflow_outbox_appointment_fkey FOREIGN KEY (appointment_id)
        REFERENCES scheduling.appointments (appointment_id),
    CONSTRAINT workflow_outbox_kind_known CHECK (kind IN ('start', 'cancel'))
);
-- Only pending rows are ever searched (the relay's claims, an appointment's pending commands): a small index.
CREATE INDEX workflow_outbox_pending_idx ON scheduling.workflow_outbox (appointment_id, event_id)
    WHERE done_time IS NULL;

