-- The tables as 0001 created them (their holdings are not restored: the contracts service holds the cases).

CREATE TABLE billing.contract_requirements (
    activity text NOT NULL,
    region_code text NOT NULL,
    effective_from date NOT NULL,
    effective_to date,
    requirement text NOT NULL,
    source text NOT NULL,
    CONSTRAINT contract_requirements_pkey PRIMARY KEY (activity, region_code, effective_from),
    CONSTRAINT contract_requirements_activity_known CHECK (
        activity IN ('TELESURVEILLANCE_OPERATOR', 'OUTSIDE_PARCOURS_TELECONSULTATION')
    ),
    CONSTRAINT contract_requirements_region_format CHECK (region_code ~ '^([0-9]{2}|\*)$'),
    CONSTRAINT contract_requirements_requirement_known CHECK (requirement IN ('NONE', 'DECLARATION', 'CONTRACT')),
    CONSTRAINT contract_requirements_period CHECK (effective_to IS NULL OR effective_to >= effective_from)
);

CREATE TABLE billing.contract_holdings (
    holding_id bigint GENERATED ALWAYS AS IDENTITY,
    activity text NOT NULL,
    kind text NOT NULL,
    -- practitioners/{rpps} or establishments/{finess}
    holder text NOT NULL,
    region_code text NOT NULL,
    valid_from date NOT NULL,
    valid_to date,
    reference text NOT NULL,
    CONSTRAINT contract_holdings_pkey PRIMARY KEY (holding_id),
    CONSTRAINT contract_holdings_kind_known CHECK (kind IN ('DECLARATION', 'CONTRACT')),
    CONSTRAINT contract_holdings_holder_format CHECK (
        holder ~ '^(practitioners/[0-9]{11}|establishments/(?:[0-9]{2}|2[AB])[0-9]{7})$'
    ),
    CONSTRAINT contract_holdings_region_format CHECK (region_code ~ '^[0-9]{2}$'),
    CONSTRAINT contract_holdings_period CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX contract_holdings_holder_idx ON billing.contract_holdings (holder, activity, region_code);

-- Télésurveillance operators must declare their activity to the ARS; the declaration conditions the forfaits
-- (décrets 2022-1767 and 2022-1769; droit commun since 1 July 2023).

INSERT INTO billing.contract_requirements (activity, region_code, effective_from, requirement, source)
VALUES ('TELESURVEILLANCE_OPERATOR', '*', '2023-07-01', 'DECLARATION',
        'Décrets 2022-1767 and 2022-1769 of 30 Dec 2022; sante.gouv.fr "Vous êtes opérateur de télésurveillance ?" (H)');
