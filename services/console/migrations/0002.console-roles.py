"""The console's role, parcours_console, reads and writes the console schema and nothing else
(services/kit/roles.py).

It lands before the console does (main has it; this branch not yet): a folder without any SQL migration is not
a migration set (services/kit/migrate.py), so this one waits for 0001.console-schema.
"""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0001.console-schema"}

steps = [step(grants_sql("console"))]
