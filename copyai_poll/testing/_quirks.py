"""Quirks: the odd but real shapes of Copy.ai answers, on demand."""

from __future__ import annotations

from typing import Literal

import attrs


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
