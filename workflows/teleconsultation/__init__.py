"""The `Teleconsultation` workflow: one per booked appointment, id `teleconsultation-<appointment id>`.

Reminders before the start, the join window, no-show after a grace, completion with the R.6316-4 record
items (a Temporal Update), the act recorded with billing and the report addressed to the médecin traitant and
the requester; a cancellation (a signal from the scheduling service's outbox) ends it. Its payloads, names and
refusal reasons are the scheduling service's (`services/scheduling/models.py`); this package depends on the
service, never the reverse.
"""
