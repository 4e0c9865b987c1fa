-- depends: 0003.directory-ght-views 0003.directory-nir-traits

-- A GHT's own identity status (0003.directory-ght-views) obeys the NIR ↔ traits rule (0003.directory-nir-
-- traits) as the hub's does: only a provisional identity may be held while the NIR contradicts its strict
-- traits. A CHECK cannot read the patient's row, so a trigger applies the same functions and fails under the
-- same constraint names, which the store maps to NIR_TRAITS_MISMATCH naming the trait.
CREATE FUNCTION directory.domain_status_nir_agrees() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    p directory.patients%ROWTYPE;
    failed text;
BEGIN
    IF NEW.identity_status = 'IDENTITY_STATUS_PROVISIONAL' THEN
        RETURN NEW;
    END IF;
    SELECT * INTO p FROM directory.patients WHERE patient_id = NEW.patient_id;
    failed := CASE
        WHEN NOT directory.nir_sex_agrees(p.matricule, p.sex) THEN 'patients_nir_sex_agrees'
        WHEN NOT directory.nir_birth_year_agrees(p.matricule, p.birth_date) THEN 'patients_nir_birth_year_agrees'
        WHEN NOT directory.nir_birth_month_agrees(p.matricule, p.birth_date) THEN 'patients_nir_birth_month_agrees'
        WHEN NOT directory.nir_birth_place_agrees(p.matricule, p.birth_place_code, p.birth_date)
            THEN 'patients_nir_birth_place_agrees'
    END;
    IF failed IS NOT NULL THEN
        -- No value in the message: the store names the trait from the constraint.
        RAISE EXCEPTION 'identity status refused: the NIR contradicts the strict traits'
            USING ERRCODE = 'check_violation', CONSTRAINT = failed, TABLE = 'patient_domain_statuses';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER patient_domain_statuses_nir_agrees
    BEFORE INSERT OR UPDATE ON directory.patient_domain_statuses
    FOR EACH ROW EXECUTE FUNCTION directory.domain_status_nir_agrees();
