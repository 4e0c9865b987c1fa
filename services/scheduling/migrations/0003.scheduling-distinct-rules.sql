-- depends: 0002.scheduling-case-kit

-- A weekly rule given twice (the same day, times, service type and validity) used to be accepted; every
-- later re-materialisation of its schedule then upserted each of its slots twice in one statement and failed
-- (issue 9.10). The copies add nothing: the oldest of each set stays, the others go, and a constraint refuses
-- a new copy (AVAILABILITY_RULE_EXISTS). Overlapping rules that differ stay allowed; the materialiser keeps
-- one slot per service type and start.
DELETE FROM scheduling.availability_rules r
USING scheduling.availability_rules kept
WHERE kept.schedule_id = r.schedule_id
  AND kept.day_of_week = r.day_of_week
  AND kept.start_local = r.start_local
  AND kept.end_local = r.end_local
  AND kept.service_type = r.service_type
  AND kept.valid_from IS NOT DISTINCT FROM r.valid_from
  AND kept.valid_until IS NOT DISTINCT FROM r.valid_until
  AND (kept.create_time, kept.rule_id) < (r.create_time, r.rule_id);

ALTER TABLE scheduling.availability_rules
    ADD CONSTRAINT availability_rules_distinct UNIQUE NULLS NOT DISTINCT
        (schedule_id, day_of_week, start_local, end_local, service_type, valid_from, valid_until);
