"""The real PostgreSQL and Temporal the dev stack and the suite run on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from services.devstack import free_port
from services.devstack.postgres import start_postgres
from services.devstack.temporal import start_temporal
from services.kit import search_attributes


async def query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_postgres_keeps_its_data_between_starts(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    port = free_port()

    first = await asyncio.to_thread(start_postgres, data, port=port, fast=True)
    try:
        assert first.display_url == f"postgresql://postgres@127.0.0.1:{port}/parcours"
        assert await query(first.url, "SELECT 1") == 1
        await query(first.url, "CREATE TABLE kept AS SELECT 42 AS answer")
    finally:
        await asyncio.to_thread(first.stop)
    assert not first.is_running()

    second = await asyncio.to_thread(start_postgres, data, port=free_port(), fast=True)
    try:
        assert await query(second.url, "SELECT answer FROM kept") == 42
    finally:
        await asyncio.to_thread(second.stop)


async def test_postgres_trusts_no_connection(tmp_path: Path) -> None:
    """Every connection gives a password, on TCP and on the local socket (issue 9.6)."""
    handle = await asyncio.to_thread(start_postgres, tmp_path / "pg", port=free_port(), fast=True)
    try:
        for url in (
            handle.display_url,
            f"postgresql://postgres@/parcours?host={handle.socket_dir}&port={handle.port}",
            f"postgresql://postgres:wrong@127.0.0.1:{handle.port}/parcours",
        ):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await query(url, "SELECT 1")
        assert await query(handle.url, "SELECT current_user") == "postgres"
        assert (tmp_path / "pg.superuser-password").stat().st_mode & 0o777 == 0o600
    finally:
        await asyncio.to_thread(handle.stop)


async def test_a_cluster_that_trusted_local_connections_stops_trusting_them(tmp_path: Path) -> None:
    """A data folder made before passwords were required (trust, a superuser without password) requires
    one from its next start on; its data stays."""
    data = tmp_path / "pg"
    handle = await asyncio.to_thread(start_postgres, data, port=free_port(), fast=True)
    await query(handle.url, "CREATE TABLE kept AS SELECT 42 AS answer")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    await query(handle.url, "SELECT pg_reload_conf()")
    await query(handle.display_url, "ALTER ROLE postgres PASSWORD NULL")
    await asyncio.to_thread(handle.stop)

    again = await asyncio.to_thread(start_postgres, data, port=free_port(), fast=True)
    try:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await query(again.display_url, "SELECT 1")
        assert await query(again.url, "SELECT answer FROM kept") == 42
    finally:
        await asyncio.to_thread(again.stop)


async def test_postgres_starts_after_a_killed_run(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    first = await asyncio.to_thread(start_postgres, data, port=free_port(), fast=True)
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    assert (data / "postmaster.pid").exists()  # what a killed server leaves behind

    second = await asyncio.to_thread(start_postgres, data, port=free_port(), fast=True)
    try:
        assert await query(second.url, "SELECT 1") == 1
    finally:
        await asyncio.to_thread(second.stop)
        first.stop()  # nothing left to stop: must not fail


async def test_temporal_headless_with_parcours_search_attributes() -> None:
    handle = await asyncio.to_thread(start_temporal, None, port=free_port(), ui_port=None, headless=True)
    try:
        assert handle.ui_url is None
        client = await Client.connect(handle.address)
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        registered = dict(response.custom_attributes)
        for key in search_attributes.ALL:
            assert registered[key.name] == IndexedValueType.Value(
                f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}"
            )
    finally:
        await asyncio.to_thread(handle.stop)
    assert not handle.is_running()


async def test_temporal_failure_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited") as failure:
            await asyncio.to_thread(start_temporal, tmp_path, port=port, ui_port=None, headless=True)
    assert str(port) in str(failure.value)  # the log's end names the port it could not bind
