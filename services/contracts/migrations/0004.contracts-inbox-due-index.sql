-- depends: 0003.contracts-roles
-- The inbox's default order (the due date, then the case) over the open cases: a page of 50 is read in that
-- order and stops at the 51st visible row, instead of sorting every open case of the region (50,000 cases:
-- from about 90 ms to about 1 ms; tests/bench/bench_console.py). The expression is store.ORDERS["DUE_TIME"].
CREATE INDEX cases_inbox_due_idx ON contracts.cases (
    (coalesce(least(due_time, legal_deadline_time), 'infinity'::timestamptz)), case_id
) WHERE NOT closed;
