"""The ContractService contract: access policies, idempotency keys, field rules, and one vocabulary with the
rules (the proto's enum names are what models, policy and decisions spell)."""

from __future__ import annotations

import uuid

import pytest
from google.api import field_behavior_pb2, resource_pb2
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2
from parcours.options.v1 import options_pb2

from services.contracts import decisions, models, policy
from services.kit.interceptors import violations_of

SERVICE = contracts_pb2.DESCRIPTOR.services_by_name["ContractService"]
READ_ONLY = ("Get", "List", "Count", "Evaluate", "Check")
CASE = f"arsContracts/{uuid.uuid4()}"


def access(method_name: str) -> options_pb2.AccessPolicy:
    options = SERVICE.methods_by_name[method_name].GetOptions()
    assert options.HasExtension(options_pb2.access), method_name
    return options.Extensions[options_pb2.access]


def test_every_rpc_declares_its_roles_and_audit_action() -> None:
    assert len(SERVICE.methods) >= 70
    for method in SERVICE.methods:
        policy_ = access(method.name)
        assert policy_.roles, f"{method.name} names no role"
        assert policy_.audit_action != options_pb2.AUDIT_ACTION_UNSPECIFIED, method.name
        # Contracts carry no patient data; case reads and writes are audited all the same.
        assert not policy_.patient_data, method.name
    for method_name in ("GetArsContract", "ListCases", "SignArsContract", "PublishPolicyVersion"):
        assert access(method_name).audited


def test_only_the_signatory_signs_and_the_ordre_gives_visas() -> None:
    assert list(access("SignArsContract").roles) == [options_pb2.ROLE_ARS_SIGNATORY]
    assert list(access("SignArsContractChange").roles) == [options_pb2.ROLE_ARS_SIGNATORY]
    assert list(access("GiveArsContractVisa").roles) == [options_pb2.ROLE_ORDRE_REVIEWER]
    assert options_pb2.ROLE_ORDRE_REVIEWER not in access("ApproveArsContract").roles
    assert options_pb2.ROLE_ARS_SUPERVISOR in access("ReassignCaseSteps").roles
    assert options_pb2.ROLE_BILLING in access("CheckCoverage").roles


def test_every_mutation_carries_a_request_id_first_and_every_list_pages() -> None:
    for method in SERVICE.methods:
        fields = method.input_type.fields_by_name
        if method.name.startswith(READ_ONLY):
            assert "request_id" not in fields, method.name
        else:
            assert method.input_type.fields[0].name == "request_id", method.name
        if method.name.startswith("List"):
            assert {"page_size", "page_token"} <= set(fields), method.name
            assert "next_page_token" in method.output_type.fields_by_name, method.name


def test_resources_declare_their_patterns_and_server_set_fields() -> None:
    contract = contracts_pb2.ArsContract.DESCRIPTOR
    resource = contract.GetOptions().Extensions[resource_pb2.resource]
    assert resource.type == "contracts.parcours.health/ArsContract"
    assert list(resource.pattern) == ["arsContracts/{ars_contract}"]

    def behaviors(descriptor: FieldDescriptor) -> list[int]:
        return list(descriptor.GetOptions().Extensions[field_behavior_pb2.field_behavior])

    fields = contract.fields_by_name
    assert behaviors(fields["name"]) == [field_behavior_pb2.IDENTIFIER]
    assert field_behavior_pb2.OUTPUT_ONLY in behaviors(fields["state"])
    assert field_behavior_pb2.IMMUTABLE in behaviors(fields["activity"])
    assert field_behavior_pb2.REQUIRED in behaviors(fields["title"])
    document = contracts_pb2.CaseDocument.DESCRIPTOR.GetOptions().Extensions[resource_pb2.resource]
    assert len(document.pattern) == 4  # a document of any kind of case


def _suffixes(enum: EnumDescriptor, prefix: str) -> set[str]:
    return {v.name.removeprefix(prefix) for v in enum.values if v.number != 0}


def _constants(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


@pytest.mark.parametrize(
    ("enum", "prefix", "spelled"),
    [
        (contracts_pb2.ArsContract.State.DESCRIPTOR, "STATE_", _constants(models.ArsContractState)),
        (contracts_pb2.OperatorDeclaration.State.DESCRIPTOR, "STATE_", _constants(models.DeclarationState)),
        (contracts_pb2.IntermediaryContractReview.State.DESCRIPTOR, "STATE_", _constants(models.ReviewState)),
        (contracts_pb2.AgrementApplication.State.DESCRIPTOR, "STATE_", _constants(models.AgrementState)),
        (contracts_pb2.Step.DESCRIPTOR, "STEP_", _constants(models.Step)),
        (contracts_pb2.EventKind.DESCRIPTOR, "EVENT_KIND_", _constants(models.EventKind)),
        (contracts_pb2.Clause.DESCRIPTOR, "CLAUSE_", _constants(models.Clause)),
        (contracts_pb2.ClauseStatus.DESCRIPTOR, "CLAUSE_STATUS_", _constants(models.ClauseStatus)),
        (contracts_pb2.CaseKind.DESCRIPTOR, "CASE_KIND_", _constants(models.CaseKind)),
        (contracts_pb2.Verdict.DESCRIPTOR, "VERDICT_", _constants(models.Verdict)),
        (
            contracts_pb2.CorrectionReason.DESCRIPTOR,
            "CORRECTION_REASON_",
            _constants(models.CorrectionReason),
        ),
        (contracts_pb2.Opinion.State.DESCRIPTOR, "STATE_", _constants(models.OpinionState)),
        (contracts_pb2.ContractChange.Kind.DESCRIPTOR, "KIND_", _constants(models.ChangeKind)),
        (contracts_pb2.Requirement.DESCRIPTOR, "REQUIREMENT_", _constants(policy.Requirement)),
        (contracts_pb2.Obligation.DESCRIPTOR, "OBLIGATION_", _constants(policy.Obligation)),
        (contracts_pb2.Offerer.DESCRIPTOR, "OFFERER_", set(policy.OFFERERS)),
        (contracts_pb2.Regime.DESCRIPTOR, "REGIME_", set(policy.REGIMES)),
        (contracts_pb2.RegionPolicy.Profile.DESCRIPTOR, "PROFILE_", set(policy.Profile.ALL)),
        (contracts_pb2.DecisionKind.DESCRIPTOR, "DECISION_KIND_", set(decisions.TEMPLATES)),
        (billing_pb2.ActType.DESCRIPTOR, "ACT_TYPE_", set(policy.ACT_TYPES)),
    ],
)
def test_the_proto_and_the_rules_spell_the_same_names(
    enum: EnumDescriptor, prefix: str, spelled: set[str]
) -> None:
    assert _suffixes(enum, prefix) == spelled


def test_step_roles_are_roles_of_the_api() -> None:
    roles = _suffixes(options_pb2.Role.DESCRIPTOR, "ROLE_")
    assert set(models.Step.ROLE.values()) <= roles
    assert {r for r in models.Step.ESCALATES_TO.values() if r} <= roles


# --- field rules (protovalidate, as the kit's validation interceptor applies them) -----------------------


def fields_of(message: object) -> set[str]:
    return {v.field for v in violations_of(message)}  # type: ignore[arg-type]


def test_a_refusal_without_motivation_or_a_request_without_items_names_the_field() -> None:
    reject = contracts_pb2.RejectArsContractRequest(request_id=str(uuid.uuid4()), name=CASE)
    assert fields_of(reject) == {"motivation"}
    changes = contracts_pb2.RequestArsContractChangesRequest(
        request_id=str(uuid.uuid4()), name=CASE, motivation="à revoir"
    )
    assert fields_of(changes) == {"items"}
    changes.items.append("article 4")
    assert fields_of(changes) == set()


def test_names_idempotency_keys_and_dates_are_checked() -> None:
    bad = contracts_pb2.ApproveArsContractRequest(request_id="not-a-uuid", name="operatorDeclarations/x")
    assert fields_of(bad) == {"request_id", "name"}
    evaluate = contracts_pb2.EvaluateActivityRequest(region="regions/84")
    assert fields_of(evaluate) == {"activity", "date"}
    evaluate.activity.act_type = billing_pb2.ACT_TYPE_TELECONSULTATION
    evaluate.activity.offerer = contracts_pb2.OFFERER_ESTABLISHMENT
    evaluate.date.CopyFrom(date_pb2.Date(year=2026, month=3, day=2))
    assert fields_of(evaluate) == set()


def test_a_valid_contract_creation_passes_and_a_clause_mark_is_a_real_mark() -> None:
    create = contracts_pb2.CreateArsContractRequest(request_id=str(uuid.uuid4()))
    contract = create.ars_contract
    contract.region, contract.departement, contract.title = "regions/84", "42", "Téléconsultation en EHPAD"
    contract.activity.act_type = billing_pb2.ACT_TYPE_TELECONSULTATION
    contract.activity.offerer = contracts_pb2.OFFERER_ESTABLISHMENT
    contract.requested_start_date.CopyFrom(date_pb2.Date(year=2026, month=4, day=1))
    contract.requested_end_date.CopyFrom(date_pb2.Date(year=2029, month=3, day=31))
    assert fields_of(create) == set()
    contract.departement = "420"
    assert fields_of(create) == {"ars_contract.departement"}
    mark = contracts_pb2.MarkIntermediaryContractClauseRequest(
        request_id=str(uuid.uuid4()),
        name=f"intermediaryContractReviews/{uuid.uuid4()}",
        clause=contracts_pb2.CLAUSE_REMUNERATION,
        status=contracts_pb2.CLAUSE_STATUS_UNREVIEWED,
    )
    assert fields_of(mark) == {"status"}
