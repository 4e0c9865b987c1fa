-- depends: 0009.scheduling-waitlist

-- Issue 15 §4: SearchSlots over a region. A search reads candidate slots in start order and keeps those that
-- no live claim of the practitioner overlaps. Probing the exclusion constraint's GiST index for each candidate
-- cost ~90 % of a search's time in the database (every entry of every page it visits is tested on three
-- keys); a btree range by practitioner and start is ~10 times cheaper, provided that an appointment's period
-- has a longest length, so that the range is bounded on both sides.
--
-- An appointment occupies its slot's period: `[start_time, end_time + buffer)`, a slot being at most 4 hours
-- (schedule_service_types_duration_range) and a buffer at most 2 hours (schedules_buffer_range). Said here
-- for every appointment, since the search relies on it (the freeness check in store.py).
ALTER TABLE scheduling.appointments
    ADD CONSTRAINT appointments_occupied_bounded CHECK (
        occupied = tstzrange(start_time, upper(occupied)) AND upper(occupied) <= start_time + interval '6 hours'
    );

-- The live claims of a practitioner in start order, with what the freeness check reads (no heap access).
CREATE INDEX appointments_live_rpps_start_idx ON scheduling.appointments (rpps, start_time)
    INCLUDE (occupied, claimed)
    WHERE status IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'noshow');
