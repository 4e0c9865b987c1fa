"""Small things an integrator trips on: what the protos say about page sizes is what the servers do, and
`make help` gives the Web UI's real port."""

from __future__ import annotations

import os
import subprocess
from importlib import resources

import grpc
import pytest
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2  # noqa: F401 (registers its messages in the pool)
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2

from services.devstack.__main__ import PORT_DEFAULTS
from services.kit import pagination
from tests.integrator.conftest import Hub
from tests.integrator.test_fhir_exports import token
from tests.support import LOIRE, establishment_channel, repo_root

# Every API's messages in the default pool, where their validation rules are read.
API = (billing_pb2, directory_pb2, expertise_pb2, scheduling_pb2)


def page_size_fields() -> list[tuple[str, str]]:
    """(request message, leading comment of its page_size) of every List-like request of our API."""
    image = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("parcours").joinpath("image.binpb").read_bytes()
    )
    found = []
    for file in image.file:
        if not file.name.startswith("parcours/"):
            continue
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for m, message in enumerate(file.message_type):
            for f, field in enumerate(message.field):
                if field.name == "page_size":
                    found.append((f"{file.package}.{message.name}", comments.get((4, m, 2, f), "")))
    return found


def test_every_page_size_says_and_checks_what_the_kit_does() -> None:
    fields = page_size_fields()
    assert len(fields) >= 17
    for message, comment in fields:
        field = descriptor_pool.Default().FindMessageTypeByName(message).fields_by_name["page_size"]
        rules = field.GetOptions().Extensions[validate_pb2.field].int32
        assert (rules.gte, rules.lte) == (0, pagination.PAGE_SIZE_LIMIT), message
        said = " ".join(comment.split())
        assert f"0 means the default, {pagination.DEFAULT_PAGE_SIZE}" in said, message
        assert f"at most {pagination.MAX_PAGE_SIZE} items are returned" in said, message
        assert f"above {pagination.PAGE_SIZE_LIMIT} is refused (INVALID_ARGUMENT)" in said, message
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(pagination.PAGE_SIZE_LIMIT) == pagination.MAX_PAGE_SIZE


async def test_a_page_size_above_the_limit_is_refused_naming_the_field(hub: Hub) -> None:
    async with establishment_channel(hub.pki, hub.directory, LOIRE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        metadata = token(hub, "staff:reader")
        largest = await stub.ListRegions(
            directory_pb2.ListRegionsRequest(page_size=pagination.PAGE_SIZE_LIMIT), metadata=metadata
        )
        assert len(largest.regions) == 18
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListRegions(
                directory_pb2.ListRegionsRequest(page_size=pagination.PAGE_SIZE_LIMIT + 1), metadata=metadata
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("env", "port"),
    [({}, PORT_DEFAULTS["PARCOURS_TEMPORAL_UI_PORT"]), ({"PARCOURS_TEMPORAL_UI_PORT": "18233"}, 18233)],
)
def test_make_help_names_the_web_ui_port_make_run_uses(env: dict[str, str], port: int) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "MAKE"))}
    ran = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=repo_root(),
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    run_line = next(line for line in ran.stdout.splitlines() if line.startswith("make run"))
    assert f"Web UI :{port}," in run_line
