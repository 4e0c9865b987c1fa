-- The directory's own schema: the reference data every job of the hub needs (ARS regions, GHTs,
-- establishments, practitioners, expertise offers) and patients (INS identity, local IPP mapping).
--
-- Invariants are constraints, named so that the store can turn a violation into a stable error reason.
-- Enumerated values are stored as the proto enum NAMEs (readable in psql and stable across renumbering).

CREATE SCHEMA directory;

-- Keeps update_time honest whatever statement touches a row.
CREATE FUNCTION directory.touch_update_time() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.update_time := now();
    RETURN NEW;
END;
$$;

-- NIR/NIA key rule: key = 97 - (first 13 digits mod 97), Corsica's 2A/2B counted as 19/18. plpgsql rather
-- than SQL so that the planner never inlines it and folds the cast of a malformed constant into an error.
CREATE FUNCTION directory.matricule_key_ok(matricule text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    departement text := substr(matricule, 6, 2);
BEGIN
    IF matricule !~ '^[12378][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}$' THEN
        RETURN false;
    END IF;
    departement := CASE departement WHEN '2A' THEN '19' WHEN '2B' THEN '18' ELSE departement END;
    RETURN 97 - (overlay(left(matricule, 13) PLACING departement FROM 6 FOR 2)::bigint % 97)
        = right(matricule, 2)::integer;
END;
$$;

CREATE TABLE directory.regions (
    code text NOT NULL,
    display_name text NOT NULL,
    time_zone text NOT NULL,
    overseas boolean NOT NULL,
    CONSTRAINT regions_pkey PRIMARY KEY (code),
    CONSTRAINT regions_code_format CHECK (code ~ '^[0-9]{2}$'),
    CONSTRAINT regions_display_name_present CHECK (length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT regions_time_zone_known CHECK (time_zone IN (
        'Europe/Paris', 'America/Guadeloupe', 'America/Martinique', 'America/Cayenne', 'Indian/Reunion',
        'Indian/Mayotte'
    )),
    -- Target of establishments' (region, overseas) reference: an establishment's DROM flag is its region's.
    CONSTRAINT regions_code_overseas_key UNIQUE (code, overseas)
);

CREATE TABLE directory.ghts (
    ght_id text NOT NULL,
    display_name text NOT NULL,
    region_code text NOT NULL,
    support_finess text,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ghts_pkey PRIMARY KEY (ght_id),
    CONSTRAINT ghts_ght_id_format CHECK (ght_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT ghts_display_name_present CHECK (length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT ghts_region_fkey FOREIGN KEY (region_code) REFERENCES directory.regions (code),
    -- Target of establishments' (ght, region) reference: a GHT groups establishments of its own region.
    CONSTRAINT ghts_ght_id_region_key UNIQUE (ght_id, region_code)
);
CREATE INDEX ghts_region_idx ON directory.ghts (region_code, ght_id);

CREATE TABLE directory.establishments (
    finess text NOT NULL,
    display_name text NOT NULL,
    kind text NOT NULL,
    ght_id text,
    region_code text NOT NULL,
    time_zone text NOT NULL,
    overseas boolean NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT establishments_pkey PRIMARY KEY (finess),
    -- Département (2A/2B for Corsica, 97 overseas) then 7 digits; the check character's algorithm is
    -- unconfirmed, so it is not checked.
    CONSTRAINT establishments_finess_format CHECK (
        finess ~ '^(?:[0-9]{2}|2[AB])[0-9]{7}$' AND finess !~ '^00'
    ),
    CONSTRAINT establishments_display_name_present CHECK (length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT establishments_kind_known CHECK (kind IN ('KIND_LEGAL_ENTITY', 'KIND_SITE')),
    CONSTRAINT establishments_time_zone_known CHECK (time_zone IN (
        'Europe/Paris', 'America/Guadeloupe', 'America/Martinique', 'America/Cayenne', 'Indian/Reunion',
        'Indian/Mayotte'
    )),
    CONSTRAINT establishments_region_fkey FOREIGN KEY (region_code, overseas)
        REFERENCES directory.regions (code, overseas),
    -- MATCH SIMPLE: an establishment outside any GHT (ght_id NULL) is not checked.
    CONSTRAINT establishments_ght_fkey FOREIGN KEY (ght_id, region_code)
        REFERENCES directory.ghts (ght_id, region_code)
);
CREATE INDEX establishments_ght_idx ON directory.establishments (ght_id, finess);
CREATE INDEX establishments_region_idx ON directory.establishments (region_code, finess);
CREATE TRIGGER establishments_touch BEFORE UPDATE ON directory.establishments
    FOR EACH ROW EXECUTE FUNCTION directory.touch_update_time();

-- The établissement support must exist. Deferrable because a GHT and its establishments reference each other:
-- loading a whole GHT at once (the demo seed) defers the check to commit; API writes keep it immediate.
ALTER TABLE directory.ghts ADD CONSTRAINT ghts_support_fkey FOREIGN KEY (support_finess)
    REFERENCES directory.establishments (finess) DEFERRABLE INITIALLY IMMEDIATE;

CREATE TABLE directory.practitioners (
    rpps text NOT NULL,
    family_name text NOT NULL,
    given_name text NOT NULL,
    profession text NOT NULL,
    specialty text NOT NULL,
    sector text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT practitioners_pkey PRIMARY KEY (rpps),
    -- 11 digits; the Luhn check digit is unconfirmed, so it is not checked.
    CONSTRAINT practitioners_rpps_format CHECK (rpps ~ '^[0-9]{11}$'),
    CONSTRAINT practitioners_family_name_present CHECK (length(family_name) BETWEEN 1 AND 100),
    CONSTRAINT practitioners_given_name_present CHECK (length(given_name) BETWEEN 1 AND 100),
    -- Patterns rather than closed lists, so that a value added to the proto enum needs no migration.
    CONSTRAINT practitioners_profession_known CHECK (
        profession ~ '^PROFESSION_[A-Z_]+$' AND profession <> 'PROFESSION_UNSPECIFIED'
    ),
    CONSTRAINT practitioners_specialty_known CHECK (
        specialty ~ '^SPECIALTY_[A-Z_]+$' AND specialty <> 'SPECIALTY_UNSPECIFIED'
    ),
    CONSTRAINT practitioners_sector_known CHECK (
        sector ~ '^CONVENTION_SECTOR_[A-Z0-9_]+$' AND sector <> 'CONVENTION_SECTOR_UNSPECIFIED'
    ),
    -- A specialty is an ordinal qualification: every physician has one (general medicine included), dentists
    -- may (oral surgery), other professions never do.
    CONSTRAINT practitioners_specialty_profession CHECK (
        CASE profession
            WHEN 'PROFESSION_PHYSICIAN' THEN specialty <> 'SPECIALTY_NONE'
            WHEN 'PROFESSION_DENTIST' THEN true
            ELSE specialty = 'SPECIALTY_NONE'
        END
    ),
    -- Target of (rpps, profession) references that restrict a role to some professions.
    CONSTRAINT practitioners_rpps_profession_key UNIQUE (rpps, profession)
);
CREATE INDEX practitioners_profession_idx ON directory.practitioners (profession, rpps);
CREATE INDEX practitioners_specialty_idx ON directory.practitioners (specialty, rpps);
CREATE TRIGGER practitioners_touch BEFORE UPDATE ON directory.practitioners
    FOR EACH ROW EXECUTE FUNCTION directory.touch_update_time();

CREATE TABLE directory.practice_places (
    rpps text NOT NULL,
    finess text NOT NULL,
    CONSTRAINT practice_places_pkey PRIMARY KEY (rpps, finess),
    CONSTRAINT practice_places_rpps_fkey FOREIGN KEY (rpps)
        REFERENCES directory.practitioners (rpps) ON DELETE CASCADE,
    CONSTRAINT practice_places_finess_fkey FOREIGN KEY (finess) REFERENCES directory.establishments (finess)
);
CREATE INDEX practice_places_finess_idx ON directory.practice_places (finess, rpps);

-- A téléexpertise pool. Its members and backup must be professionnels médicaux (physician, midwife, dentist):
-- only they may be the requis of a téléexpertise (L.6316-1, R.6316-1 CSP). The member's profession is copied
-- next to the rpps so that a (rpps, profession) foreign key plus a check can hold that rule.
CREATE TABLE directory.expertise_offers (
    offer_id text NOT NULL,
    display_name text NOT NULL,
    specialty text NOT NULL,
    ght_id text,
    region_code text,
    backup_rpps text,
    backup_profession text,
    accepting boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT expertise_offers_pkey PRIMARY KEY (offer_id),
    CONSTRAINT expertise_offers_offer_id_format CHECK (offer_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT expertise_offers_display_name_present CHECK (length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT expertise_offers_specialty_known CHECK (
        specialty ~ '^SPECIALTY_[A-Z_]+$' AND specialty NOT IN ('SPECIALTY_UNSPECIFIED', 'SPECIALTY_NONE')
    ),
    CONSTRAINT expertise_offers_one_scope CHECK ((ght_id IS NULL) <> (region_code IS NULL)),
    CONSTRAINT expertise_offers_ght_fkey FOREIGN KEY (ght_id) REFERENCES directory.ghts (ght_id),
    CONSTRAINT expertise_offers_region_fkey FOREIGN KEY (region_code) REFERENCES directory.regions (code),
    CONSTRAINT expertise_offers_backup_pair CHECK ((backup_rpps IS NULL) = (backup_profession IS NULL)),
    CONSTRAINT expertise_offers_backup_medical CHECK (
        backup_profession IN ('PROFESSION_PHYSICIAN', 'PROFESSION_MIDWIFE', 'PROFESSION_DENTIST')
    ),
    CONSTRAINT expertise_offers_backup_fkey FOREIGN KEY (backup_rpps, backup_profession)
        REFERENCES directory.practitioners (rpps, profession)
);
CREATE INDEX expertise_offers_specialty_idx ON directory.expertise_offers (specialty, offer_id);
CREATE INDEX expertise_offers_ght_idx ON directory.expertise_offers (ght_id, offer_id);
CREATE INDEX expertise_offers_region_idx ON directory.expertise_offers (region_code, offer_id);

CREATE TABLE directory.expertise_offer_members (
    offer_id text NOT NULL,
    rpps text NOT NULL,
    profession text NOT NULL,
    CONSTRAINT expertise_offer_members_pkey PRIMARY KEY (offer_id, rpps),
    CONSTRAINT expertise_offer_members_offer_fkey FOREIGN KEY (offer_id)
        REFERENCES directory.expertise_offers (offer_id) ON DELETE CASCADE,
    CONSTRAINT expertise_offer_members_medical CHECK (
        profession IN ('PROFESSION_PHYSICIAN', 'PROFESSION_MIDWIFE', 'PROFESSION_DENTIST')
    ),
    CONSTRAINT expertise_offer_members_practitioner_fkey FOREIGN KEY (rpps, profession)
        REFERENCES directory.practitioners (rpps, profession)
);
CREATE INDEX expertise_offer_members_rpps_idx ON directory.expertise_offer_members (rpps, offer_id);

-- A patient named by an opaque UUID (never derived from the INS), with its INS: matricule + OID + the five
-- strict traits, and its RNIV identity status.
CREATE TABLE directory.patients (
    patient_id uuid NOT NULL,
    matricule text NOT NULL,
    oid text NOT NULL,
    birth_family_name text NOT NULL,
    birth_given_names text NOT NULL,
    birth_date date NOT NULL,
    sex text NOT NULL,
    birth_place_code text NOT NULL,
    identity_status text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patients_pkey PRIMARY KEY (patient_id),
    -- One patient per INS: CreatePatient is idempotent on it.
    CONSTRAINT patients_ins_key UNIQUE (oid, matricule),
    CONSTRAINT patients_matricule_valid CHECK (directory.matricule_key_ok(matricule)),
    CONSTRAINT patients_oid_known CHECK (oid IN (
        '1.2.250.1.213.1.4.8', '1.2.250.1.213.1.4.9', '1.2.250.1.213.1.4.10', '1.2.250.1.213.1.4.11'
    )),
    CONSTRAINT patients_birth_family_name_present CHECK (length(birth_family_name) BETWEEN 1 AND 100),
    CONSTRAINT patients_birth_given_names_present CHECK (length(birth_given_names) BETWEEN 1 AND 200),
    CONSTRAINT patients_sex_known CHECK (sex IN ('SEX_FEMALE', 'SEX_MALE')),
    CONSTRAINT patients_birth_place_format CHECK (birth_place_code ~ '^(?:[0-9]{2}|2[AB])[0-9]{3}$'),
    CONSTRAINT patients_identity_status_known CHECK (identity_status IN (
        'IDENTITY_STATUS_PROVISIONAL', 'IDENTITY_STATUS_RETRIEVED', 'IDENTITY_STATUS_VALIDATED',
        'IDENTITY_STATUS_QUALIFIED'
    ))
);
-- ResolvePatient by matricule alone (the OID is not always known to the caller).
CREATE INDEX patients_matricule_idx ON directory.patients (matricule);
CREATE TRIGGER patients_touch BEFORE UPDATE ON directory.patients
    FOR EACH ROW EXECUTE FUNCTION directory.touch_update_time();

-- Local IPP ↔ patient (R.6132-15: the hub maps each establishment's IPP to one patient identifier).
CREATE TABLE directory.patient_local_ids (
    finess text NOT NULL,
    ipp text NOT NULL,
    patient_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    -- An IPP names one patient at its establishment...
    CONSTRAINT patient_local_ids_pkey PRIMARY KEY (finess, ipp),
    -- ...and an establishment knows a patient under one IPP (also serves ListPatients by establishment).
    CONSTRAINT patient_local_ids_patient_key UNIQUE (finess, patient_id),
    CONSTRAINT patient_local_ids_ipp_format CHECK (ipp ~ '^[A-Za-z0-9-]{1,32}$'),
    CONSTRAINT patient_local_ids_finess_fkey FOREIGN KEY (finess)
        REFERENCES directory.establishments (finess),
    CONSTRAINT patient_local_ids_patient_fkey FOREIGN KEY (patient_id)
        REFERENCES directory.patients (patient_id) ON DELETE CASCADE
);
CREATE INDEX patient_local_ids_patient_idx ON directory.patient_local_ids (patient_id);

-- The resources as the API returns them: a row with its child rows as arrays in a stable order (the store
-- reads these; filters on the base columns are pushed down into the views).
CREATE VIEW directory.practitioner_resources AS
SELECT
    p.rpps, p.family_name, p.given_name, p.profession, p.specialty, p.sector, p.active, p.create_time,
    p.update_time,
    ARRAY(
        SELECT pp.finess FROM directory.practice_places pp WHERE pp.rpps = p.rpps ORDER BY pp.finess
    ) AS place_finess,
    ARRAY(
        SELECT e.time_zone
        FROM directory.practice_places pp JOIN directory.establishments e ON e.finess = pp.finess
        WHERE pp.rpps = p.rpps ORDER BY pp.finess
    ) AS place_time_zones
FROM directory.practitioners p;

CREATE VIEW directory.expertise_offer_resources AS
SELECT
    o.offer_id, o.display_name, o.specialty, o.ght_id, o.region_code, o.backup_rpps, o.accepting,
    o.create_time,
    ARRAY(
        SELECT m.rpps FROM directory.expertise_offer_members m WHERE m.offer_id = o.offer_id ORDER BY m.rpps
    ) AS members
FROM directory.expertise_offers o;

CREATE VIEW directory.patient_resources AS
SELECT
    pa.patient_id, pa.matricule, pa.oid, pa.birth_family_name, pa.birth_given_names, pa.birth_date, pa.sex,
    pa.birth_place_code, pa.identity_status, pa.create_time, pa.update_time,
    ARRAY(
        SELECT l.finess FROM directory.patient_local_ids l
        WHERE l.patient_id = pa.patient_id ORDER BY l.finess
    ) AS local_finess,
    ARRAY(
        SELECT l.ipp FROM directory.patient_local_ids l
        WHERE l.patient_id = pa.patient_id ORDER BY l.finess
    ) AS local_ipps
FROM directory.patients pa;

-- Responses of mutating RPCs by client request_id, written in the transaction of the write they describe, so
-- that a retried request gets the first answer and never writes twice. Responses of patient RPCs hold patient
-- data: rows are meant to be purged after the clients' retry horizon (create_time index).
CREATE TABLE directory.idempotency (
    request_id uuid NOT NULL,
    method text NOT NULL,
    response bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_pkey PRIMARY KEY (request_id)
);
CREATE INDEX idempotency_create_time_idx ON directory.idempotency (create_time);

-- Data sets loaded by a loader (the demo region): a row is claimed in the loader's transaction, so a data
-- set is loaded exactly once even when two loaders race, and never half.
CREATE TABLE directory.seeds (
    seed text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT seeds_pkey PRIMARY KEY (seed)
);
