"""Runs and status changes: the domain values, and how a run object becomes one.

Everything here takes the quirks seen in the wild calmly (credits as strings, metadata
null or missing, only ``id`` or only ``workflowRunId``, an undocumented status, ...): the
result is a `WorkflowRun` or a `ResponseFormatError`, never any other exception.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import ResponseFormatError

logger = logging.getLogger("copyai_poll")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class RunStatus(enum.StrEnum):
    """The status of a workflow run, as Copy.ai documents it.

    Members are strings too: ``RunStatus.COMPLETE == "COMPLETE"``.
    """

    NEW = "NEW"
    WAITING = "WAITING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    RETRYING = "RETRYING"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETE and FAILED: the run will not change again."""
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETE, RunStatus.FAILED})
_BY_VALUE: Mapping[str, RunStatus] = {s.value: s for s in RunStatus}


@attrs.frozen(kw_only=True, repr=False)
class WorkflowRun:
    """One workflow run, as the API last described it.

    ``status`` is None when the server sent a status nobody documented (its text is in
    ``raw_status``) or none at all; such a run counts as still in progress.
    ``raw`` is the untouched ``data`` object the run was built from.
    """

    id: str
    workflow_id: str | None = None
    status: RunStatus | None = None
    raw_status: str = ""
    input: Mapping[str, Any] = _EMPTY
    output: Mapping[str, Any] = _EMPTY
    metadata: Mapping[str, Any] = _EMPTY
    created_at: datetime | None = None
    credits: int | None = None
    error: Any = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False, eq=False)

    def __reduce__(self) -> Any:
        # Mapping proxies do not pickle; ship plain dicts and wrap them again on load.
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(WorkflowRun)}
        for name in _MAPPING_FIELDS:
            fields[name] = dict(fields[name])
        return (_rebuild_run, (fields,))

    def __repr__(self) -> str:
        status = self.status.value if self.status else f"unknown {self.raw_status!r}"
        workflow = f" workflow_id={self.workflow_id!r}" if self.workflow_id else ""
        return f"<WorkflowRun id={self.id!r}{workflow} status={status}>"

    @property
    def is_terminal(self) -> bool:
        """True once the run is COMPLETE or FAILED."""
        return self.status is not None and self.status.is_terminal

    @classmethod
    def from_api(
        cls,
        data: Any,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
    ) -> WorkflowRun:
        """Build a run from the ``data`` object of a Copy.ai response.

        Args:
            data: The decoded ``data`` object.
            workflow_id: Used when the payload does not name its workflow.
            run_id: Used when the payload carries neither ``id`` nor ``workflowRunId``.

        Raises:
            ResponseFormatError: ``data`` is not a run object.
        """
        if not isinstance(data, Mapping):
            raise ResponseFormatError(f"expected a run object, got {describe(data)}")
        return run_from_owned(dict(data), workflow_id=workflow_id, run_id=run_id, copy=True)


_MAPPING_FIELDS = ("input", "output", "metadata", "raw")


def run_from_owned(
    data: dict[str, Any],
    *,
    workflow_id: str | None = None,
    run_id: str | None = None,
    copy: bool = False,
) -> WorkflowRun:
    """`WorkflowRun.from_api` for a ``data`` dict that nobody else holds.

    The client has just decoded it, so its objects are wrapped read-only rather than
    copied, unless ``copy``.
    """
    status, raw_status = _parse_status(data.get("status"))
    run = WorkflowRun(
        id=_parse_id(data, run_id),
        workflow_id=opaque_id(data.get("workflowId")) or workflow_id,
        status=status,
        raw_status=raw_status,
        input=_parse_mapping(data.get("input"), copy),
        output=_parse_mapping(data.get("output"), copy),
        metadata=_parse_mapping(data.get("metadata"), copy),
        created_at=_parse_datetime(data.get("createdAt")),
        credits=parse_int(data.get("credits")),
        error=data.get("error"),
        raw=MappingProxyType(data),
    )
    note_unknown_status(run)
    return run


def _rebuild_run(fields: dict[str, Any]) -> WorkflowRun:
    wrapped: dict[str, Any] = dict(fields)
    for name in _MAPPING_FIELDS:
        wrapped[name] = MappingProxyType(dict(fields[name]))
    return WorkflowRun(**wrapped)


@attrs.frozen(kw_only=True, repr=False)
class StatusChange:
    """One observed change of a run's status, handed to ``on_status_change``.

    ``previous`` is None on the first observation; ``elapsed`` counts seconds since
    polling began; ``polls`` counts the ``get_run`` calls this poll has made so far.
    """

    run: WorkflowRun
    previous: RunStatus | None
    current: RunStatus
    elapsed: float
    polls: int

    def __repr__(self) -> str:
        previous = self.previous.value if self.previous else "start"
        return (
            f"<StatusChange run={self.run.id!r} {previous} -> {self.current.value}"
            f" elapsed={self.elapsed:.2f}s polls={self.polls}>"
        )


# What the process keeps to warn once per undocumented status: a bounded set of digests,
# never the texts, so a hostile server inventing huge statuses cannot grow memory.
_MAX_WARNED = 1024
_warned: set[bytes] = set()
_warned_lock = threading.Lock()


def note_unknown_status(run: WorkflowRun) -> None:
    """Log an undocumented status at WARNING, once per distinct text per process."""
    sent = bool(run.raw_status) or isinstance(run.raw.get("status"), str)  # "" is one too
    if run.status is not None or not sent:
        return
    digest = hashlib.blake2b(run.raw_status.encode("utf-8", "replace"), digest_size=16).digest()
    with _warned_lock:
        if digest in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(digest)
    logger.warning(
        "run %s reported an undocumented status %r; treating it as still in progress",
        run.id,
        run.raw_status[:200],
        extra={"run_id": run.id, "workflow_id": run.workflow_id},
    )


def _parse_status(value: Any) -> tuple[RunStatus | None, str]:
    if value is None:
        return None, ""
    if not isinstance(value, str):
        raise ResponseFormatError(f"run status must be a string, got {describe(value)}")
    return _BY_VALUE.get(value), value


def _parse_id(data: Mapping[str, Any], fallback: str | None) -> str:
    run_id = opaque_id(data.get("id")) or opaque_id(data.get("workflowRunId")) or fallback
    if not run_id:
        raise ResponseFormatError("run object has neither 'id' nor 'workflowRunId'")
    return run_id


def opaque_id(value: Any) -> str | None:
    """An id as the opaque string it is, or None for anything that cannot be one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # over the int-to-str digit limit: no id anyone could use
            return None
    return None


def _parse_mapping(value: Any, copy: bool = True) -> Mapping[str, Any]:
    """An object stays one; JSON text of an object is decoded; anything else is empty.

    Nothing is lost: the untouched value stays in ``WorkflowRun.raw``.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return _EMPTY
        copy = False  # decoded here: nobody else holds it
    if isinstance(value, dict) and not copy:
        return MappingProxyType(value)
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    return _EMPTY


def parse_int(value: Any) -> int | None:
    """A count sent as a number or as text (``"9001"``), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if math.isfinite(number) else None
    return None


def _parse_datetime(value: Any) -> datetime | None:
    """ISO 8601 with or without milliseconds, or epoch seconds/milliseconds; naive is UTC."""
    try:
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if abs(value) > 1e11 else value
            parsed = datetime.fromtimestamp(seconds, tz=UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def describe(value: Any) -> str:
    """A short description of an unexpected value, for error messages."""
    if isinstance(value, Mapping):
        return "an object without the expected fields"
    return f"{type(value).__name__} {excerpt(repr(value))}"


def excerpt(body: bytes | str, limit: int = 120) -> str:
    """The start of a body or text, quoted, for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
