"""What an activity needs from the ARS before it is billed, behind one interface.

Some acts can only be billed when the ARS knows about them: the télésurveillance forfaits need the operator's
declaration to the ARS (décrets 2022-1767 / 2022-1769), and a region's policy may require a contract for
activities outside the parcours de soins (ARCHITECTURE §5). The billing service asks a `ContractPolicy`;
`TableContractPolicy` answers from two tables of schema `billing` (what is required, per activity, region and
date; what is held, per holder) until the contracts service exists and a client of it replaces this class.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import asyncpg


class ActivityKind(enum.StrEnum):
    """Activities a contract policy is asked about."""

    TELESURVEILLANCE_OPERATOR = "TELESURVEILLANCE_OPERATOR"
    OUTSIDE_PARCOURS_TELECONSULTATION = "OUTSIDE_PARCOURS_TELECONSULTATION"


class Requirement(enum.StrEnum):
    NONE = "NONE"
    DECLARATION = "DECLARATION"
    CONTRACT = "CONTRACT"


@dataclass(frozen=True)
class Activity:
    """An activity to bill: what, where (ARS region code), by whom, on which act date."""

    kind: ActivityKind
    region: str  # INSEE region code, e.g. "84"
    practitioner: str  # practitioners/{rpps}
    establishment: str  # establishments/{finess}
    on: date


@dataclass(frozen=True)
class ContractDecision:
    """What the activity needs and whether the holder has it."""

    activity: Activity
    requirement: Requirement
    satisfied: bool
    # The declaration or contract found ('' when none is needed or none is held).
    reference: str
    # Why, for a person.
    reason: str
    source: str


class ContractPolicy(Protocol):
    """Answers whether an activity needs a declaration or a contract, and whether one is held."""

    async def decide(self, activity: Activity) -> ContractDecision: ...


# National rows have region '*'; a region's own row wins over the national one.
GET_REQUIREMENT = """
SELECT requirement, source, region_code FROM billing.contract_requirements
WHERE activity = $1 AND region_code IN ($2, '*')
  AND effective_from <= $3 AND (effective_to IS NULL OR $3 <= effective_to)
ORDER BY (region_code = '*'), effective_from DESC
LIMIT 1
"""
GET_HOLDING = """
SELECT reference, holder FROM billing.contract_holdings
WHERE activity = $1 AND kind = $2 AND region_code = $3 AND holder = ANY($4::text[])
  AND valid_from <= $5 AND (valid_to IS NULL OR $5 <= valid_to)
ORDER BY valid_from DESC
LIMIT 1
"""
INSERT_REQUIREMENT = """
INSERT INTO billing.contract_requirements
    (activity, region_code, effective_from, effective_to, requirement, source)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (activity, region_code, effective_from) DO UPDATE
SET effective_to = EXCLUDED.effective_to, requirement = EXCLUDED.requirement, source = EXCLUDED.source
"""
INSERT_HOLDING = """
INSERT INTO billing.contract_holdings (activity, kind, holder, region_code, valid_from, valid_to, reference)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

_WHAT = {
    ActivityKind.TELESURVEILLANCE_OPERATOR: "télésurveillance operator activity",
    ActivityKind.OUTSIDE_PARCOURS_TELECONSULTATION: "téléconsultation outside the parcours de soins",
}


class TableContractPolicy:
    """The contract policy read from `billing.contract_requirements` and `billing.contract_holdings`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def decide(self, activity: Activity) -> ContractDecision:
        what = _WHAT[activity.kind]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(GET_REQUIREMENT, activity.kind.value, activity.region, activity.on)
            if row is None or row["requirement"] == Requirement.NONE:
                return ContractDecision(
                    activity=activity,
                    requirement=Requirement.NONE,
                    satisfied=True,
                    reference="",
                    reason=f"no declaration or contract is required for {what} in region {activity.region}",
                    source=row["source"] if row is not None else "no policy row for this activity and region",
                )
            requirement = Requirement(row["requirement"])
            scope = "national rule" if row["region_code"] == "*" else f"policy of region {activity.region}"
            holders = [h for h in (activity.practitioner, activity.establishment) if h]
            held = await conn.fetchrow(
                GET_HOLDING, activity.kind.value, requirement.value, activity.region, holders, activity.on
            )
        noun = "an ARS declaration" if requirement is Requirement.DECLARATION else "an ARS contract"
        if held is None:
            return ContractDecision(
                activity=activity,
                requirement=requirement,
                satisfied=False,
                reference="",
                reason=f"{what} needs {noun} ({scope}) and none is on file for the practitioner or the "
                f"establishment on {activity.on.isoformat()}",
                source=row["source"],
            )
        return ContractDecision(
            activity=activity,
            requirement=requirement,
            satisfied=True,
            reference=held["reference"],
            reason=f"{what} needs {noun} ({scope}): {held['reference']} held by {held['holder']}",
            source=row["source"],
        )

    # Administration until the contracts service exists (tests, `make run` demos).

    async def set_requirement(
        self,
        kind: ActivityKind,
        region: str,
        requirement: Requirement,
        *,
        effective_from: date,
        effective_to: date | None = None,
        source: str,
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                INSERT_REQUIREMENT,
                kind.value,
                region,
                effective_from,
                effective_to,
                requirement.value,
                source,
            )

    async def record_holding(
        self,
        kind: ActivityKind,
        requirement: Requirement,
        *,
        holder: str,
        region: str,
        valid_from: date,
        valid_to: date | None = None,
        reference: str,
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                INSERT_HOLDING, kind.value, requirement.value, holder, region, valid_from, valid_to, reference
            )
