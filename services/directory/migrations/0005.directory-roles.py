"""The directory's role, parcours_directory, reads and writes the directory schema and nothing else
(services/kit/roles.py); the ARS regions are reference data the migrations load: read only."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0004.directory-nir-domain-status"}

steps = [step(grants_sql("directory", read_only=["regions"]))]
