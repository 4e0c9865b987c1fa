"""Resource names (AIP-122): one typed pattern per resource, used by every service to parse and to format.

    APPOINTMENT.parse("appointments/0b6c…", "name")  -> "0b6c…"         (the id, as written)
    APPOINTMENT.parse_uuid(request.name, "name")     -> UUID("0b6c…")
    APPOINTMENT.format(appointment_id)               -> "appointments/0b6c…"
    AVAILABILITY_RULE.parse_ids(name, "name")        -> ("<schedule id>", "<rule id>")
    PATIENT.parse_optional(request.patient, "patient") -> "…" or None when empty

A value that does not match raises the kit's INVALID_ARGUMENT naming the field and the expected shape, so a
handler never sees a malformed name. The same shapes are declared once in the protos
(`protos/parcours/type/v1/names.proto`, predefined protovalidate rules each field refers to); a test checks
that both say the same.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from services.kit.errors import InvalidArgument

# The id shapes the hub issues or accepts.
UUID_ID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RPPS_ID = "[0-9]{11}"
FINESS_ID = "(?:[0-9]{2}|2[AB])[0-9]{7}"
REGION_ID = "[0-9]{2}"
SLUG_ID = "[a-z0-9][a-z0-9-]{1,62}"
SIREN_ID = "[0-9]{9}"
# Hub staff as their token names them (`staff:<id>` → `staff/<id>`).
STAFF_ID = "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
# A case document's id, chosen by whoever adds it (a new version keeps it).
DOCUMENT_ID = "[a-z0-9][a-z0-9-]{0,62}"
# A region's contract-policy version number, from 1.
POLICY_VERSION_ID = "[1-9][0-9]{0,5}"
# The collections of the four kinds of contracts case: a name of one of them is a "case" name.
CASE_COLLECTIONS = "arsContracts|operatorDeclarations|intermediaryContractReviews|agrementApplications"

_SEGMENT = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class ResourceName:
    """A resource's name pattern, e.g. `schedules/{schedule}/availabilityRules/{rule}`, with each variable's
    id shape. A variable may stand for a collection (`{collection}/{case}`, the collection's shape an
    alternation): `shape` then says the name's forms to a person."""

    pattern: str
    ids: dict[str, str]
    shape: str = ""
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _variables: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # The literal text around the variables (one more than them), joined with the ids by `format`.
    _literals: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        variables = tuple(_SEGMENT.findall(self.pattern))
        if set(variables) != set(self.ids):
            raise ValueError(f"{self.pattern}: id shapes given for {sorted(self.ids)}")
        regex = "".join(
            f"({self.ids[part[1:-1]]})" if _SEGMENT.fullmatch(part) else re.escape(part)
            for part in re.split(r"(\{[a-z_]+\})", self.pattern)
            if part
        )
        object.__setattr__(self, "_variables", variables)
        object.__setattr__(self, "_literals", tuple(_SEGMENT.split(self.pattern)[::2]))
        object.__setattr__(self, "_regex", re.compile(regex))

    @property
    def regex(self) -> str:
        """The full-match regular expression of a name (as the proto rule writes it, without anchors)."""
        return self._regex.pattern

    @property
    def collection(self) -> str:
        """The first collection segment (`appointments`)."""
        return self.pattern.split("/", 1)[0]

    def _refusal(self, field_path: str) -> InvalidArgument:
        return InvalidArgument.one(field_path, f"must be a resource name {self.shape or self.pattern}")

    def parse_ids(self, value: str, field_path: str) -> tuple[str, ...]:
        """Every id of the name, in order."""
        found = self._regex.fullmatch(value)
        if found is None:
            raise self._refusal(field_path)
        return found.groups()

    def parse(self, value: str, field_path: str) -> str:
        """The last id of the name (the resource's own)."""
        return self.parse_ids(value, field_path)[-1]

    def parse_uuid(self, value: str, field_path: str) -> uuid.UUID:
        return uuid.UUID(self.parse(value, field_path))

    def parse_optional(self, value: str, field_path: str) -> str | None:
        """None for an empty value (an unset optional reference), else `parse`."""
        return self.parse(value, field_path) if value else None

    def parse_optional_uuid(self, value: str, field_path: str) -> uuid.UUID | None:
        return uuid.UUID(self.parse(value, field_path)) if value else None

    def matches(self, value: str) -> bool:
        return self._regex.fullmatch(value) is not None

    def format(self, *ids: object) -> str:
        """The name of the resource with these ids (in the pattern's order)."""
        if len(ids) != len(self._variables):
            raise ValueError(f"{self.pattern} takes {len(self._variables)} ids")
        literals = self._literals
        if len(ids) == 1:  # most names: no generator, no join
            return f"{literals[0]}{ids[0]}{literals[1]}"
        found = [literals[0]]
        for value, literal in zip(ids, literals[1:], strict=True):
            found += (str(value), literal)
        return "".join(found)

    def format_optional(self, value: object | None) -> str:
        """'' for None (an unset optional reference), else `format`."""
        return "" if value is None or value == "" else self.format(value)


def _name(pattern: str, shape: str = "", **ids: str) -> ResourceName:
    return ResourceName(pattern, ids, shape)


# Reference data (directory).
REGION = _name("regions/{region}", region=REGION_ID)
GHT = _name("ghts/{ght}", ght=SLUG_ID)
ESTABLISHMENT = _name("establishments/{establishment}", establishment=FINESS_ID)
PRACTITIONER = _name("practitioners/{practitioner}", practitioner=RPPS_ID)
PATIENT = _name("patients/{patient}", patient=UUID_ID)
EXPERTISE_OFFER = _name("expertiseOffers/{offer}", offer=SLUG_ID)
# Scheduling.
SCHEDULE = _name("schedules/{schedule}", schedule=UUID_ID)
AVAILABILITY_RULE = _name("schedules/{schedule}/availabilityRules/{rule}", schedule=UUID_ID, rule=UUID_ID)
AVAILABILITY_EXCEPTION = _name("availabilityExceptions/{exception}", exception=UUID_ID)
SLOT = _name("slots/{slot}", slot=UUID_ID)
APPOINTMENT = _name("appointments/{appointment}", appointment=UUID_ID)
TELECONSEIL = _name("teleconseils/{teleconseil}", teleconseil=UUID_ID)
APPOINTMENT_SERIES = _name("appointmentSeries/{appointment_series}", appointment_series=UUID_ID)
WAITLIST_ENTRY = _name("waitlistEntries/{waitlist_entry}", waitlist_entry=UUID_ID)
# Téléexpertise.
TELEEXPERTISE_REQUEST = _name("teleexpertiseRequests/{request}", request=UUID_ID)
TELEEXPERTISE_ATTACHMENT = _name(
    "teleexpertiseRequests/{request}/attachments/{attachment}", request=UUID_ID, attachment=UUID_ID
)
# Billing.
CHARGE = _name("charges/{charge}", charge=UUID_ID)
CATALOG = _name("catalogs/{catalog}", catalog=SLUG_ID)
# Contracts.
STAFF = _name("staff/{staff}", staff=STAFF_ID)
# Who an opinion is asked of: an officer or an outside expert.
PERSON = _name(
    "{person}",
    "staff/{staff} or practitioners/{practitioner}",
    person=f"staff/{STAFF_ID}|practitioners/{RPPS_ID}",
)
TELECONSULTATION_COMPANY = _name("teleconsultationCompanies/{company}", company=SIREN_ID)
REGION_POLICY = _name(
    "regions/{region}/contractPolicies/{version}", region=REGION_ID, version=POLICY_VERSION_ID
)
MOTIVATION_TEMPLATE = _name(
    "regions/{region}/motivationTemplates/{template}", region=REGION_ID, template=UUID_ID
)
ARS_CONTRACT = _name("arsContracts/{ars_contract}", ars_contract=UUID_ID)
OPERATOR_DECLARATION = _name("operatorDeclarations/{operator_declaration}", operator_declaration=UUID_ID)
INTERMEDIARY_CONTRACT_REVIEW = _name(
    "intermediaryContractReviews/{intermediary_contract_review}", intermediary_contract_review=UUID_ID
)
AGREMENT_APPLICATION = _name("agrementApplications/{agrement_application}", agrement_application=UUID_ID)
_CASE_SHAPE = "{arsContracts|operatorDeclarations|intermediaryContractReviews|agrementApplications}/{id}"
# Any of the four kinds of case (the inbox, claims, opinions, messages, documents, decisions).
CONTRACTS_CASE = _name("{collection}/{case}", _CASE_SHAPE, collection=CASE_COLLECTIONS, case=UUID_ID)
CASE_DOCUMENT = _name(
    "{collection}/{case}/documents/{document}",
    _CASE_SHAPE + "/documents/{document}",
    collection=CASE_COLLECTIONS,
    case=UUID_ID,
    document=DOCUMENT_ID,
)
CASE_OPINION = _name(
    "{collection}/{case}/opinions/{opinion}",
    _CASE_SHAPE + "/opinions/{opinion}",
    collection=CASE_COLLECTIONS,
    case=UUID_ID,
    opinion=UUID_ID,
)
CASE_DECISION = _name(
    "{collection}/{case}/decisions/{decision}",
    _CASE_SHAPE + "/decisions/{decision}",
    collection=CASE_COLLECTIONS,
    case=UUID_ID,
    decision=UUID_ID,
)

ALL: dict[str, ResourceName] = {
    "region": REGION,
    "ght": GHT,
    "establishment": ESTABLISHMENT,
    "practitioner": PRACTITIONER,
    "patient": PATIENT,
    "expertise_offer": EXPERTISE_OFFER,
    "schedule": SCHEDULE,
    "availability_rule": AVAILABILITY_RULE,
    "availability_exception": AVAILABILITY_EXCEPTION,
    "slot": SLOT,
    "appointment": APPOINTMENT,
    "teleconseil": TELECONSEIL,
    "appointment_series": APPOINTMENT_SERIES,
    "waitlist_entry": WAITLIST_ENTRY,
    "teleexpertise_request": TELEEXPERTISE_REQUEST,
    "teleexpertise_attachment": TELEEXPERTISE_ATTACHMENT,
    "charge": CHARGE,
    "catalog": CATALOG,
    "staff": STAFF,
    "person": PERSON,
    "teleconsultation_company": TELECONSULTATION_COMPANY,
    "region_policy": REGION_POLICY,
    "motivation_template": MOTIVATION_TEMPLATE,
    "ars_contract": ARS_CONTRACT,
    "operator_declaration": OPERATOR_DECLARATION,
    "intermediary_contract_review": INTERMEDIARY_CONTRACT_REVIEW,
    "agrement_application": AGREMENT_APPLICATION,
    "contracts_case": CONTRACTS_CASE,
    "case_document": CASE_DOCUMENT,
    "case_opinion": CASE_OPINION,
    "case_decision": CASE_DECISION,
}


# --- The protos' side: protos/parcours/type/v1/names.proto, written from ALL --------------------------------

NAMES_PROTO = "protos/parcours/type/v1/names.proto"
_FIRST_RULE_NUMBER = 80001
_PROTO_HEADER = """\
// Resource name shapes, declared once: predefined protovalidate rules that every field naming a resource uses
// (`[(buf.validate.field).string.(parcours.type.v1.appointment_name) = true]`), so one pattern per resource
// holds across every API. Written by `python -m services.kit.names` from services/kit/names.py (a test holds
// the two to the same shapes); a rule keeps its number for ever, new resources take the next ones.
// Edition 2023: predefined rules extend buf.validate.StringRules, which proto3 files cannot do.
edition = "2023";

package parcours.type.v1;

import "buf/validate/validate.proto";

extend buf.validate.StringRules {
"""


def names_proto(existing: str = "") -> str:
    """The text of names.proto for ALL, keeping the extension numbers `existing` (its current text) gave."""
    numbers = {key: int(n) for key, n in re.findall(r"bool (\w+)_name = (\d+)", existing)}
    next_number = max([_FIRST_RULE_NUMBER - 1, *numbers.values()]) + 1
    rules: list[tuple[int, str]] = []
    for key, resource in ALL.items():
        number = numbers.get(key)
        if number is None:
            number, next_number = next_number, next_number + 1
        rules.append(
            (
                number,
                f"  // `{resource.pattern}`.\n"
                f"  bool {key}_name = {number} [(buf.validate.predefined).cel = {{\n"
                f'    id: "string.{key}_name"\n'
                f'    message: "must be a resource name {resource.pattern}"\n'
                f"    expression: \"!rule || this.matches('^{resource.regex}$')\"\n"
                f"  }}];",
            )
        )
    return _PROTO_HEADER + "\n".join(text for _, text in sorted(rules)) + "\n}\n"


if __name__ == "__main__":
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / NAMES_PROTO
    path.write_text(names_proto(path.read_text()))
    print(f"wrote {NAMES_PROTO}")
