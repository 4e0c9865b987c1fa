ALTER TABLE directory.idempotency DROP COLUMN actor;
DELETE FROM directory.patients WHERE conflicts_with IS NOT NULL;
DROP INDEX directory.patients_ins_key;
ALTER TABLE directory.patients ADD CONSTRAINT patients_ins_key UNIQUE (oid, matricule);
ALTER TABLE directory.patients DROP COLUMN conflicts_with;
DROP TABLE directory.patient_domain_statuses;
