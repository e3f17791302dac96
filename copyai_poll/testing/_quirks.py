"""Quirks: the odd but real shapes of Copy.ai answers, on demand."""

from __future__ import annotations

from typing import Literal

import attrs


def _share(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Quirks:
    """Which of the quirks seen in the wild a run's answers show.

    The defaults are the documented shape.

    Attributes:
        credits_as_string: ``"credits": "9001"`` instead of a number.
        total_as_string: ``"total": "3"`` in pages of runs.
        metadata: ``"object"`` (the default), ``"null"`` or ``"missing"``.
        ids: ``"both"`` (``id`` and ``workflowRunId``), ``"id"`` or ``"workflowRunId"``.
        created_at_ms: False drops the milliseconds from ``createdAt``.
        output_format: ``"object"``; ``"json_values"`` turns each non-string output value
            into JSON text; ``"json_text"`` sends the whole ``output`` as JSON text.
        not_found_for: Seconds after the start during which the run answers 404.
        list_order: The order of pages of runs: ``"oldest_first"`` (the default),
            ``"newest_first"`` (what one public example hints at) or ``"shuffled"``
            (a new order on every request).
        list_missing_status: The share (0 to 1) of listed runs shown without ``status``.
        list_lag: Seconds the list is behind GET: a listed run shows the status it had
            that long ago.
        list_drop: The share (0 to 1) of runs left out of each page (``total`` still
            counts them).
        foreign_runs_per_second: Runs of this workflow started by "other clients" at a
            steady rate from when the quirks were set; they fill the pages like any run.

    The ``list_*`` and ``foreign_runs_per_second`` quirks act where a workflow's quirks
    are read: set them with ``set_quirks(..., workflow_id=...)`` or as the default.
    """

    credits_as_string: bool = False
    total_as_string: bool = False
    metadata: Literal["object", "null", "missing"] = attrs.field(
        default="object", validator=attrs.validators.in_(("object", "null", "missing"))
    )
    ids: Literal["both", "id", "workflowRunId"] = attrs.field(
        default="both", validator=attrs.validators.in_(("both", "id", "workflowRunId"))
    )
    created_at_ms: bool = True
    output_format: Literal["object", "json_values", "json_text"] = attrs.field(
        default="object",
        validator=attrs.validators.in_(("object", "json_values", "json_text")),
    )
    not_found_for: float = attrs.field(default=0.0, converter=float)
    list_order: Literal["oldest_first", "newest_first", "shuffled"] = attrs.field(
        default="oldest_first",
        validator=attrs.validators.in_(("oldest_first", "newest_first", "shuffled")),
    )
    list_missing_status: float = attrs.field(default=0.0, converter=float, validator=_share)
    list_lag: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    list_drop: float = attrs.field(default=0.0, converter=float, validator=_share)
    foreign_runs_per_second: float = attrs.field(
        default=0.0, converter=float, validator=_non_negative
    )
