DROP TRIGGER patient_domain_statuses_nir_agrees ON directory.patient_domain_statuses;
DROP FUNCTION directory.domain_status_nir_agrees();
