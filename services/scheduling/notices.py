"""What a teleconsultation's notifications say, per kind. Pure: the activity gives the facts.

Decided per kind (the kit's rule: no patient identity, no free text of the case):

- reminder, to the patient: the date and local time, the practice place, the appointment's reference; never
  the patient's name, INS, birth date, the teleconsultant's specialty or the reason for the visit;
- join link, to the patient and the teleconsultant: the start and the personal link (its token expires with
  the consultation); nothing else;
- report, to the médecin traitant and the requester: that the compte rendu is in the hub
  (GetTeleconsultationDocument) and the date; never the compte rendu itself, acts or prescriptions.

The professional reads the record through the hub (authenticated, audited); the link is the only secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.notify import FOOTER, Notice, french_datetime, notification_key

REMINDER = "KIND_REMINDER"
JOIN_LINK = "KIND_JOIN_LINK"
REPORT = "KIND_REPORT"
_EVENT_TYPES = {
    REMINDER: "parcours.teleconsultation.reminder",
    JOIN_LINK: "parcours.teleconsultation.join_link",
    REPORT: "parcours.teleconsultation.report_available",
}


@dataclass(frozen=True, kw_only=True)
class AppointmentFacts:
    appointment: str  # appointments/{id}
    start_time: datetime
    time_zone: str
    # The practice place's display name.
    place: str


def notice(
    kind: str,
    label: str,
    recipient: str,
    facts: AppointmentFacts,
    *,
    occur_time: datetime,
    join_url: str = "",
    join_expire_time: datetime | None = None,
) -> Notice:
    when = french_datetime(facts.start_time, facts.time_zone)
    data = {"start_time": facts.start_time.isoformat()}
    if kind == REMINDER:
        subject = f"Rappel : téléconsultation le {when}"
        lines = [
            "Bonjour,",
            f"Une téléconsultation est prévue le {when}, avec {facts.place}.",
            "Le lien pour la rejoindre vous sera envoyé à l'ouverture de la salle d'attente.",
            "Pour annuler ou déplacer ce rendez-vous, adressez-vous à l'établissement.",
        ]
    elif kind == JOIN_LINK:
        assert join_url
        assert join_expire_time is not None
        subject = "Votre téléconsultation va commencer"
        lines = [
            "Bonjour,",
            f"La téléconsultation du {when} peut être rejointe dès maintenant :",
            join_url,
            f"Ce lien est personnel ; il expire le {french_datetime(join_expire_time, facts.time_zone)}.",
        ]
        data = {**data, "join_url": join_url, "expire_time": join_expire_time.isoformat()}
    elif kind == REPORT:
        subject = "Compte rendu de téléconsultation disponible"
        lines = [
            "Bonjour,",
            f"Le compte rendu de la téléconsultation du {when} est disponible dans Parcours "
            "(document FHIR du dossier : GetTeleconsultationDocument).",
        ]
    else:
        raise ValueError(f"unknown notification kind {kind}")
    lines += ["", f"Référence : {facts.appointment}", "", FOOTER]
    return Notice(
        key=notification_key(facts.appointment, kind, label, recipient),
        case=facts.appointment,
        event_type=_EVENT_TYPES[kind],
        kind=kind,
        label=label,
        recipient=recipient,
        subject=subject,
        text="\n".join(lines) + "\n",
        occur_time=occur_time,
        data=data,
    )
