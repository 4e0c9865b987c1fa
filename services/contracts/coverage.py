"""Whether an act is covered: for each obligation of the policy's evaluation, the case meeting it, or why not.

Pure (like `policy.evaluate`): the service reads the candidate holdings of the act's practitioner,
establishment and company from its projection and passes them in; `check` decides. What billing gets back
through `CheckCoverage` and keeps on a refused or flagged line (REQUIRES_CONTRACT, REQUIRES_ORDINAL_VISA,
REQUIRES_OPERATOR_DECLARATION, REQUIRES_AGREMENT).

A holding covers an act when the act's civil date lies in its validity, whatever the case's state today: a
contract terminated in June still covered a May act. The service therefore gives each holding the last day it
was in force (its end date, or the day before its termination, withdrawal or lapse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from services.contracts.models import CaseKind, CoverageReason
from services.contracts.policy import Evaluation, Obligation


@dataclass(frozen=True, kw_only=True)
class Holding:
    """A contract, declaration or agrément as coverage sees it."""

    case: str  # `arsContracts/{id}`, `operatorDeclarations/{id}`, `agrementApplications/{id}`
    kind: str  # CaseKind.*
    # Who holds it: `establishments/{finess}`, `practitioners/{rpps}`, `teleconsultationCompanies/{siren}`.
    holder: str
    region: str
    # First and last day in force (None: not in force on any day, e.g. a contract never signed).
    valid_from: date | None
    valid_until: date | None
    # Contracts: the activity it covers, and whether it carries the Ordre's visa.
    act_type: str = ""
    visa: bool = False


@dataclass(frozen=True, kw_only=True)
class ObligationCoverage:
    obligation: str
    satisfied: bool
    covered_by: str = ""
    reason: str = ""
    explanation: str = ""


@dataclass(frozen=True, kw_only=True)
class CoverageResult:
    evaluation: Evaluation
    obligations: tuple[ObligationCoverage, ...]

    @property
    def covered(self) -> bool:
        return all(o.satisfied for o in self.obligations)

    @property
    def reasons(self) -> list[str]:
        return [o.reason for o in self.obligations if not o.satisfied]


_KIND_OF = {
    Obligation.CONTRACT: CaseKind.ARS_CONTRACT,
    Obligation.OPERATOR_DECLARATION: CaseKind.OPERATOR_DECLARATION,
    Obligation.AGREMENT: CaseKind.AGREMENT_APPLICATION,
}
_MISSING = {
    Obligation.CONTRACT: (CoverageReason.REQUIRES_CONTRACT, "an active contract with the ARS"),
    Obligation.OPERATOR_DECLARATION: (
        CoverageReason.REQUIRES_OPERATOR_DECLARATION,
        "an effective télésurveillance operator declaration",
    ),
    Obligation.AGREMENT: (
        CoverageReason.REQUIRES_AGREMENT,
        "a valid agrément of the téléconsultation company",
    ),
}
# Checked in this order, so a refusal names the most basic thing missing first.
_ORDER = (Obligation.CONTRACT, Obligation.ORDINAL_VISA, Obligation.OPERATOR_DECLARATION, Obligation.AGREMENT)


def _in_force(holding: Holding, day: date) -> bool:
    return (
        holding.valid_from is not None
        and holding.valid_until is not None
        and holding.valid_from <= day <= holding.valid_until
    )


def check(
    evaluation: Evaluation,
    *,
    act_type: str,
    act_date: date,
    region: str,
    holders: Sequence[str],
    holdings: Sequence[Holding],
) -> CoverageResult:
    """Each obligation of `evaluation` met by one of `holdings` held by one of `holders` on `act_date`."""
    wanted = [h for h in holders if h]
    found: dict[str, Holding] = {}
    for obligation in (o for o in _ORDER if o in evaluation.obligations and o != Obligation.ORDINAL_VISA):
        candidates = [
            h
            for h in holdings
            if h.kind == _KIND_OF[obligation]
            and h.holder in wanted
            and h.region == region
            and _in_force(h, act_date)
            and (obligation != Obligation.CONTRACT or h.act_type == act_type)
        ]
        # Prefer a contract with the visa when the visa is required too; then the latest started.
        candidates.sort(key=lambda h: (h.visa, h.valid_from), reverse=True)
        if candidates:
            found[obligation] = candidates[0]

    results: list[ObligationCoverage] = []
    day = act_date.isoformat()
    for obligation in _ORDER:
        if obligation not in evaluation.obligations:
            continue
        if obligation == Obligation.ORDINAL_VISA:
            contract = found.get(Obligation.CONTRACT)
            if contract is not None and contract.visa:
                results.append(
                    ObligationCoverage(obligation=obligation, satisfied=True, covered_by=contract.case)
                )
            else:
                results.append(
                    ObligationCoverage(
                        obligation=obligation,
                        satisfied=False,
                        reason=CoverageReason.REQUIRES_ORDINAL_VISA,
                        explanation=f"the region's policy requires a contract with the Ordre's visa on {day}",
                    )
                )
            continue
        holding = found.get(obligation)
        if holding is not None:
            results.append(ObligationCoverage(obligation=obligation, satisfied=True, covered_by=holding.case))
        else:
            reason, what = _MISSING[obligation]
            results.append(
                ObligationCoverage(
                    obligation=obligation,
                    satisfied=False,
                    reason=reason,
                    explanation=f"the act needs {what} on {day} and none is on file",
                )
            )
    return CoverageResult(evaluation=evaluation, obligations=tuple(results))
