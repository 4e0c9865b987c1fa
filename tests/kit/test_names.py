"""Resource names: one shape per resource, the same in the protos' rules and in services/kit/names.py."""

from __future__ import annotations

import re
import uuid

import pytest
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2
from parcours.type.v1 import names_pb2

from services.kit import names
from services.kit.errors import InvalidArgument
from tests.support import repo_root


def _proto_rules() -> dict[str, str]:
    """Each predefined rule of names.proto: its key → the regex its CEL expression matches."""
    found: dict[str, str] = {}
    for extension in names_pb2.DESCRIPTOR.extensions_by_name.values():
        rule = extension.GetOptions().Extensions[validate_pb2.predefined].cel[0]
        [pattern] = re.findall(r"this\.matches\('\^(.*)\$'\)", rule.expression)
        found[extension.name.removesuffix("_name")] = pattern
    return found


def test_every_resource_has_one_shape_in_the_protos_and_in_the_kit() -> None:
    assert _proto_rules() == {key: name.regex for key, name in names.ALL.items()}
    # The file is what `python -m services.kit.names` writes (numbers kept, nothing edited by hand).
    committed = (repo_root() / names.NAMES_PROTO).read_text()
    assert committed == names.names_proto(committed)


def _messages(messages: list[Descriptor]) -> list[Descriptor]:
    return [found for m in messages for found in (m, *_messages(list(m.nested_types)))]


def test_every_name_field_of_our_apis_uses_a_shared_rule_not_a_pattern_of_its_own() -> None:
    own_patterns: list[str] = []
    for api in (scheduling_pb2, expertise_pb2, directory_pb2, billing_pb2, contracts_pb2):
        for message in _messages(list(api.DESCRIPTOR.message_types_by_name.values())):
            for field in message.fields:
                rules = field.GetOptions().Extensions[validate_pb2.field]
                if rules.string.pattern and re.search(r"[a-zA-Z]+/", rules.string.pattern):
                    own_patterns.append(f"{message.name}.{field.name}: {rules.string.pattern}")
    assert own_patterns == []


def test_parse_and_format() -> None:
    appointment = uuid.uuid4()
    assert names.APPOINTMENT.format(appointment) == f"appointments/{appointment}"
    assert names.APPOINTMENT.parse_uuid(f"appointments/{appointment}", "name") == appointment
    assert names.AVAILABILITY_RULE.parse_ids(
        f"schedules/{appointment}/availabilityRules/{appointment}", "n"
    ) == (
        str(appointment),
        str(appointment),
    )
    assert names.ESTABLISHMENT.parse("establishments/2A0000031", "f") == "2A0000031"
    assert names.PATIENT.parse_optional("", "patient") is None
    assert names.GHT.format_optional(None) == ""


@pytest.mark.parametrize(
    "value",
    [
        "appointments/not-a-uuid",
        "appointments/0B6C1E7E-1111-2222-3333-444455556666",  # ids are issued lowercase
        "schedules/0b6c1e7e-1111-2222-3333-444455556666",
        "appointments/0b6c1e7e-1111-2222-3333-444455556666/x",
        "",
    ],
)
def test_a_malformed_name_is_invalid_argument_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        names.APPOINTMENT.parse(value, "appointment")
    [violation] = refused.value.violations
    assert violation.field == "appointment"
    assert "appointments/{appointment}" in violation.description


def test_every_rpc_of_every_api_declares_its_roles_and_audit_action() -> None:
    from services.kit.interceptors import policy_gaps

    services = [
        service.full_name
        for api in (directory_pb2, scheduling_pb2, expertise_pb2, billing_pb2, contracts_pb2)
        for service in api.DESCRIPTOR.services_by_name.values()
    ]
    assert len(services) == 5
    assert policy_gaps(services) == []


def test_a_contracts_case_name_is_any_of_the_four_kinds_and_its_refusal_says_so() -> None:
    case = uuid.uuid4()
    assert names.CONTRACTS_CASE.parse_ids(f"operatorDeclarations/{case}", "parent") == (
        "operatorDeclarations",
        str(case),
    )
    assert names.CASE_DOCUMENT.parse_ids(f"arsContracts/{case}/documents/annexe-1", "name") == (
        "arsContracts",
        str(case),
        "annexe-1",
    )
    assert names.PERSON.matches("staff/agent-1") and names.PERSON.matches("practitioners/10000000101")
    assert not names.PERSON.matches("establishments/420000017")
    with pytest.raises(InvalidArgument) as refused:
        names.CONTRACTS_CASE.parse(f"teleexpertiseRequests/{case}", "parent")
    [violation] = refused.value.violations
    assert "arsContracts|operatorDeclarations" in violation.description
