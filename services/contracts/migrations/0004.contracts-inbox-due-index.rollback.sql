DROP INDEX contracts.cases_inbox_due_idx;
