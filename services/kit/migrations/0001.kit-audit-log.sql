-- The append-only, hash-chained audit log of every RPC that reads or writes patient data.
-- One chain per component (its writer); each row carries the hash of the previous row of its chain, and
-- audit.chain_heads keeps the last (seq, hash) so that deleting the newest rows is detected too.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.chain_heads (
    chain      text PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);

CREATE TABLE audit.events (
    chain              text        NOT NULL,
    seq                bigint      NOT NULL,
    recorded_at        timestamptz NOT NULL,
    practitioner       text        NOT NULL,  -- practitioners/{rpps} or a staff subject; '' for a hub service
    establishment      text        NOT NULL,  -- establishments/{finess} or the calling hub component
    roles              text[]      NOT NULL,
    action             text        NOT NULL,  -- FHIR AuditEvent action: C R U D E
    method             text        NOT NULL,  -- full gRPC method
    resource           text        NOT NULL,  -- resource name acted on ('' when none, e.g. a refused list)
    patient            text        NOT NULL,  -- patients/{opaque id}, never an INS
    outcome            text        NOT NULL,  -- gRPC status code name
    outcome_reason     text        NOT NULL,  -- stable reason of a refusal ('' on success)
    trace_id           text        NOT NULL,
    prev_hash          bytea       NOT NULL,
    hash               bytea       NOT NULL,
    PRIMARY KEY (chain, seq),
    CHECK (seq >= 1),
    CHECK (length(hash) = 32 AND length(prev_hash) = 32)
);

CREATE INDEX events_patient_idx ON audit.events (patient, recorded_at) WHERE patient <> '';
CREATE INDEX events_practitioner_idx ON audit.events (practitioner, recorded_at);

-- Append-only: nothing updates or deletes an audit row through SQL. (A superuser can still switch triggers
-- off; the hash chain is what detects that.)
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
