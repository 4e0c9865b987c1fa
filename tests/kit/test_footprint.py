"""What a service process loads before it has any work (issue 15's idle RSS ≤ 120 MB per service process): the
libraries only some requests need — PDF rendering and signing, spreadsheets, the reflection index — are
loaded by the first request that needs them, and the services that only call workflows never load Temporal's
worker side. `python -m tests.bench.rss` measures the figures."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from services.devstack import free_port
from services.devstack.temporal import TemporalHandle
from services.kit.reflection import enable_reflection
from services.kit.settings import TemporalSettings
from services.kit.temporal import OnDemandClient
from tests.support import PAYLOAD_KEYS
from tests.support.footprint import ON_FIRST_USE, probe, which_loaded

# Temporal's worker (its sandbox, its contrib tracing interceptor): only worker processes need it.
WORKER_SIDE = ("temporalio.worker", "temporalio.contrib.opentelemetry", "services.kit.case_tracing")
# Services that start workflows and send them Updates, without running any.
CLIENT_ONLY = ("scheduling", "expertise", "contracts", "console")


def loaded(module: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has loaded once it imported `module`."""
    found: list[str] = probe(
        f"import json, sys; import {module}; print(json.dumps({which_loaded(candidates)}))"
    )
    return found


@pytest.mark.parametrize("server", ["services.contracts.server", "services.console.server"])
def test_a_service_starts_without_the_libraries_of_its_rare_requests(server: str) -> None:
    assert loaded(server, ON_FIRST_USE) == []


@pytest.mark.parametrize("service", CLIENT_ONLY)
def test_a_service_that_only_calls_workflows_never_loads_temporals_worker(service: str) -> None:
    # What `python -m services.<name>` imports before it serves.
    assert loaded(f"services.{service}.__main__", WORKER_SIDE) == []


def test_the_worker_side_is_what_building_a_worker_loads() -> None:
    # The other side of the previous test: what `build_worker` imports is what the probe looks for.
    assert loaded("services.kit.case_tracing", WORKER_SIDE) == sorted(WORKER_SIDE)


async def test_the_reflection_index_is_built_by_the_first_reflection_request() -> None:
    server = grpc.aio.server()
    servicer = enable_reflection(server, ["grpc.health.v1.Health"])
    assert "index" not in vars(servicer)

    answer = servicer.answer(reflection_pb2.ServerReflectionRequest(list_services=""))

    assert "grpc.health.v1.Health" in [s.name for s in answer.list_services_response.service]
    assert "index" in vars(servicer)


async def test_reflection_still_refuses_at_start_a_service_it_cannot_describe() -> None:
    with pytest.raises(ValueError, match=r"parcours\.nowhere\.v1\.NoService"):
        enable_reflection(grpc.aio.server(), ["parcours.nowhere.v1.NoService"])


async def test_an_on_demand_client_connects_at_its_first_call_and_keeps_its_connection(
    temporal: TemporalHandle,
) -> None:
    client = OnDemandClient(TemporalSettings(temporal_address=temporal.address, payload_keys=PAYLOAD_KEYS))

    connected = await client()

    assert connected is not None
    assert (await connected.count_workflows("WorkflowType = 'NoSuchWorkflow'")).count == 0
    assert await client() is connected


async def test_an_on_demand_client_answers_none_while_temporal_is_unreachable() -> None:
    nowhere = OnDemandClient(
        TemporalSettings(temporal_address=f"127.0.0.1:{free_port()}", payload_keys=PAYLOAD_KEYS), timeout=5
    )

    assert await nowhere() is None
