"""The development SMTP sink: a real SMTP server (pip `aiosmtpd`) that keeps every message it receives in a
Maildir for inspection, instead of relaying it. `make run` starts it (`python -m services.devstack.mailsink`)
and points the workers' SMTP transport at it; the tests start one in-process (`MailSink`).

Read what was sent with any Maildir reader, e.g. `python -m services.devstack.mailsink --list`.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import logging
import mailbox
import os
import signal
import threading
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from services.devstack import free_port

logger = logging.getLogger(__name__)

DEFAULT_PORT = 2525


class MailSink:
    """An SMTP server on `host:port` (0: a free one) writing each message into the Maildir `folder`."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = folder
        # A Maildir: its cur/new/tmp folders made now (Maildir makes them only for a folder not there yet).
        mailbox.Maildir(str(folder), create=True)
        # aiosmtpd's controller checks its server by connecting to the port it was given: never 0.
        self._controller = Controller(Mailbox(folder), hostname=host, port=port or free_port())

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[EmailMessage]:
        """Every message received, in arrival order (Maildir keys start with the delivery time)."""
        box = mailbox.Maildir(str(self.folder), factory=None, create=False)
        found: list[EmailMessage] = []
        for key in sorted(box.keys()):
            message = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            found.append(message)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description="The development SMTP sink (messages kept in a Maildir).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PARCOURS_SMTP_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--maildir", type=Path, default=Path(os.environ.get("PARCOURS_MAIL_SINK_DIR", ".data/mail"))
    )
    parser.add_argument("--list", action="store_true", help="print the messages kept and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.list:
        for message in MailSink(args.maildir).messages():
            print(f"{message['Date']}  {message['To']}  {message['Subject']}")
        return
    sink = MailSink(args.maildir, args.host, args.port).start()
    logger.info("SMTP sink on %s:%d, messages kept in %s", args.host, sink.port, args.maildir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
