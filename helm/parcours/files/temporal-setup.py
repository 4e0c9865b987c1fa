"""Create Parcours' Temporal namespace and register its search attributes; idempotent, safe to re-run.

Run by the chart's pre-install/pre-upgrade hook Job in the Parcours image, so the attributes are the kit's own
list (services.kit.search_attributes.ALL), never a copy. A namespace that exists is left as it is; attributes
already registered with the right type are skipped; one registered with another type stops the Job with its
name (changing a type is an operator's decision, not an upgrade's). Managed Temporal offers that refuse these
calls: disable the steps (temporal.setup.*) and register through the provider.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from services.kit.search_attributes import ALL

log = logging.getLogger("temporal-setup")

# A namespace just registered takes a moment to reach every frontend's cache.
NAMESPACE_VISIBLE_TIMEOUT = timedelta(seconds=60)


async def ensure_namespace(client: Client, namespace: str, retention: timedelta) -> bool:
    """Register `namespace` unless it exists; True when this run created it."""
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
        return False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace,
                workflow_execution_retention_period=Duration(seconds=int(retention.total_seconds())),
                description="Parcours telemedicine cases",
            )
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:  # another run got there first
            raise
        return False
    return True


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the kit's attributes missing from `namespace`; returns the names added."""
    listed = await _list_attributes(client, namespace)
    missing: dict[str, IndexedValueType.ValueType] = {}
    for key in ALL:
        wanted = IndexedValueType.ValueType(int(key.indexed_value_type))
        have = listed.get(key.name)
        if have is None:
            missing[key.name] = wanted
        elif have != wanted:
            raise SystemExit(
                f"search attribute {key.name} is registered as {IndexedValueType.Name(have)}, "
                f"Parcours needs {IndexedValueType.Name(wanted)}: fix it by hand"
            )
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


async def _list_attributes(client: Client, namespace: str) -> dict[str, IndexedValueType.ValueType]:
    deadline = asyncio.get_running_loop().time() + NAMESPACE_VISIBLE_TIMEOUT.total_seconds()
    delay = 0.2
    while True:
        try:
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            return dict(response.custom_attributes)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def setup(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address, namespace=args.namespace)
    if args.register_namespace:
        created = await ensure_namespace(client, args.namespace, timedelta(days=args.retention_days))
        log.info("namespace %s %s", args.namespace, "created" if created else "already exists")
    if args.register_search_attributes:
        added = await ensure_search_attributes(client, args.namespace)
        log.info(
            "search attributes of %s: %s",
            args.namespace,
            f"registered {', '.join(added)}" if added else "all present",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("PARCOURS_TEMPORAL_ADDRESS"))
    parser.add_argument("--namespace", default=os.environ.get("PARCOURS_TEMPORAL_NAMESPACE", "default"))
    parser.add_argument("--register-namespace", action="store_true")
    parser.add_argument("--retention-days", type=int, default=30)
    parser.add_argument("--register-search-attributes", action="store_true")
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("missing PARCOURS_TEMPORAL_ADDRESS (or --address)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    asyncio.run(setup(args))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(f"temporal-setup: {stop.code}", file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else 1
    except Exception:
        traceback.print_exc()
        code = 1
    # A short-lived process that used temporalio can abort while the interpreter finalises
    # (temporalio/sdk-python#300: SIGABRT after the work is done), which would fail the hook Job: leave without
    # finalising once the output is flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
