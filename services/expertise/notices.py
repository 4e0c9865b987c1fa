"""What a téléexpertise's notifications say, per event. Pure: the activity gives the facts.

Every notification names the request (`teleexpertiseRequests/…`), what happened and, while it runs, the answer
deadline in the region's time; never the patient, the question, the clinical context, the messages or the
report (the kit's rule, services/kit/notify.py). The professional opens the request in their software.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.notify import FOOTER, Notice, french_datetime, notification_key

_SAYS = {
    "CREATED": "Une demande de téléexpertise a été créée.",
    "ROUTED": "Une demande de téléexpertise vous est adressée ; elle attend qu'un expert l'accepte.",
    "REMINDED": "Rappel : une demande de téléexpertise attend toujours qu'un expert l'accepte.",
    "ESCALATED": "Une demande de téléexpertise est proposée à de nouveaux experts ; elle attend qu'un expert "
    "l'accepte.",
    "DECLINED": "Un expert a décliné la demande de téléexpertise.",
    "ACCEPTED": "La demande de téléexpertise a été acceptée par un expert.",
    "HANDED_BACK": "L'expert a rendu la demande de téléexpertise ; elle est proposée à nouveau.",
    "QUESTION_ASKED": "L'expert pose une question sur la demande de téléexpertise.",
    "QUESTION_ANSWERED": "Le requérant a répondu à la question de l'expert.",
    "COMPLETED": "Le compte rendu de la téléexpertise est disponible dans Parcours "
    "(document FHIR du dossier : GetTeleexpertiseDocument).",
    "CANCELLED": "La demande de téléexpertise a été annulée par le requérant.",
    "DEADLINE_BREACHED": "L'échéance de réponse de la demande de téléexpertise est dépassée.",
    "EXPIRED": "La demande de téléexpertise a expiré sans qu'un expert l'accepte.",
    "BILLED": "Les actes de la téléexpertise ont été enregistrés pour la facturation.",
    "BILLING_REFUSED": "La facturation de la téléexpertise a été refusée ; le motif figure dans la demande.",
}
_OPEN = frozenset({"ROUTED", "REMINDED", "ESCALATED", "DECLINED", "ACCEPTED", "HANDED_BACK", "QUESTION_ASKED",
                   "QUESTION_ANSWERED"})  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RequestFacts:
    request: str  # teleexpertiseRequests/{id}
    answer_due_time: datetime
    time_zone: str


def notice(kind: str, sequence: int, recipient: str, facts: RequestFacts, *, occur_time: datetime) -> Notice:
    says = _SAYS.get(kind, "La demande de téléexpertise a changé.")
    lines = ["Bonjour,", says]
    data = {"event_sequence": str(sequence)}
    if kind in _OPEN:
        lines.append(f"Échéance de réponse : {french_datetime(facts.answer_due_time, facts.time_zone)}.")
        data["answer_due_time"] = facts.answer_due_time.isoformat()
    lines += ["", f"Référence : {facts.request}", "", FOOTER]
    label = str(sequence)
    return Notice(
        key=notification_key(facts.request, kind, label, recipient),
        case=facts.request,
        event_type=f"parcours.teleexpertise.{kind.lower()}",
        kind=kind,
        label=label,
        recipient=recipient,
        subject=f"Téléexpertise : {says.split(' ;')[0].rstrip('.')}",
        text="\n".join(lines) + "\n",
        occur_time=occur_time,
        data=data,
    )
