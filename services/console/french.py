"""The console speaks French: labels of the API's values, the services' refusals, dates and numbers.

Dates are shown in the officer's region's zone (Europe/Paris, or the overseas zone of a DROM region), numbers
and euros in French format (CLDR data through Babel: narrow no-break spaces, decimal comma).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent

LOCALE = "fr_FR"
PARIS = ZoneInfo("Europe/Paris")
# INSEE region codes of the DROM and their zones (the others are Europe/Paris).
REGION_ZONES = {
    "01": ZoneInfo("America/Guadeloupe"),
    "02": ZoneInfo("America/Martinique"),
    "03": ZoneInfo("America/Cayenne"),
    "04": ZoneInfo("Indian/Reunion"),
    "06": ZoneInfo("Indian/Mayotte"),
}
REGION_NAMES = {
    "01": "Guadeloupe",
    "02": "Martinique",
    "03": "Guyane",
    "04": "La Réunion",
    "06": "Mayotte",
    "11": "Île-de-France",
    "24": "Centre-Val de Loire",
    "27": "Bourgogne-Franche-Comté",
    "28": "Normandie",
    "32": "Hauts-de-France",
    "44": "Grand Est",
    "52": "Pays de la Loire",
    "53": "Bretagne",
    "75": "Nouvelle-Aquitaine",
    "76": "Occitanie",
    "84": "Auvergne-Rhône-Alpes",
    "93": "Provence-Alpes-Côte d'Azur",
    "94": "Corse",
}


def zone_of(region: str | None) -> ZoneInfo:
    return REGION_ZONES.get(region or "", PARIS)


def when(instant: datetime | None, region: str | None = None) -> str:
    """`12 mars 2026 à 14:05` in the region's zone."""
    if instant is None:
        return ""
    local = instant.astimezone(zone_of(region))
    return format_datetime(local, "d MMMM y 'à' HH:mm", locale=LOCALE)


def day(value: date | datetime | None, region: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(zone_of(region)).date()
    return format_date(value, "d MMMM y", locale=LOCALE)


def number(value: float | int | Decimal, digits: int = 0) -> str:
    pattern = "#,##0" if digits == 0 else "#,##0." + "0" * digits
    return format_decimal(value, format=pattern, locale=LOCALE)


def euros(value: Decimal | float) -> str:
    return format_currency(value, "EUR", locale=LOCALE)


def percent(value: float) -> str:
    return format_percent(value, format="#,##0.0 %", locale=LOCALE)


def countdown(due: datetime | None, now: datetime | None = None) -> tuple[str, str]:
    """(French text, level) of a deadline: level `overdue`, `soon` (within 7 days) or `later`."""
    if due is None:
        return "", ""
    now = now or datetime.now(UTC)
    delta = due - now
    if delta < timedelta(0):
        days = (-delta).days
        text = (
            "en retard de moins d'un jour"
            if days == 0
            else f"en retard de {days} jour{'s' if days > 1 else ''}"
        )
        return text, "overdue"
    days = delta.days
    if days == 0:
        hours = int(delta.total_seconds() // 3600)
        text = "échéance dans moins d'une heure" if hours == 0 else f"échéance dans {hours} h"
    elif days == 1:
        text = "échéance demain"
    else:
        text = f"échéance dans {days} jours"
    return text, "soon" if delta <= timedelta(days=7) else "later"


KINDS = {
    "CASE_KIND_ARS_CONTRACT": "Contrat avec l'ARS",
    "CASE_KIND_OPERATOR_DECLARATION": "Déclaration d'opérateur de télésurveillance",
    "CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW": "Contrat médecin – société intermédiaire",
    "CASE_KIND_AGREMENT_APPLICATION": "Demande d'agrément",
}
# The case's URL segment (its resource collection) per kind, and back.
COLLECTIONS = {
    "CASE_KIND_ARS_CONTRACT": "arsContracts",
    "CASE_KIND_OPERATOR_DECLARATION": "operatorDeclarations",
    "CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW": "intermediaryContractReviews",
    "CASE_KIND_AGREMENT_APPLICATION": "agrementApplications",
}
KIND_OF_COLLECTION = {v: k for k, v in COLLECTIONS.items()}

STATES = {
    "DRAFT": "Brouillon",
    "SUBMITTED": "Déposé, complétude à vérifier",
    "AWAITING_DOCUMENTS": "En attente de pièces",
    "AWAITING_VISA": "En attente du visa de l'Ordre",
    "UNDER_REVIEW": "En instruction",
    "CHANGES_REQUESTED": "Modifications demandées",
    "AWAITING_SIGNATURE": "À signer",
    "ACTIVE": "En vigueur",
    "REJECTED": "Rejeté",
    "VISA_REFUSED": "Visa refusé",
    "WITHDRAWN": "Retiré",
    "EXPIRED": "Expiré",
    "TERMINATED": "Résilié",
    "DECLARED": "Déclarée",
    "ACKNOWLEDGED": "Accusé de réception donné",
    "EFFECTIVE": "Effective",
    "LAPSED": "Caduque",
    "VISA_GIVEN": "Visa accordé",
    "FILED": "Déposée",
    "GRANTED": "Accordé",
    "GRANTED_BY_SILENCE": "Accordé tacitement",
    "REFUSED": "Refusé",
}
CLOSED_STATES = {
    "REJECTED",
    "VISA_REFUSED",
    "WITHDRAWN",
    "EXPIRED",
    "TERMINATED",
    "LAPSED",
    "VISA_GIVEN",
    "REFUSED",
}

STEPS = {
    "STEP_COMPLETENESS_CHECK": "Vérification de complétude",
    "STEP_DOCUMENTS": "Pièces à fournir par le porteur",
    "STEP_ORDINAL_VISA": "Visa de l'Ordre",
    "STEP_ARS_REVIEW": "Instruction par l'ARS",
    "STEP_REVISION": "Révision par le porteur",
    "STEP_SIGNATURE": "Signature du directeur général",
    "STEP_CHANGE_REVIEW": "Instruction de l'avenant ou du renouvellement",
    "STEP_CHANGE_SIGNATURE": "Signature de l'avenant ou du renouvellement",
    "STEP_ACKNOWLEDGEMENT": "Accusé de réception de l'ARS",
    "STEP_ORDRE_REVIEW": "Examen par l'Ordre",
    "STEP_AGREMENT_DECISION": "Décision ministérielle d'agrément",
}

EVENTS = {
    "EVENT_KIND_CREATED": "Dossier créé",
    "EVENT_KIND_SUBMITTED": "Dossier déposé",
    "EVENT_KIND_DOCUMENTS_REQUESTED": "Pièces demandées",
    "EVENT_KIND_DOCUMENTS_COMPLETED": "Pièces fournies",
    "EVENT_KIND_MARKED_COMPLETE": "Dossier déclaré complet",
    "EVENT_KIND_STEP_OPENED": "Étape ouverte",
    "EVENT_KIND_CLAIMED": "Pris en charge",
    "EVENT_KIND_RELEASED": "Rendu au groupe",
    "EVENT_KIND_REASSIGNED": "Réattribué",
    "EVENT_KIND_REMINDED": "Relance",
    "EVENT_KIND_ESCALATED": "Escaladé au cadre",
    "EVENT_KIND_OVERDUE": "Échéance dépassée",
    "EVENT_KIND_VISA_GIVEN": "Visa de l'Ordre accordé",
    "EVENT_KIND_VISA_REFUSED": "Visa de l'Ordre refusé",
    "EVENT_KIND_APPROVED": "Approuvé",
    "EVENT_KIND_REJECTED": "Rejeté",
    "EVENT_KIND_CHANGES_REQUESTED": "Modifications demandées",
    "EVENT_KIND_RESUBMITTED": "Redéposé",
    "EVENT_KIND_SIGNED": "Signé",
    "EVENT_KIND_ACTIVATED": "Entré en vigueur",
    "EVENT_KIND_RENEWAL_REMINDER": "Rappel de renouvellement",
    "EVENT_KIND_CHANGE_PROPOSED": "Avenant ou renouvellement proposé",
    "EVENT_KIND_CHANGE_APPROVED": "Avenant ou renouvellement approuvé",
    "EVENT_KIND_CHANGE_REJECTED": "Avenant ou renouvellement rejeté",
    "EVENT_KIND_AMENDED": "Avenant signé",
    "EVENT_KIND_RENEWED": "Renouvelé",
    "EVENT_KIND_EXPIRED": "Expiré",
    "EVENT_KIND_TERMINATED": "Résilié",
    "EVENT_KIND_WITHDRAWN": "Retiré",
    "EVENT_KIND_ACKNOWLEDGED": "Accusé de réception donné",
    "EVENT_KIND_EFFECTIVE": "Devenu effectif",
    "EVENT_KIND_LAPSED": "Devenu caduc",
    "EVENT_KIND_CLAUSE_MARKED": "Clause examinée",
    "EVENT_KIND_OPINION_REQUESTED": "Avis demandé",
    "EVENT_KIND_OPINION_REMINDED": "Relance d'avis",
    "EVENT_KIND_OPINION_GIVEN": "Avis rendu",
    "EVENT_KIND_OPINION_REVOKED": "Demande d'avis retirée",
    "EVENT_KIND_MESSAGE_POSTED": "Message",
    "EVENT_KIND_COMMENT_ADDED": "Commentaire interne",
    "EVENT_KIND_DOCUMENT_ADDED": "Document ajouté",
    "EVENT_KIND_GRANTED": "Agrément accordé",
    "EVENT_KIND_GRANTED_BY_SILENCE": "Agrément accordé tacitement",
    "EVENT_KIND_REFUSED": "Refusé",
    "EVENT_KIND_VIEWED": "Consulté",
}

CLAUSES = {
    "CLAUSE_PROFESSIONAL_INDEPENDENCE": "Indépendance professionnelle du médecin",
    "CLAUSE_REMUNERATION": "Rémunération avec tact et mesure, sans compérage",
    "CLAUSE_QUALIFICATION": "Qualification du médecin pour l'offre",
    "CLAUSE_ROLL_REGISTRATION": "Inscription au tableau de l'Ordre",
    "CLAUSE_NO_CANVASSING": "Absence de démarchage et de publicité",
    "CLAUSE_HEALTH_DATA_PROTECTION": "Protection et hébergement (HDS) des données de santé",
    "CLAUSE_CIVIL_LIABILITY_INSURANCE": "Assurance en responsabilité civile professionnelle",
}
CLAUSE_STATUSES = {
    "CLAUSE_STATUS_UNREVIEWED": "Non examinée",
    "CLAUSE_STATUS_SATISFIED": "Satisfaite",
    "CLAUSE_STATUS_NOT_SATISFIED": "Non satisfaite",
    "CLAUSE_STATUS_NOT_APPLICABLE": "Sans objet",
}
VERDICTS = {
    "VERDICT_FAVOURABLE": "Favorable",
    "VERDICT_FAVOURABLE_WITH_RESERVATIONS": "Favorable avec réserves",
    "VERDICT_UNFAVOURABLE": "Défavorable",
}
DOCUMENT_TYPES = {
    "DOCUMENT_TYPE_CONTRACT": "Contrat",
    "DOCUMENT_TYPE_CONVENTION": "Convention",
    "DOCUMENT_TYPE_ANNEX": "Annexe",
    "DOCUMENT_TYPE_CERTIFICATE": "Certificat",
    "DOCUMENT_TYPE_INSURANCE": "Attestation d'assurance",
    "DOCUMENT_TYPE_AMENDMENT": "Avenant",
    "DOCUMENT_TYPE_DECISION": "Décision",
    "DOCUMENT_TYPE_OTHER": "Autre",
}
ROLES = {
    "ars_officer": "Agent instructeur de l'ARS",
    "ars_supervisor": "Cadre de l'ARS",
    "ars_signatory": "Signataire (directeur général ou délégataire)",
    "ordre_reviewer": "Rapporteur de l'Ordre des médecins",
    "ROLE_ARS_OFFICER": "agents instructeurs de l'ARS",
    "ROLE_ARS_SUPERVISOR": "cadres de l'ARS",
    "ROLE_ARS_SIGNATORY": "signataires de l'ARS",
    "ROLE_ORDRE_REVIEWER": "rapporteurs de l'Ordre",
    "ROLE_PROMOTER": "porteur du projet",
    "ROLE_PRACTITIONER": "médecin",
    "ROLE_HUB_OPERATOR": "opérateurs du hub",
}

# Medical specialties (parcours.type.v1.Specialty), as the activity reports name them.
SPECIALTIES = {
    "SPECIALTY_NONE": "Sans spécialité",
    "SPECIALTY_GENERAL_MEDICINE": "Médecine générale",
    "SPECIALTY_CARDIOLOGY": "Cardiologie",
    "SPECIALTY_DERMATOLOGY": "Dermatologie",
    "SPECIALTY_ENDOCRINOLOGY": "Endocrinologie",
    "SPECIALTY_GASTROENTEROLOGY": "Gastro-entérologie",
    "SPECIALTY_GERIATRICS": "Gériatrie",
    "SPECIALTY_GYNECOLOGY": "Gynécologie",
    "SPECIALTY_NEPHROLOGY": "Néphrologie",
    "SPECIALTY_NEUROLOGY": "Neurologie",
    "SPECIALTY_ONCOLOGY": "Oncologie",
    "SPECIALTY_OPHTHALMOLOGY": "Ophtalmologie",
    "SPECIALTY_PEDIATRICS": "Pédiatrie",
    "SPECIALTY_PSYCHIATRY": "Psychiatrie",
    "SPECIALTY_PULMONOLOGY": "Pneumologie",
    "SPECIALTY_RADIOLOGY": "Radiologie",
    "SPECIALTY_RHEUMATOLOGY": "Rhumatologie",
    "SPECIALTY_STOMATOLOGY": "Stomatologie",
    "SPECIALTY_ORAL_SURGERY": "Chirurgie orale",
    "SPECIALTY_DIABETOLOGY": "Diabétologie",
    "SPECIALTY_INFECTIOUS_DISEASES": "Maladies infectieuses",
    "SPECIALTY_NEUROPSYCHIATRY": "Neuropsychiatrie",
}

# The services' stable refusal reasons, in the words an officer reads.
REASONS = {
    "CASE_CLOSED": "Ce dossier est clos : plus aucune décision n'y est possible.",
    "STEP_NOT_OPEN": "Cette action ne correspond pas à l'étape en cours du dossier.",
    "VISA_REQUIRED": "Le visa de l'Ordre est requis avant cette décision.",
    "CLAUSES_NOT_SATISFIED": "Toutes les clauses applicables doivent être satisfaites pour accorder le visa.",
    "CASE_CLAIMED_BY_OTHER": "Une autre personne a pris ce dossier en charge.",
    "NOT_CLAIMED": "Personne ne détient cette étape.",
    "NO_OPEN_STEP": "Aucune étape n'est ouverte sur ce dossier.",
    "OPINION_ALREADY_GIVEN": "Cet avis a déjà été rendu et ne peut plus changer.",
    "OPINION_REVOKED": "Cette demande d'avis a été retirée.",
    "OPINION_ALREADY_REQUESTED": "Un avis est déjà demandé à cette personne.",
    "CHANGE_PENDING": "Un avenant ou un renouvellement est déjà en cours d'instruction.",
    "NO_PENDING_CHANGE": "Aucun avenant ni renouvellement n'est en cours.",
    "DECISION_DOCUMENT_REQUIRED": (
        "La signature porte sur la décision prévisualisée : prévisualisez-la d'abord."
    ),
    "CASE_NOT_VISIBLE": "Dossier introuvable.",
    "NOT_A_CANDIDATE": "Votre rôle ne vous permet pas d'agir à cette étape.",
    "NOT_PROMOTER": "Seul le porteur du dossier peut faire cela.",
    "NOT_OPINION_EXPERT": "Seule la personne sollicitée peut rendre cet avis.",
    "SUPERVISOR_REQUIRED": "Seul un cadre peut réattribuer le dossier d'une autre personne.",
    "ROLE_REQUIRED": "Votre rôle ne permet pas cette action.",
    "OPINION_NOT_FOUND": "Demande d'avis introuvable.",
    "CASE_CHANGED": "Le dossier a changé depuis que vous l'avez ouvert : rechargez-le et décidez à nouveau.",
    "MOTIVATION_REQUIRED": "La motivation est obligatoire.",
    "CHANGE_ITEMS_REQUIRED": "Indiquez au moins un élément à modifier.",
    "NOTE_REQUIRED": "Une note est obligatoire pour cette appréciation.",
    "PERIOD_INVALID": "La période indiquée n'est pas valable.",
    "DUE_TIME_INVALID": "L'échéance doit être dans le futur.",
    "REASSIGNEE_NOT_CANDIDATE": "Cette personne ne fait pas partie du groupe de l'étape.",
    "REQUEST_ID_REUSED": "Cette demande a déjà été envoyée pour une autre action.",
    "SERVICE_UNAVAILABLE": "Le service est momentanément indisponible ; réessayez dans un instant.",
    "SERVICE_NOT_CONFIGURED": "Ce service n'est pas raccordé à la console.",
    "TOKEN_EXPIRED": "Votre délégation a expiré ; rechargez la page.",
    "REPORT_SCOPE_NOT_VISIBLE": "Ces chiffres sortent de votre périmètre (votre région).",
}
FIELDS = {
    "motivation": "Motivation",
    "items": "Éléments à modifier",
    "note": "Note",
    "text": "Texte",
    "due_time": "Échéance",
    "assignee": "Attribué à",
    "effective_date": "Date d'effet",
    "start_date": "Début",
    "end_date": "Fin",
    "expert": "Personne sollicitée",
    "question": "Question",
    "title": "Titre",
    "content": "Fichier",
    "media_type": "Type de fichier",
}


def refusal(reason: str, code_name: str = "", violations: list[tuple[str, str]] | None = None) -> str:
    """The sentence an officer reads when a service refuses."""
    if violations:
        fields = ", ".join(dict.fromkeys(FIELDS.get(f.split(".")[-1], f) for f, _ in violations))
        base = REASONS.get(reason, "La demande est incomplète ou incorrecte.")
        return f"{base} Champ(s) à corriger : {fields}."
    if reason in REASONS:
        return REASONS[reason]
    if code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return REASONS["SERVICE_UNAVAILABLE"]
    if code_name == "PERMISSION_DENIED":
        return "Vous n'avez pas le droit de faire cela."
    return "Le service a refusé la demande." + (f" (motif : {reason})" if reason else "")


def label(table: dict[str, str], key: str) -> str:
    return table.get(key, key.replace("_", " ").lower())
