ALTER TABLE directory.patients
    DROP CONSTRAINT patients_nir_sex_agrees,
    DROP CONSTRAINT patients_nir_birth_year_agrees,
    DROP CONSTRAINT patients_nir_birth_month_agrees,
    DROP CONSTRAINT patients_nir_birth_place_agrees;
DROP FUNCTION directory.nir_sex_agrees(text, text);
DROP FUNCTION directory.nir_birth_year_agrees(text, date);
DROP FUNCTION directory.nir_birth_month_agrees(text, date);
DROP FUNCTION directory.nir_birth_place_agrees(text, text, date);
