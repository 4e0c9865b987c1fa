"""Custom Temporal search attributes of Parcours cases.

Registered by `make run` (temporal server start-dev --search-attribute) and by the Helm hook Job. They make
cases filterable in the Temporal Web UI and never carry patient identifiers.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CASE_STATE = SearchAttributeKey.for_keyword("ParcoursState")
CASE_KIND = SearchAttributeKey.for_keyword("ParcoursKind")
REGION = SearchAttributeKey.for_keyword("ParcoursRegion")
GHT = SearchAttributeKey.for_keyword("ParcoursGht")
SPECIALTY = SearchAttributeKey.for_keyword("ParcoursSpecialty")
DUE_TIME = SearchAttributeKey.for_datetime("ParcoursDueTime")
START_TIME = SearchAttributeKey.for_datetime("ParcoursStartTime")
BREACHED = SearchAttributeKey.for_bool("ParcoursBreached")
OVERDUE = SearchAttributeKey.for_bool("ParcoursOverdue")
EXPIRE_TIME = SearchAttributeKey.for_datetime("ParcoursExpireTime")

ALL = (CASE_STATE, CASE_KIND, REGION, GHT, SPECIALTY, DUE_TIME, START_TIME, BREACHED, OVERDUE, EXPIRE_TIME)

# The names of the types as `temporal server start-dev --search-attribute Name=Type` spells them.
_CLI_TYPE = {"KEYWORD": "Keyword", "DATETIME": "Datetime", "BOOL": "Bool", "TEXT": "Text", "INT": "Int"}


def cli_flags() -> list[str]:
    """`--search-attribute Name=Type` arguments for the temporal CLI."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPE[key.indexed_value_type.name]}"]
    return flags
