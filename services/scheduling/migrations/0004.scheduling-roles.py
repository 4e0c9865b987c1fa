"""The scheduling role, parcours_scheduling, reads and writes the scheduling schema and nothing else
(services/kit/roles.py); the Teleconsultation worker connects as it too."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0003.scheduling-distinct-rules"}

steps = [step(grants_sql("scheduling"))]
