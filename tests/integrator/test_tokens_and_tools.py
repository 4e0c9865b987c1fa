"""The README's command lines, as an integrator types them: which certificate goes with which practitioner's
token, a demo token that the hub accepts, the kit's token tool that needs no service, and the audit check
next to a running `make run`."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.devstack.__main__ import Ports, Stack, _Signals
from services.directory.demo import DEMO_PATIENTS
from services.kit.tokens import TokenVerifier
from tests.integrator.conftest import Hub, grpcurl
from tests.support import AUDIENCE, AUDIT_KEYS, ISSUER, LOIRE, bearer, establishment_channel, repo_root


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd or repo_root(),
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def token_for(hub: Hub, rpps: str) -> str:
    """A demo practitioner's token, minted by the README's command."""
    minted = run(
        "-m", "services.devstack.tokens", "mint", "--pki-dir", str(hub.pki.directory), "--rpps", rpps
    )
    assert minted.returncode == 0, minted.stderr
    return minted.stdout.strip()


def test_the_kit_imports_no_service() -> None:
    """No import of a service, not even by name at run time (importlib), from any module of the kit."""
    found = []
    for path in sorted((repo_root() / "services" / "kit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]
            found += [
                f"{path.name}: {name}"
                for name in names
                if re.match(r"^(services\.(?!kit\b)[a-z_]+(\.|$)|workflows\.)", name)
            ]
    assert found == []


def test_demo_lists_each_practitioners_practice_places_and_certificates() -> None:
    ran = run("-m", "services.devstack.tokens", "demo", "--pki-dir", ".data/pki")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert ".data/pki/establishment-<FINESS>.pem" in lines[0]
    gp = lines.index("10000000101  Claire Martinon  PROFESSION_PHYSICIAN  SPECIALTY_GENERAL_MEDICINE")
    assert "practises at 420000025 CH des Monts du Forez, site de la Furane" in lines[gp + 1]
    assert lines[gp + 2].split()[-4:] == ["420000017", "420000025", "420000033", "070000014"]
    reunion = next(i for i, line in enumerate(lines) if line.startswith("10000001501 "))
    assert lines[reunion + 1].endswith("outside any GHT: calls through 974000013")


async def test_a_demo_token_with_its_establishment_certificate_reads_the_directory(hub: Hub) -> None:
    """The README's grpcurl line: a demo GP's token, called through an establishment of their GHT."""
    token = token_for(hub, "10000000101")
    claims = TokenVerifier(jwks_file=hub.pki.jwks_file, issuer=ISSUER, audience=AUDIENCE).verify(token)
    assert (claims.rpps, claims.profession, claims.specialty) == (
        "10000000101",
        "PROFESSION_PHYSICIAN",
        "SPECIALTY_GENERAL_MEDICINE",
    )

    def establishments(finess: str) -> subprocess.CompletedProcess[str]:
        pki = hub.pki
        return subprocess.run(
            [
                grpcurl(),
                "-cacert", str(pki.ca_file),
                "-cert", str(pki.establishment_cert_file(finess)),
                "-key", str(pki.establishment_key_file(finess)),
                "-H", f"authorization: Bearer {token}",
                "-d", '{"page_size": 5}',
                hub.directory,
                "parcours.directory.v1.DirectoryService/ListEstablishments",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    answered = await asyncio.to_thread(establishments, LOIRE)
    assert answered.returncode == 0, answered.stderr
    assert len(json.loads(answered.stdout)["establishments"]) == 5


def test_the_kit_mints_only_what_it_is_told() -> None:
    ran = run("-m", "services.kit.tokens", "mint", "--pki-dir", ".data/pki", "--rpps", "10000000101")
    assert ran.returncode == 2
    assert "--rpps needs --profession" in ran.stderr and "services.devstack.tokens mint" in ran.stderr


async def test_audit_verify_works_as_written_next_to_make_run(hub: Hub, tmp_path: Path) -> None:
    """`make run` writes .data/hub.json; `python -m services.kit.audit verify` from the repository's folder,
    with no flag and no PARCOURS_DATABASE_URL, checks that hub's chains."""
    # A patient read through the directory: an audited call, so the hub has a chain to verify.
    async with establishment_channel(hub.pki, hub.directory, LOIRE) as channel:
        await directory_pb2_grpc.DirectoryServiceStub(channel).GetPatient(
            directory_pb2.GetPatientRequest(name=f"patients/{DEMO_PATIENTS[0].patient_id}"),
            metadata=bearer(token_for(hub, "10000000101")),
        )
    data_dir = tmp_path / ".data"
    data_dir.mkdir()
    keys_file = data_dir / "audit-keys"
    keys_file.write_text(AUDIT_KEYS + "\n")
    stack = Stack(data_dir, Ports.from_env({}), _Signals())
    stack._write_hub_settings(
        {
            "PARCOURS_DATABASE_URL": hub.database_url,
            "PARCOURS_AUDIT_KEYS_FILE": str(keys_file),
            "PARCOURS_TEMPORAL_ADDRESS": "127.0.0.1:7233",
            **{f"PARCOURS_{s.upper()}_ADDRESS": f"127.0.0.1:{p}" for s, p in stack.ports.grpc.items()},
        }
    )
    ran = await asyncio.to_thread(run, "-m", "services.kit.audit", "verify", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "chain directory: " in ran.stdout and "intact" in ran.stdout and "BROKEN" not in ran.stdout

    elsewhere = await asyncio.to_thread(run, "-m", "services.kit.audit", "verify", cwd=tmp_path / ".data")
    assert elsewhere.returncode == 2 and "--database-url" in elsewhere.stderr
