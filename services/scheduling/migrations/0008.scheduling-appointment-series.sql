-- depends: 0004.scheduling-roles

-- Issue 13 item 14: recurring appointment series. A series is booked as one request; each occurrence is its
-- own appointment (with its own workflow) that points back to the series. The series keeps who may see it
-- the way an appointment does (practice place, GHT, the parties and the booker), so that one visibility rule
-- serves both. The scheduling role's default privileges (0004) cover the new table.
CREATE TABLE scheduling.appointment_series (
    series_id uuid NOT NULL,
    patient_id uuid NOT NULL,
    schedule_id uuid NOT NULL,
    rpps text NOT NULL,
    finess text NOT NULL,
    ght_id text,
    requester_rpps text,
    treating_rpps text,
    booked_by_finess text,
    booked_by_ght text,
    booked_by_rpps text,
    occurrence_count integer NOT NULL,
    interval_days integer NOT NULL,
    cancel_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointment_series_pkey PRIMARY KEY (series_id),
    CONSTRAINT appointment_series_schedule_fkey FOREIGN KEY (schedule_id)
        REFERENCES scheduling.schedules (schedule_id),
    CONSTRAINT appointment_series_occurrence_count CHECK (occurrence_count BETWEEN 2 AND 26),
    CONSTRAINT appointment_series_interval_days CHECK (interval_days BETWEEN 1 AND 28)
);
CREATE INDEX appointment_series_patient_idx
    ON scheduling.appointment_series (patient_id, create_time DESC, series_id DESC);

ALTER TABLE scheduling.appointments
    ADD COLUMN series_id uuid,
    ADD COLUMN series_index integer,
    ADD CONSTRAINT appointments_series_fkey FOREIGN KEY (series_id)
        REFERENCES scheduling.appointment_series (series_id),
    ADD CONSTRAINT appointments_series_index CHECK ((series_id IS NULL) = (series_index IS NULL));
CREATE INDEX appointments_series_idx ON scheduling.appointments (series_id, series_index)
    WHERE series_id IS NOT NULL;
