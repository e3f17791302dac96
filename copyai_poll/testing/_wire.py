"""How the fake's runs, webhooks and errors look on the wire (pure functions)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ._quirks import Quirks
from ._scripts import Phase


@attrs.frozen(kw_only=True)
class Webhook:
    """A registered webhook."""

    id: str
    url: str
    event_type: str
    workflow_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        """Return the webhook as the API shows it."""
        return {
            "id": self.id,
            "url": self.url,
            "eventType": self.event_type,
            "workflowId": self.workflow_id,
        }


class ApiFailure(Exception):
    """An error answer the fake gives: ``{"status": "error", "errorCode": ...}``.

    Args:
        status: The HTTP status.
        code: The ``errorCode``.
        details: Sent as ``details`` (422 answers) when not None.
    """

    def __init__(self, status: int, code: str, details: Sequence[Any] | None = None) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        """Return the error envelope."""
        return error_body(self.code, self.details)


def success(data: Any) -> dict[str, Any]:
    """Wrap ``data`` in the success envelope."""
    return {"status": "success", "data": data}


def error_body(code: str, details: Sequence[Any] | None = None) -> dict[str, Any]:
    """Return an error envelope, with ``details`` when given."""
    body: dict[str, Any] = {"status": "error", "errorCode": code}
    if details is not None:
        body["details"] = list(details)
    return body


def validation_error(path: str, message: str) -> ApiFailure:
    """Return the 422 failure for one invalid field."""
    return ApiFailure(422, "VALIDATION_ERROR", [{"path": [path], "message": message}])


def iso_time(moment: datetime, *, milliseconds: bool = True) -> str:
    """Format a UTC time the way Copy.ai does: ``2023-04-06T22:34:46.704Z``."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if milliseconds:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


@attrs.frozen(kw_only=True)
class RunFacts:
    """The fixed facts of a run, set when it started."""

    id: str
    workflow_id: str
    input: Mapping[str, Any]
    metadata: Mapping[str, Any] | None
    created_at: datetime
    credits: int


def run_object(facts: RunFacts, phase: Phase, quirks: Quirks) -> dict[str, Any]:
    """Return the run object a GET shows, with the quirks applied.

    Args:
        facts: What was fixed when the run started.
        phase: Its status, output and error now.
        quirks: Which odd shapes to use.

    Returns:
        The ``data`` of a get-run answer.
    """
    obj: dict[str, Any] = {
        "status": phase.status,
        "input": dict(facts.input),
        "output": _output(phase.output, quirks),
    }
    if quirks.metadata != "missing":
        obj["metadata"] = None if quirks.metadata == "null" else dict(facts.metadata or {})
    obj["createdAt"] = iso_time(facts.created_at, milliseconds=quirks.created_at_ms)
    if quirks.ids != "workflowRunId":
        obj["id"] = facts.id
    if quirks.ids != "id":
        obj["workflowRunId"] = facts.id
    obj["workflowId"] = facts.workflow_id
    obj["credits"] = str(facts.credits) if quirks.credits_as_string else facts.credits
    if phase.status == "FAILED":
        obj["error"] = phase.error
    return obj


def _output(output: Mapping[str, Any], quirks: Quirks) -> Any:
    if quirks.output_format == "json_text":
        return json.dumps(dict(output))
    if quirks.output_format == "json_values":
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in output.items()}
    return dict(output)
