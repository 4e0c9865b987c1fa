"""The inbox's filters: one query string (what saved views and exports keep) ↔ the contracts API's requests.

The list is the contracts service's `ListCases` (keyset pagination, sorted by due date by default) and the tab
counters its `CountCases` (one query for every tab, under the same filters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from urllib.parse import urlencode

from google.protobuf.timestamp_pb2 import Timestamp
from parcours.contracts.v1 import contracts_pb2

from services.console.french import PARIS

TABS = {
    "a-traiter": (contracts_pb2.TAB_TO_PROCESS, "À traiter"),
    "suivis": (contracts_pb2.TAB_FOLLOWED, "Suivis"),
    "traites": (contracts_pb2.TAB_PROCESSED, "Traités"),
    "tous": (contracts_pb2.TAB_ALL, "Tous"),
    "a-echeance": (contracts_pb2.TAB_DUE_SOON, "À échéance"),
}
ORDERS = {
    "echeance": (contracts_pb2.CASE_ORDER_DUE_TIME, "Échéance la plus proche"),
    "modification": (contracts_pb2.CASE_ORDER_UPDATE_TIME, "Dernière modification"),
    "fin-de-validite": (contracts_pb2.CASE_ORDER_EXPIRE_TIME, "Fin de validité la plus proche"),
}
ASSIGNMENTS = {
    "moi": (contracts_pb2.ASSIGNMENT_CLAIMED_BY_ME, "Pris en charge par moi"),
    "personne": (contracts_pb2.ASSIGNMENT_UNCLAIMED, "Non pris en charge"),
    "autres": (contracts_pb2.ASSIGNMENT_CLAIMED_BY_OTHERS, "Pris en charge par d'autres"),
}
FILTER_KEYS = (
    "onglet",
    "type",
    "etat",
    "etape",
    "ght",
    "departement",
    "etablissement",
    "attribution",
    "titulaire",
    "echeance-avant",
    "en-retard",
    "expire-sous",
    "tri",
)
PAGE_SIZE = 50
_DEPARTEMENT = re.compile(r"(?:[0-9]{2}|2A|2B|97[1-6])")
_FINESS = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{7}")
_KINDS = frozenset(contracts_pb2.CaseKind.keys()) - {"CASE_KIND_UNSPECIFIED"}
_STEPS = frozenset(contracts_pb2.Step.keys()) - {"STEP_UNSPECIFIED"}


@dataclass
class InboxQuery:
    """The inbox as the officer filtered it; `errors` names the filters that were not understood."""

    tab: str = "a-traiter"
    kinds: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    ght: str = ""
    departement: str = ""
    establishment: str = ""
    assignment: str = ""
    claimant: str = ""
    due_before: date | None = None
    overdue_only: bool = False
    expiring_within_days: int = 0
    order: str = "echeance"
    page_token: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, str], multi: Mapping[str, list[str]]) -> InboxQuery:
        q = cls()
        tab = params.get("onglet", "a-traiter")
        if tab in TABS:
            q.tab = tab
        else:
            q.errors["onglet"] = "onglet inconnu"
        for kind in multi.get("type", []):
            if kind in _KINDS:
                q.kinds.append(kind)
            elif kind:
                q.errors["type"] = "type de dossier inconnu"
        for state in multi.get("etat", []):
            if state and state.replace("_", "").isalpha() and state.isupper() and len(state) <= 40:
                q.states.append(state)
            elif state:
                q.errors["etat"] = "état inconnu"
        for step in multi.get("etape", []):
            if step in _STEPS:
                q.steps.append(step)
            elif step:
                q.errors["etape"] = "étape inconnue"
        q.ght = _bounded(params.get("ght", ""), 100, q.errors, "ght")
        dept = params.get("departement", "").strip().upper()
        if dept and not _DEPARTEMENT.fullmatch(dept):
            q.errors["departement"] = "département invalide (42, 2A, 971…)"
        else:
            q.departement = dept
        finess = params.get("etablissement", "").strip().upper()
        if finess and not _FINESS.fullmatch(finess):
            q.errors["etablissement"] = "FINESS invalide (9 caractères)"
        else:
            q.establishment = finess
        assignment = params.get("attribution", "")
        if assignment and assignment not in ASSIGNMENTS:
            q.errors["attribution"] = "attribution inconnue"
        else:
            q.assignment = assignment
        q.claimant = _bounded(params.get("titulaire", "").strip(), 64, q.errors, "titulaire")
        due = params.get("echeance-avant", "")
        if due:
            try:
                q.due_before = date.fromisoformat(due)
            except ValueError:
                q.errors["echeance-avant"] = "date invalide (AAAA-MM-JJ)"
        q.overdue_only = params.get("en-retard", "") in ("1", "on", "oui")
        expiring = params.get("expire-sous", "")
        if expiring:
            if expiring.isdigit() and 0 < int(expiring) <= 3650:
                q.expiring_within_days = int(expiring)
            else:
                q.errors["expire-sous"] = "nombre de jours entre 1 et 3650"
        order = params.get("tri", "echeance")
        if order in ORDERS:
            q.order = order
        else:
            q.errors["tri"] = "tri inconnu"
        q.page_token = params.get("page", "")[:512]
        return q

    def query_string(self, *, tab: str | None = None, page_token: str = "") -> str:
        pairs: list[tuple[str, str]] = [("onglet", tab or self.tab)]
        pairs += [("type", k) for k in self.kinds]
        pairs += [("etat", s) for s in self.states]
        pairs += [("etape", s) for s in self.steps]
        for key, value in (
            ("ght", self.ght),
            ("departement", self.departement),
            ("etablissement", self.establishment),
            ("attribution", self.assignment),
            ("titulaire", self.claimant),
            ("echeance-avant", self.due_before.isoformat() if self.due_before else ""),
            ("en-retard", "1" if self.overdue_only else ""),
            ("expire-sous", str(self.expiring_within_days) if self.expiring_within_days else ""),
            ("tri", self.order if self.order != "echeance" else ""),
            ("page", page_token),
        ):
            if value:
                pairs.append((key, value))
        return urlencode(pairs)

    def _common(self) -> dict[str, object]:
        claimant = self.claimant
        if claimant and "/" not in claimant:
            claimant = f"staff/{claimant}"
        due_before = None
        if self.due_before is not None:
            due_before = Timestamp()
            due_before.FromDatetime(datetime.combine(self.due_before, time(0), PARIS).astimezone(UTC))
        return {
            "kinds": [contracts_pb2.CaseKind.Value(k) for k in self.kinds],
            "states": self.states,
            "steps": [contracts_pb2.Step.Value(s) for s in self.steps],
            "ght": f"ghts/{self.ght}" if self.ght and not self.ght.startswith("ghts/") else self.ght,
            "departement": self.departement,
            "establishment": f"establishments/{self.establishment}" if self.establishment else "",
            "assignment": ASSIGNMENTS[self.assignment][0] if self.assignment else 0,
            "claimant": claimant,
            "due_before": due_before,
            "overdue_only": self.overdue_only,
            "expiring_within_days": self.expiring_within_days,
        }

    def list_request(self, page_size: int = PAGE_SIZE) -> contracts_pb2.ListCasesRequest:
        return contracts_pb2.ListCasesRequest(
            page_size=page_size,
            page_token=self.page_token,
            tab=TABS[self.tab][0],
            order_by=ORDERS[self.order][0],
            **self._common(),  # type: ignore[arg-type]
        )

    def count_request(self) -> contracts_pb2.CountCasesRequest:
        return contracts_pb2.CountCasesRequest(**self._common())  # type: ignore[arg-type]


def _bounded(value: str, limit: int, errors: dict[str, str], name: str) -> str:
    if len(value) > limit:
        errors[name] = f"{limit} caractères au plus"
        return ""
    return value


def tab_count(counts: contracts_pb2.TabCounts, tab: str) -> int:
    return {
        "a-traiter": counts.to_process,
        "suivis": counts.followed,
        "traites": counts.processed,
        "tous": counts.all,
        "a-echeance": counts.due_soon,
    }[tab]
