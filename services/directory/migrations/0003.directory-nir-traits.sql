-- depends: 0002.directory-regions

-- NIR ↔ strict traits (§7.5 of the domain reference). The NIR's sex digit, birth year and month and département
-- of birth must agree with the identity it is stored with; only a provisional identity may be stored while they
-- do not (CreatePatient answers it with a warning), and it cannot be promoted before they are corrected.
-- services/directory/identifiers.py holds the same rule for requests (tests/directory/test_identifiers.py
-- compares the two on the same cases); each constraint's name tells the store which trait to name in the
-- NIR_TRAITS_MISMATCH refusal. plpgsql, as matricule_key_ok: never inlined, so no constant folding of a cast.

-- 1 male, 2 female; the other sex digits (3, and 7/8 of a NIA) say nothing sourced about the sex.
CREATE FUNCTION directory.nir_sex_agrees(matricule text, sex text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN CASE left(matricule, 1) WHEN '1' THEN sex = 'SEX_MALE' WHEN '2' THEN sex = 'SEX_FEMALE' ELSE true END;
END;
$$;

CREATE FUNCTION directory.nir_birth_year_agrees(matricule text, birth_date date) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN substr(matricule, 2, 2) = lpad((extract(year FROM birth_date)::integer % 100)::text, 2, '0');
END;
$$;

-- Months 20-42 and 50-99 are given when the civil record is incomplete: they say nothing about the month.
CREATE FUNCTION directory.nir_birth_month_agrees(matricule text, birth_date date) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    month text := substr(matricule, 4, 2);
BEGIN
    RETURN month NOT BETWEEN '01' AND '12'
        OR month = lpad(extract(month FROM birth_date)::integer::text, 2, '0');
END;
$$;

-- The NIR keeps the département code in force at birth: Corsica's 20 before 2A/2B (1976), Seine and
-- Seine-et-Oise before 91-95 (1968), and for births abroad (99) 91-94 for Algeria before 1963, 95 (Morocco) and
-- 96 (Tunisia) before 1957 (service-public.fr F33078). Overseas départements have 3 digits (971-976, 98x).
CREATE FUNCTION directory.nir_birth_place_agrees(matricule text, birth_place_code text, birth_date date)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    nir text := substr(matricule, 6, 2);
    born text := left(birth_place_code, 2);
    born_year integer := extract(year FROM birth_date)::integer;
BEGIN
    IF nir IN ('97', '98') THEN
        nir := substr(matricule, 6, 3);
    END IF;
    IF born IN ('97', '98') THEN
        born := left(birth_place_code, 3);
    END IF;
    RETURN nir = born
        OR (nir = '20' AND born IN ('2A', '2B') AND born_year < 1976)
        OR (nir IN ('75', '78') AND born IN ('75', '78', '91', '92', '93', '94', '95') AND born_year < 1968)
        OR (born = '99' AND nir IN ('91', '92', '93', '94') AND born_year < 1963)
        OR (born = '99' AND nir IN ('95', '96') AND born_year < 1957);
END;
$$;

-- NOT VALID: identities stored before this migration are checked when they next change, not now (a running
-- hub may hold identities that would stop the migration).
ALTER TABLE directory.patients
    ADD CONSTRAINT patients_nir_sex_agrees CHECK (
        identity_status = 'IDENTITY_STATUS_PROVISIONAL' OR directory.nir_sex_agrees(matricule, sex)
    ) NOT VALID,
    ADD CONSTRAINT patients_nir_birth_year_agrees CHECK (
        identity_status = 'IDENTITY_STATUS_PROVISIONAL' OR directory.nir_birth_year_agrees(matricule, birth_date)
    ) NOT VALID,
    ADD CONSTRAINT patients_nir_birth_month_agrees CHECK (
        identity_status = 'IDENTITY_STATUS_PROVISIONAL' OR directory.nir_birth_month_agrees(matricule, birth_date)
    ) NOT VALID,
    ADD CONSTRAINT patients_nir_birth_place_agrees CHECK (
        identity_status = 'IDENTITY_STATUS_PROVISIONAL'
        OR directory.nir_birth_place_agrees(matricule, birth_place_code, birth_date)
    ) NOT VALID;
