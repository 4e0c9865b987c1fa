"""Reading the traces the hub exported: one trace per action, its tree, what its spans say."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.observability.conftest import Telemetry, attributes_of

SERVER = Span.SpanKind.SPAN_KIND_SERVER
CLIENT = Span.SpanKind.SPAN_KIND_CLIENT


@dataclass
class Trace:
    """The spans of one trace (as they have arrived), rooted at the server span of the RPC that began it."""

    root: Span
    telemetry: Telemetry

    @property
    def spans(self) -> list[Span]:
        return self.telemetry.trace(self.root.trace_id)

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> Span:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans {name} in the trace of {self.root.name}"
        return found[0]

    def parent(self, span: Span) -> Span | None:
        for candidate in self.spans:
            if candidate.span_id == span.parent_span_id:
                return candidate
        return None

    def ancestors(self, span: Span) -> list[str]:
        names: list[str] = []
        current = self.parent(span)
        while current is not None:
            names.append(current.name)
            current = self.parent(current)
        return names

    def below(self, ancestor: str) -> list[Span]:
        """The spans with a span named `ancestor` above them."""
        return [s for s in self.spans if ancestor in self.ancestors(s)]

    def sql_below(self, ancestor: str) -> list[Span]:
        return [s for s in self.below(ancestor) if attributes_of(s.attributes).get("db.system.name")]


def names(spans: Iterable[Span]) -> set[str]:
    return {s.name for s in spans}


async def action_trace(telemetry: Telemetry, rpc: str, case: str, expected: Sequence[str]) -> Trace:
    """The trace begun by a call of the RPC `rpc` on the case whose workflow is `case`, once every span
    named in `expected` has arrived in it (and every span of it has its parent).

    The case is told by the Temporal spans of the trace (`temporalWorkflowID`), not by the order calls
    arrived in: the package's tests share one hub, and an earlier test's spans may arrive late."""

    def root() -> Span | None:
        for call in (s for s in telemetry.named(rpc) if s.kind == SERVER):
            if any(
                attributes_of(s.attributes).get("temporalWorkflowID") == case
                for s in telemetry.trace(call.trace_id)
            ):
                return call
        return None

    def complete() -> bool:
        found = root()
        if found is None:
            return False
        spans = telemetry.trace(found.trace_id)
        ids = {s.span_id for s in spans}
        orphans = [s for s in spans if s.parent_span_id and s.parent_span_id not in ids]
        return set(expected) <= names(spans) and not orphans

    try:
        await telemetry.until(complete)
    except TimeoutError:
        found = root()
        here = names(telemetry.trace(found.trace_id)) if found is not None else set()
        elsewhere = {
            name: sorted({s.trace_id.hex()[:8] for s in telemetry.named(name)})
            for name in set(expected) - here
        }
        raise AssertionError(
            f"the trace of {rpc} lacks {sorted(set(expected) - here)} (it has {sorted(here)}); "
            f"those spans are in traces {elsewhere}"
        ) from None
    found = root()
    assert found is not None
    assert not found.parent_span_id, f"{rpc} is the edge: its span has no parent"
    return Trace(found, telemetry)


async def holds(telemetry: Telemetry, check: Callable[[], None], within: float = 30.0) -> None:
    """Wait until `check` passes on what has arrived (spans of one process may arrive after another's);
    its last failure if it never does."""
    failure: list[AssertionError] = []

    def passes() -> bool:
        try:
            check()
        except AssertionError as error:
            failure[:] = [error]
            return False
        return True

    try:
        await telemetry.until(passes, within)
    except TimeoutError:
        raise failure[0] from None
