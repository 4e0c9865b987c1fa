-- depends: 0001.kit-audit-log

-- A keyed chain, written only through functions (issue 9.6 and 9.7).
--
-- Each new row's hash is an HMAC-SHA256 under a key the database never holds (PARCOURS_AUDIT_KEYS), named by
-- the row's key_id so keys can rotate; rows written before are plain SHA-256 and keep key_id ''. Whoever can
-- rewrite the table (the owner, a superuser) cannot recompute a keyed hash, and the services, which hold the
-- key, cannot rewrite the table: they append through audit.append_events, a SECURITY DEFINER function of the
-- owner, and have no privilege on audit.events or audit.chain_heads at all.
ALTER TABLE audit.events ADD COLUMN key_id text NOT NULL DEFAULT '';
ALTER TABLE audit.events ADD CONSTRAINT events_key_id_format CHECK (key_id ~ '^([A-Za-z0-9._-]{1,64})?$');

-- One row to append, as the writer chained it.
CREATE TYPE audit.event_input AS (
    seq            bigint,
    recorded_at    timestamptz,
    practitioner   text,
    establishment  text,
    roles          text[],
    action         text,
    method         text,
    resource       text,
    patient        text,
    outcome        text,
    outcome_reason text,
    trace_id       text,
    key_id         text,
    prev_hash      bytea,
    hash           bytea
);

-- The head of a chain, locked until the caller's transaction ends (created at row 0 the first time): the
-- writer reads it, chains its batch on it, then appends.
CREATE FUNCTION audit.lock_chain(p_chain text, OUT seq bigint, OUT hash bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF p_chain IS NULL OR p_chain !~ '^[a-z0-9][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'not an audit chain name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO audit.chain_heads AS h (chain, seq, hash)
    VALUES (p_chain, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
    ON CONFLICT (chain) DO NOTHING;
    SELECT h.seq, h.hash INTO seq, hash FROM audit.chain_heads h WHERE h.chain = p_chain FOR UPDATE;
END;
$$;

-- Append rows to a chain: they must follow its head exactly (next sequence numbers, each row's prev_hash the
-- hash before it), and the head moves to the last of them. Nothing else can change the table through it.
-- Returns the sequence number of the first row.
CREATE FUNCTION audit.append_events(p_chain text, p_events audit.event_input[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head record;
    e audit.event_input;
    next_seq bigint;
    prev bytea;
BEGIN
    SELECT h.seq, h.hash INTO head FROM audit.lock_chain(p_chain) h;
    IF p_events IS NULL OR cardinality(p_events) = 0 THEN
        RETURN head.seq + 1;
    END IF;
    next_seq := head.seq + 1;
    prev := head.hash;
    FOREACH e IN ARRAY p_events LOOP
        IF e.seq IS DISTINCT FROM next_seq OR e.prev_hash IS DISTINCT FROM prev THEN
            RAISE EXCEPTION 'audit chain % does not continue at row %', p_chain, next_seq
                USING ERRCODE = 'serialization_failure';
        END IF;
        IF e.key_id IS NULL OR e.key_id = '' THEN
            RAISE EXCEPTION 'audit rows are keyed' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        next_seq := e.seq + 1;
        prev := e.hash;
    END LOOP;
    INSERT INTO audit.events (chain, seq, recorded_at, practitioner, establishment, roles, action, method,
                              resource, patient, outcome, outcome_reason, trace_id, key_id, prev_hash, hash)
    SELECT p_chain, u.seq, u.recorded_at, u.practitioner, u.establishment, u.roles, u.action, u.method,
           u.resource, u.patient, u.outcome, u.outcome_reason, u.trace_id, u.key_id, u.prev_hash, u.hash
    FROM unnest(p_events) AS u;
    UPDATE audit.chain_heads SET seq = next_seq - 1, hash = prev WHERE chain = p_chain;
    RETURN head.seq + 1;
END;
$$;

-- Functions are executable by PUBLIC unless revoked: these only by the audit writers (every service role
-- is a member of parcours_audit_writer, see services/kit/roles.py) and the owner.
REVOKE ALL ON FUNCTION audit.lock_chain(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit.append_events(text, audit.event_input[]) FROM PUBLIC;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO parcours_audit_writer, parcours_auditor;
GRANT EXECUTE ON FUNCTION audit.lock_chain(text) TO parcours_audit_writer;
GRANT EXECUTE ON FUNCTION audit.append_events(text, audit.event_input[]) TO parcours_audit_writer;
GRANT SELECT ON audit.events, audit.chain_heads TO parcours_auditor;
