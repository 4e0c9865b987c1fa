"""One vocabulary of search attributes (issue 14.5): a case of each kind, queried through Temporal's
visibility API with each example the README documents; every example finds the cases it says it finds, and
no attribute carries patient data."""

from __future__ import annotations

import asyncio
import re

from services.kit import search_attributes as sa
from tests.conftest import Minter
from tests.observability import flows
from tests.observability.conftest import Hub
from tests.support import repo_root

EXPERTISE, CONSULTATION, CONTRACT = "teleexpertise", "teleconsultation", "ars-contract"
# The README's examples and the kinds of case each finds (of one téléexpertise awaiting its expert, in
# dermatology, GHT Loire; one teleconsultation in general medicine, its join window open; one ARS contract
# of GHT Loire submitted, its completeness check due).
EXAMPLES = {
    "ParcoursKind = 'teleexpertise' AND ParcoursState = 'AWAITING_EXPERT'": {EXPERTISE},
    "ParcoursGht = 'ght-loire' AND ParcoursSpecialty = 'SPECIALTY_DERMATOLOGY'": {EXPERTISE},
    "ParcoursRegion = '84' AND ParcoursKind IN ('teleexpertise', 'teleconsultation')": {
        EXPERTISE,
        CONSULTATION,
    },
    "ParcoursRegion = '84'": {EXPERTISE, CONSULTATION, CONTRACT},
    "ParcoursKind = 'teleconsultation' AND ParcoursState = 'JOIN_OPEN'": {CONSULTATION},
    "ParcoursSpecialty = 'SPECIALTY_GENERAL_MEDICINE' AND ParcoursStartTime > '2026-01-01T00:00:00Z'": {
        CONSULTATION
    },
    (
        "ParcoursKind = 'teleexpertise' AND ParcoursBreached = false"
        " AND ParcoursDueTime > '2026-01-01T00:00:00Z'"
    ): {EXPERTISE},
    "ParcoursKind = 'ars-contract' AND ParcoursState = 'SUBMITTED' AND ParcoursOverdue = false": {CONTRACT},
    "ParcoursGht = 'ght-loire' AND ParcoursDueTime > '2026-01-01T00:00:00Z'": {EXPERTISE, CONTRACT},
}


def documented_examples() -> list[str]:
    """The queries of the README's table of examples (the backquoted first cell of each row)."""
    readme = (repo_root() / "README.md").read_text()
    section = readme.split("## Finding cases in the Temporal Web UI", 1)[1].split("\n## ", 1)[0]
    table = section.split("| Query | Finds |", 1)[1]
    return re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)


def test_the_readme_documents_exactly_the_tested_examples() -> None:
    assert documented_examples() == list(EXAMPLES)


async def test_each_documented_query_finds_its_cases(hub: Hub, mint: Minter) -> None:
    expertise = await flows.ask(hub, mint)
    consultation = await flows.book(hub, mint)
    contract = await flows.file_contract(hub, mint)
    ids = {
        expertise.workflow_id: EXPERTISE,
        consultation.appointment.workflow_id: CONSULTATION,
        contract: CONTRACT,
    }
    scope = " OR ".join(f"WorkflowId = '{i}'" for i in ids)

    async def found(query: str) -> set[str]:
        return {ids[w.id] async for w in hub.temporal.list_workflows(f"({query}) AND ({scope})")}

    # Visibility is eventually consistent and offers nothing to await: ask until each query agrees.
    async def agrees(query: str, kinds: set[str]) -> set[str]:
        answer: set[str] = set()
        for _ in range(100):
            answer = await found(query)
            if answer == kinds:
                break
            await asyncio.sleep(0.2)
        return answer

    for query, kinds in EXAMPLES.items():
        assert await agrees(query, kinds) == kinds, query

    # One vocabulary: the same spellings in every kind, and nothing of the patient.
    for workflow_id, kind in ids.items():
        described = await hub.temporal.get_workflow_handle(workflow_id).describe()
        attributes = described.typed_search_attributes
        assert attributes.get(sa.CASE_KIND) == kind
        assert attributes.get(sa.REGION) == "84"
        assert attributes.get(sa.GHT) == "ght-loire"
        if kind != CONTRACT:
            assert str(attributes.get(sa.SPECIALTY)).startswith("SPECIALTY_")
        text = repr([(p.key.name, p.value) for p in attributes]).lower()
        for value in flows.FORBIDDEN:
            assert value.lower() not in text
