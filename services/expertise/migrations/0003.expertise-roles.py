"""The expertise role, parcours_expertise, reads and writes the expertise schema and nothing else
(services/kit/roles.py); the Teleexpertise worker connects as it too."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0002.expertise-case-kit"}

steps = [step(grants_sql("expertise"))]
