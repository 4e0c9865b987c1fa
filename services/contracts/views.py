"""The contracts tables as `parcours.contracts.v1` messages.

A case is read from one row: the resource as created (the part nobody changes, kept as the API message),
overlaid with what its workflow wrote (state, step, dates, decision...). Enum values are stored as the API's
names without their prefix and turned back here; instants come back as Timestamps, civil dates as
google.type.Date in the case's zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.options.v1 import options_pb2

from services.contracts import clock
from services.contracts.coverage import CoverageResult
from services.contracts.models import (
    AgrementCase,
    ArsContractCase,
    CaseCore,
    CaseKind,
    IntermediaryReviewCase,
    OperatorDeclarationCase,
)
from services.contracts.policy import Evaluation, RegionPolicy
from services.contracts.store import STATE_TYPES, from_json
from services.kit import names

KIND_ENUM = {kind: c.CaseKind.Value(f"CASE_KIND_{kind}") for kind in CaseKind.ALL}
KIND_OF_ENUM = {value: kind for kind, value in KIND_ENUM.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def pb_date(value: date | None) -> date_pb2.Date | None:
    if value is None:
        return None
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def py_date(value: date_pb2.Date) -> date:
    return date(value.year, value.month, value.day)


def step_enum(step: str) -> c.Step.ValueType:
    return c.Step.Value(f"STEP_{step}") if step else c.STEP_UNSPECIFIED


def role_enum(role: str) -> options_pb2.Role.ValueType:
    return options_pb2.Role.Value(f"ROLE_{role}") if role else options_pb2.ROLE_UNSPECIFIED


def case_name(kind: str, case_id: object) -> str:
    return names.CONTRACTS_CASE.format(CaseKind.COLLECTION[kind], case_id)


# --- policy and coverage ------------------------------------------------------------------------------------


def evaluation(value: Evaluation) -> c.Evaluation:
    return c.Evaluation(
        requirement=c.Requirement.Value(f"REQUIREMENT_{value.requirement}"),
        obligations=[c.Obligation.Value(f"OBLIGATION_{o}") for o in sorted(value.obligations)],
        reasons=[
            c.PolicyReason(
                code=r.code,
                text=r.text,
                source=r.source,
                confirmed=r.confirmed,
                obligation=(
                    c.Obligation.Value(f"OBLIGATION_{r.obligation}")
                    if r.obligation
                    else c.OBLIGATION_UNSPECIFIED
                ),
            )
            for r in value.reasons
        ],
        regime=c.Regime.Value(f"REGIME_{value.regime}"),
        region_policy=value.region_policy,
        policy_version=value.policy_version,
        confirmed=value.confirmed,
    )


def region_policy(value: RegionPolicy) -> c.RegionPolicy:
    offerers = sorted(value.cnom_offerers) if value.cnom_offerers is not None else []
    return c.RegionPolicy(
        name=value.name,
        version=value.version,
        effective_date=pb_date(value.effective_from),
        profile=c.RegionPolicy.Profile.Value(f"PROFILE_{value.profile}"),
        cnom_offerers=[c.Offerer.Value(f"OFFERER_{o}") for o in offerers],
        note=value.note,
        publisher=value.published_by,
        publish_time=timestamp(value.published_at),
    )


def coverage(value: CoverageResult) -> c.Coverage:
    return c.Coverage(
        covered=value.covered,
        evaluation=evaluation(value.evaluation),
        obligations=[
            c.ObligationCoverage(
                obligation=c.Obligation.Value(f"OBLIGATION_{o.obligation}"),
                satisfied=o.satisfied,
                covered_by=o.covered_by,
                reason=o.reason,
                explanation=o.explanation,
            )
            for o in value.obligations
        ],
    )


# --- what every case has ------------------------------------------------------------------------------------


def _legal_clock(core: CaseCore, now: datetime) -> c.LegalClock | None:
    legal = core.clock
    if legal is None:
        return None
    reading = clock.read_case_clock(legal, now)
    return c.LegalClock(
        rule=legal.rule.name,
        silence_means=c.LegalClock.SILENCE_ACCEPTANCE
        if legal.rule.decision == clock.ACCEPTANCE
        else c.LegalClock.SILENCE_REJECTION,
        file_time=timestamp(legal.filed_at),
        decision_date=pb_date(reading.decision_on),
        deadline_time=timestamp(clock.start_of_day(reading.decision_on, legal.time_zone)),
        suspended=reading.suspended,
        correction_days=reading.correction_days,
        corrections=[
            c.Correction(
                reason=c.CorrectionReason.Value(f"CORRECTION_REASON_{x.reason}"),
                request_time=timestamp(x.requested_at),
                resolve_time=timestamp(x.resolved_at),
            )
            for x in legal.corrections
        ],
        source=legal.rule.source,
        confirmed=legal.rule.confirmed,
    )


def case_step(row: Any) -> c.CaseStep | None:
    if not row["step"]:
        return None
    return c.CaseStep(
        step=step_enum(row["step"]),
        candidate_role=role_enum(row["step_role"]),
        claimant=row["claimant"],
        claim_time=timestamp(row["claim_time"]),
        open_time=timestamp(row["step_open_time"]),
        due_time=timestamp(row["due_time"]),
        reminded=row["reminded"],
        overdue=row["overdue"],
        escalated=row["escalated"],
    )


def progress(row: Any, core: CaseCore | None, now: datetime) -> c.CaseProgress:
    legal = _legal_clock(core, now) if core is not None else None
    return c.CaseProgress(
        current_step=case_step(row),
        legal_clock=legal,
        open_opinions=row["open_opinions"],
        decider=row["decider"],
        decide_time=timestamp(row["decide_time"]),
        close_time=timestamp(row["close_time"]),
    )


def state_of(row: Any) -> Any:
    """The case's state dataclass as its workflow last wrote it (None before its first change)."""
    raw = row["case_state"]
    return from_json(raw, STATE_TYPES[row["kind"]]) if raw is not None else None


def _day(instant: datetime | None, zone: str, *, exclusive_end: bool = False) -> date | None:
    if instant is None:
        return None
    day = clock.local_date(instant, zone)
    return day - timedelta(days=1) if exclusive_end else day


# --- the four kinds -----------------------------------------------------------------------------------------


def ars_contract(row: Any, now: datetime) -> c.ArsContract:
    message = c.ArsContract.FromString(bytes(row["resource"]))
    message.name = case_name(row["kind"], row["case_id"])
    message.state = c.ArsContract.State.Value(f"STATE_{row['state']}")
    message.version = row["version"]
    message.update_time.FromDatetime(row["update_time"])
    state: ArsContractCase | None = state_of(row)
    core = state.core if state is not None else None
    message.progress.CopyFrom(progress(row, core, now))
    if state is None:
        return message
    zone = state.core.time_zone
    message.visa_required = state.visa_required
    message.visa_giver = state.visa_given_by
    if state.valid_from is not None:
        message.start_date.CopyFrom(pb_date(_day(state.valid_from, zone)))
    if state.valid_until is not None:
        message.end_date.CopyFrom(pb_date(_day(state.valid_until, zone, exclusive_end=True)))
    if state.decision_document:
        collection, case, document = names.CASE_DOCUMENT.parse_ids(state.decision_document, "decision")
        message.decision = f"{collection}/{case}/decisions/{document.removeprefix('decision-')}"
    message.signer = state.signed_by
    if state.signed_at is not None:
        message.sign_time.FromDatetime(state.signed_at)
    change = state.pending_change
    if change is not None:
        message.pending_change.CopyFrom(
            c.ContractChange(
                change_id=change.change_id,
                kind=c.ContractChange.Kind.Value(f"KIND_{change.kind}"),
                new_end_date=pb_date(_day(change.new_valid_until, zone, exclusive_end=True)),
                approved=change.approved,
                proposer=change.proposed_by,
                propose_time=timestamp(change.proposed_at),
            )
        )
    message.amendment_count = state.amendments
    message.renewal_count = state.renewals
    return message


def operator_declaration(row: Any, now: datetime) -> c.OperatorDeclaration:
    message = c.OperatorDeclaration.FromString(bytes(row["resource"]))
    message.name = case_name(row["kind"], row["case_id"])
    message.state = c.OperatorDeclaration.State.Value(f"STATE_{row['state']}")
    message.version = row["version"]
    message.update_time.FromDatetime(row["update_time"])
    state: OperatorDeclarationCase | None = state_of(row)
    message.progress.CopyFrom(progress(row, state.core if state else None, now))
    if state is not None and state.effective_from is not None:
        message.effective_date.CopyFrom(pb_date(_day(state.effective_from, state.core.time_zone)))
        message.acknowledger = state.acknowledged_by
    return message


def intermediary_review(row: Any, now: datetime) -> c.IntermediaryContractReview:
    message = c.IntermediaryContractReview.FromString(bytes(row["resource"]))
    message.name = case_name(row["kind"], row["case_id"])
    message.state = c.IntermediaryContractReview.State.Value(f"STATE_{row['state']}")
    message.version = row["version"]
    message.update_time.FromDatetime(row["update_time"])
    state: IntermediaryReviewCase | None = state_of(row)
    message.progress.CopyFrom(progress(row, state.core if state else None, now))
    if state is not None:
        del message.clauses[:]
        message.clauses.extend(
            c.ClauseAssessment(
                clause=c.Clause.Value(f"CLAUSE_{m.clause}"),
                status=c.ClauseStatus.Value(f"CLAUSE_STATUS_{m.status}"),
                note=m.note,
                assessor=m.marked_by,
                assess_time=timestamp(m.marked_at),
            )
            for m in state.clauses
        )
        del message.failed_clauses[:]
        message.failed_clauses.extend(c.Clause.Value(f"CLAUSE_{x}") for x in state.failed_clauses)
    return message


def agrement_application(row: Any, now: datetime) -> c.AgrementApplication:
    message = c.AgrementApplication.FromString(bytes(row["resource"]))
    message.name = case_name(row["kind"], row["case_id"])
    message.state = c.AgrementApplication.State.Value(f"STATE_{row['state']}")
    message.version = row["version"]
    message.update_time.FromDatetime(row["update_time"])
    state: AgrementCase | None = state_of(row)
    message.progress.CopyFrom(progress(row, state.core if state else None, now))
    if state is not None:
        message.validity_months = state.validity_months
        zone = state.core.time_zone
        if state.valid_from is not None:
            message.start_date.CopyFrom(pb_date(_day(state.valid_from, zone)))
        if state.valid_until is not None:
            message.end_date.CopyFrom(pb_date(_day(state.valid_until, zone, exclusive_end=True)))
    return message


def summary(row: Any) -> c.CaseSummary:
    return c.CaseSummary(
        name=case_name(row["kind"], row["case_id"]),
        kind=KIND_ENUM[row["kind"]],
        state=row["state"],
        title=row["title"],
        region=f"regions/{row['region']}" if row["region"] else "",
        departement=row["departement"],
        ght=row["ght"],
        promoter=row["promoter"],
        current_step=case_step(row),
        legal_deadline_time=timestamp(row["legal_deadline_time"]),
        legal_clock_suspended=row["legal_clock_suspended"],
        expire_time=timestamp(row["expire_time"]),
        open_opinions=row["open_opinions"],
        update_time=timestamp(row["update_time"]),
        version=row["version"],
    )


def notification(row: Any) -> c.Notification:
    return c.Notification(
        name=f"notifications/{row['notification_id']}",
        notification_id=row["notification_id"],
        case=case_name(row["kind"], row["case_id"]),
        case_kind=KIND_ENUM[row["kind"]],
        event=row["event"],
        personal=row["personal"],
        create_time=timestamp(row["create_time"]),
    )


# --- inside a case ------------------------------------------------------------------------------------------


def event(name: str, row: Any) -> c.CaseEvent:
    return c.CaseEvent(
        name=f"{name}/events/{row['position']}",
        sequence=row["position"],
        kind=c.EventKind.Value(f"EVENT_KIND_{row['kind']}"),
        actor=row["actor"],
        step=step_enum(row["step"]),
        detail=row["detail"],
        items=list(row["items"]),
        event_time=timestamp(row["event_time"]),
    )


def message(name: str, row: Any) -> c.CaseMessage:
    return c.CaseMessage(
        name=f"{name}/messages/{row['sequence']}",
        author=row["author"],
        from_promoter=row["from_promoter"],
        text=row["text"],
        items=list(row["items"]),
        create_time=timestamp(row["create_time"]),
    )


def comment(name: str, row: Any) -> c.CaseComment:
    return c.CaseComment(
        name=f"{name}/comments/{row['sequence']}",
        author=row["author"],
        text=row["text"],
        create_time=timestamp(row["create_time"]),
    )


def opinion(name: str, row: Any) -> c.Opinion:
    return c.Opinion(
        name=f"{name}/opinions/{row['opinion_id']}",
        state=c.Opinion.State.Value(f"STATE_{row['state']}"),
        expert=row["expert"],
        requester=row["requester"],
        question=row["question"],
        due_time=timestamp(row["due_time"]),
        reminded=row["reminded"],
        verdict=c.Verdict.Value(f"VERDICT_{row['verdict']}") if row["verdict"] else c.VERDICT_UNSPECIFIED,
        answer=row["answer"],
        revocation_reason=row["revocation_reason"],
        request_time=timestamp(row["request_time"]),
        answer_time=timestamp(row["answer_time"]),
    )


def document(name: str, row: Any, content: bytes = b"") -> c.CaseDocument:
    return c.CaseDocument(
        name=f"{name}/documents/{row['document_id']}",
        version=row["version"],
        document_type=c.DocumentType.Value(f"DOCUMENT_TYPE_{row['document_type']}"),
        title=row["title"],
        media_type=row["media_type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        content=content,
        uploader=row["uploader"],
        create_time=timestamp(row["create_time"]),
    )


def decision(
    name: str, row: Any, content: bytes, *, signer: str = "", sign_time: datetime | None = None
) -> c.CaseDecision:
    signed = row["signed_sha256"] is not None
    return c.CaseDecision(
        name=f"{name}/decisions/{row['decision_id']}",
        kind=c.DecisionKind.Value(f"DECISION_KIND_{row['kind']}"),
        reference=row["reference"],
        signed=signed,
        media_type="application/pdf",
        sha256=row["signed_sha256"] if signed else row["preview_sha256"],
        content=content,
        signer=signer,
        sign_time=timestamp(sign_time),
        create_time=timestamp(row["create_time"]),
    )


def company(row: Any, agrements: Sequence[Any], today: date) -> c.TeleconsultationCompany:
    periods = [
        c.AgrementPeriod(
            application=case_name(CaseKind.AGREMENT_APPLICATION, a["case_id"]),
            start_date=pb_date(a["holding_from"]),
            end_date=pb_date(a["holding_until"]),
            by_silence=a["by_silence"],
            withdrawn=a["state"] == "WITHDRAWN",
        )
        for a in agrements
    ]
    return c.TeleconsultationCompany(
        name=names.TELECONSULTATION_COMPANY.format(row["siren"]),
        legal_name=row["legal_name"],
        ans_certificate=row["ans_certificate"],
        agrements=periods,
        agrement_valid=any(a["holding_from"] <= today <= a["holding_until"] for a in agrements),
        create_time=timestamp(row["create_time"]),
    )


def template(row: Any) -> c.MotivationTemplate:
    return c.MotivationTemplate(
        name=names.MOTIVATION_TEMPLATE.format(row["region"], row["template_id"]),
        title=row["title"],
        text=row["text"],
        kinds=[KIND_ENUM[k] for k in row["kinds"]],
        creator=row["creator"],
        create_time=timestamp(row["create_time"]),
    )
