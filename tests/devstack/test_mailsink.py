"""The SMTP sink `make run` starts: a real process (`python -m services.devstack.mailsink`) that keeps what
the workers' SMTP transport sends in a Maildir, readable with `--list`."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from services.devstack import free_port
from services.devstack.mailsink import MailSink
from services.kit.notify import Notice, NotifySettings, SmtpTransport
from tests.support import repo_root


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_the_sink_keeps_what_the_smtp_transport_sends(tmp_path: Path) -> None:
    port, maildir = free_port(), tmp_path / "mail"
    env = {**os.environ, "PARCOURS_SMTP_PORT": str(port), "PARCOURS_MAIL_SINK_DIR": str(maildir)}
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.devstack.mailsink", env=env, cwd=repo_root(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(400):  # the process imports aiosmtpd, then listens: bounded polling of its port
            if await _accepts(port):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the sink never listened")
        notice = Notice(
            key="appointments/x|KIND_REMINDER|P1D|patients/y",
            case="appointments/x",
            event_type="parcours.teleconsultation.reminder",
            kind="KIND_REMINDER",
            label="P1D",
            recipient="patients/y",
            subject="Rappel : téléconsultation",
            text="Bonjour,\n",
            occur_time=datetime.now(UTC),
        )
        smtp = SmtpTransport(NotifySettings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none"))
        await smtp.send("patient@example.invalid", notice)
        [kept] = MailSink(maildir).messages()
        assert (kept["To"], kept["Subject"]) == ("patient@example.invalid", "Rappel : téléconsultation")
        listed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.devstack.mailsink", "--list", "--maildir", str(maildir),
            cwd=repo_root(), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await listed.communicate()
        assert "patient@example.invalid  Rappel : téléconsultation" in out.decode()
    finally:
        sink.terminate()
        assert await sink.wait() == 0
