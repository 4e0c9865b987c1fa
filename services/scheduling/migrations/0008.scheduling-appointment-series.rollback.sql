DROP INDEX scheduling.appointments_series_idx;
ALTER TABLE scheduling.appointments
    DROP CONSTRAINT appointments_series_index,
    DROP CONSTRAINT appointments_series_fkey,
    DROP COLUMN series_index,
    DROP COLUMN series_id;
DROP TABLE scheduling.appointment_series;
