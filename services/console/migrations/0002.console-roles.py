"""The console's role, parcours_console, reads and writes the console schema and nothing else
(services/kit/roles.py)."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0001.console-schema"}

steps = [step(grants_sql("console"))]
