"""Runs, statuses and the pure parsing of Copy.ai payloads."""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyai_poll import ResponseFormatError, RunStatus, StatusChange, WorkflowRun, _models
from copyai_poll._http import parse_json, parse_page, unwrap_data


def parse_run_body(
    body: bytes | str, *, workflow_id: str | None = None, run_id: str | None = None
) -> WorkflowRun:
    """A whole get-run response body, read as the client reads it."""
    data = unwrap_data(parse_json(body))
    return WorkflowRun.from_api(data, workflow_id=workflow_id, run_id=run_id)


# The two example bodies of the "Get Workflow Run" reference, verbatim.
SEED_COMPLETE = """{
"status": "success",
"data": {
"status": "COMPLETE",
"input": {
"Input 1": "Inputs vary depending on the workflow used.",
"Input 2": "The best way to see an example is to try it!"
},
"output": {
"Output 1": "Outputs vary depending on the workflow used.",
"Output 2": "The best way to see an example is to try it!"
},
"metadata": {
"api": true
},
"createdAt": "2023-04-06T22:34:46.704Z",
"id": "<run_id>",
"credits": 2
}
}"""

SEED_NO_STATUS = """{
"status": "success",
"data": {
"output": {
"text": "workflow run output"
},
"metadata": {
"interestingValue": "doublelyInterestingValue"
},
"createdAt": "2023-09-27T18:34:13.091Z",
"id": "WRUN-dc46baf3-cb19-4424-be04-95ba630409bf",
"workflowRunId": "WRUN-dc46baf3-cb19-4424-be04-95ba630409bf",
"workflowId": "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa",
"credits": "9001"
}
}"""


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate the process-wide set of statuses already warned about."""
    monkeypatch.setattr(_models, "_warned", set())


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "copyai_poll" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


class TestSeedExamples:
    def test_complete_example(self) -> None:
        """Parses the reference's first example into a COMPLETE run with every field."""
        run = parse_run_body(SEED_COMPLETE)

        assert "<run_id>" == run.id
        assert None is run.workflow_id
        assert RunStatus.COMPLETE is run.status
        assert "COMPLETE" == run.raw_status
        assert {
            "Input 1": "Inputs vary depending on the workflow used.",
            "Input 2": "The best way to see an example is to try it!",
        } == dict(run.input)
        assert {
            "Output 1": "Outputs vary depending on the workflow used.",
            "Output 2": "The best way to see an example is to try it!",
        } == dict(run.output)
        assert {"api": True} == dict(run.metadata)
        assert datetime(2023, 4, 6, 22, 34, 46, 704000, tzinfo=UTC) == run.created_at
        assert 2 == run.credits
        assert None is run.error
        assert json.loads(SEED_COMPLETE)["data"] == dict(run.raw)
        assert run.is_terminal

    def test_example_without_status(self) -> None:
        """Parses the reference's second example: no status, credits as a string."""
        run = parse_run_body(SEED_NO_STATUS)

        assert "WRUN-dc46baf3-cb19-4424-be04-95ba630409bf" == run.id
        assert "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa" == run.workflow_id
        assert None is run.status
        assert "" == run.raw_status
        assert {"text": "workflow run output"} == dict(run.output)
        assert {"interestingValue": "doublelyInterestingValue"} == dict(run.metadata)
        assert {} == dict(run.input)
        assert datetime(2023, 9, 27, 18, 34, 13, 91000, tzinfo=UTC) == run.created_at
        assert 9001 == run.credits
        assert not run.is_terminal

    def test_from_api_matches_parse_run_body(self) -> None:
        """Builds the same run from the decoded data object as from the whole body."""
        data = json.loads(SEED_NO_STATUS)["data"]

        assert parse_run_body(SEED_NO_STATUS) == WorkflowRun.from_api(data)


class TestQuirks:
    @pytest.mark.parametrize(
        ("credits", "expected"),
        [("9001", 9001), (" 12 ", 12), (2, 2), (3.0, 3), (None, None), ("lots", None)],
    )
    def test_credits(self, credits: Any, expected: int | None) -> None:
        """Reads credits as an int whether sent as a number or a string, else None."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "credits": credits})

        assert expected == run.credits

    def test_credits_missing(self) -> None:
        """Leaves credits None when the run does not mention them."""
        assert None is WorkflowRun.from_api({"id": "WRUN-1"}).credits

    @pytest.mark.parametrize("value", [None, "", 5, ["a"], "not json", True])
    def test_metadata_not_an_object(self, value: Any) -> None:
        """Turns metadata that is null or not an object into an empty mapping."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "metadata": value})

        assert {} == dict(run.metadata)
        assert value == run.raw["metadata"]

    def test_metadata_missing(self) -> None:
        """Turns missing metadata, input and output into empty mappings."""
        run = WorkflowRun.from_api({"id": "WRUN-1"})

        assert ({}, {}, {}) == (dict(run.metadata), dict(run.input), dict(run.output))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2023-09-27T18:34:13.091Z", datetime(2023, 9, 27, 18, 34, 13, 91000, tzinfo=UTC)),
            ("2023-09-27T18:34:13Z", datetime(2023, 9, 27, 18, 34, 13, tzinfo=UTC)),
            ("2023-09-27T18:34:13", datetime(2023, 9, 27, 18, 34, 13, tzinfo=UTC)),
            (
                "2023-09-27T20:34:13.5+02:00",
                datetime(2023, 9, 27, 20, 34, 13, 500000, tzinfo=timezone(timedelta(hours=2))),
            ),
        ],
    )
    def test_created_at(self, text: str, expected: datetime) -> None:
        """Parses createdAt with or without milliseconds into an aware datetime."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "createdAt": text})

        assert expected == run.created_at
        assert run.created_at is not None
        assert run.created_at.tzinfo is not None

    @pytest.mark.parametrize("value", ["yesterday", "", None, [], {}, True])
    def test_created_at_unreadable(self, value: Any) -> None:
        """Leaves created_at None when createdAt cannot be read as a time."""
        assert None is WorkflowRun.from_api({"id": "WRUN-1", "createdAt": value}).created_at

    def test_only_id(self) -> None:
        """Takes the run id from ``id`` when ``workflowRunId`` is absent."""
        assert "WRUN-a" == WorkflowRun.from_api({"id": "WRUN-a"}).id

    def test_only_workflow_run_id(self) -> None:
        """Takes the run id from ``workflowRunId`` when ``id`` is absent."""
        assert "WRUN-b" == WorkflowRun.from_api({"workflowRunId": "WRUN-b"}).id

    def test_payload_ids_win_over_fallbacks(self) -> None:
        """Prefers the ids in the payload to the ``run_id=``/``workflow_id=`` fallbacks."""
        run = WorkflowRun.from_api(
            {"id": "WRUN-p", "workflowId": "WCFG-p"}, run_id="WRUN-k", workflow_id="WCFG-k"
        )

        assert ("WRUN-p", "WCFG-p") == (run.id, run.workflow_id)

    def test_fallback_ids(self) -> None:
        """Uses the ``run_id=``/``workflow_id=`` keywords when the payload names neither."""
        run = WorkflowRun.from_api({"status": "NEW"}, run_id="WRUN-k", workflow_id="WCFG-k")

        assert ("WRUN-k", "WCFG-k") == (run.id, run.workflow_id)

    def test_fallback_ids_through_parse_run_body(self) -> None:
        """Passes the fallback ids through parse_run_body."""
        run = parse_run_body(
            b'{"status":"success","data":{"status":"NEW"}}', run_id="WRUN-k", workflow_id="W"
        )

        assert ("WRUN-k", "W") == (run.id, run.workflow_id)

    @pytest.mark.parametrize("data", [{}, {"id": ""}, {"id": None, "workflowRunId": None}])
    def test_no_id_anywhere(self, data: dict[str, Any]) -> None:
        """Refuses a run object with no id and no fallback."""
        with pytest.raises(ResponseFormatError):
            WorkflowRun.from_api(data)

    def test_output_values_kept(self) -> None:
        """Keeps output values that are strings, lists or JSON text exactly as sent."""
        output = {"text": "plain", "items": ["a", "b"], "json": '{"k": [1, 2]}', "n": 3}

        run = WorkflowRun.from_api({"id": "WRUN-1", "output": output})

        assert output == dict(run.output)

    def test_output_as_json_text(self) -> None:
        """Decodes an output sent as JSON text of an object."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "output": '{"text": "hi", "n": [1]}'})

        assert {"text": "hi", "n": [1]} == dict(run.output)

    def test_output_as_json_text_of_a_list(self) -> None:
        """Keeps an output that is JSON text of a non-object only in ``raw``."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "output": '["a"]'})

        assert ({}, '["a"]') == (dict(run.output), run.raw["output"])

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("id", "WRUN-dc46baf3-cb19-4424-be04-95ba630409bf"),
            ("workflowRunId", "WRUN-0"),
            ("workflowId", "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa"),
            ("workflowId", "PKGW-84e56597"),
            ("id", "PKGW-1234"),
            ("id", "WCFG-5678"),
        ],
    )
    def test_prefixed_ids_are_opaque(self, field: str, value: str) -> None:
        """Keeps WRUN-, WCFG- and PKGW- ids verbatim, whatever the prefix."""
        run = WorkflowRun.from_api({field: value}, run_id="fallback")

        assert value == (run.workflow_id if field == "workflowId" else run.id)
        assert field != "workflowId" or "fallback" == run.id

    def test_numeric_id_becomes_text(self) -> None:
        """Keeps a numeric id as its text."""
        assert "123" == WorkflowRun.from_api({"id": 123}).id

    def test_huge_numeric_id(self) -> None:
        """Never lets a number too long to print escape as a bare ValueError."""
        try:
            run = WorkflowRun.from_api({"id": 10**5000})
        except ResponseFormatError:
            return
        assert run.id

    def test_error_kept(self) -> None:
        """Keeps the server's error field as sent."""
        error = {"message": "step 3 failed"}

        assert error == WorkflowRun.from_api({"id": "WRUN-1", "error": error}).error


class TestStatus:
    def test_values(self) -> None:
        """Is an Enum of exactly the six documented str values."""
        assert issubclass(RunStatus, enum.Enum)
        assert ["NEW", "WAITING", "PROCESSING", "COMPLETE", "RETRYING", "FAILED"] == [
            s.value for s in RunStatus
        ]
        assert all(isinstance(s.value, str) for s in RunStatus)

    @pytest.mark.parametrize("status", list(RunStatus))
    def test_is_terminal(self, status: RunStatus) -> None:
        """Is terminal only for COMPLETE and FAILED."""
        assert (status in {RunStatus.COMPLETE, RunStatus.FAILED}) == status.is_terminal

    @pytest.mark.parametrize("status", list(RunStatus))
    def test_known_status_parsed(self, status: RunStatus) -> None:
        """Parses every documented status into its member, keeping the raw text."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "status": status.value})

        assert (status, status.value) == (run.status, run.raw_status)
        assert status.is_terminal == run.is_terminal

    @pytest.mark.usefixtures("fresh_warnings")
    def test_no_status(self, caplog: pytest.LogCaptureFixture) -> None:
        """Gives a run without status status None and raw_status "", logging nothing."""
        with caplog.at_level(logging.DEBUG, logger="copyai_poll"):
            run = WorkflowRun.from_api({"id": "WRUN-1"})

        assert (None, "") == (run.status, run.raw_status)
        assert not run.is_terminal
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]

    @pytest.mark.usefixtures("fresh_warnings")
    def test_unknown_status(self, caplog: pytest.LogCaptureFixture) -> None:
        """Keeps an undocumented status as raw text with status None and warns naming it."""
        with caplog.at_level(logging.WARNING, logger="copyai_poll"):
            run = WorkflowRun.from_api({"id": "WRUN-1", "status": "QUEUED_test_unknown"})

        assert (None, "QUEUED_test_unknown") == (run.status, run.raw_status)
        assert not run.is_terminal
        assert 1 == len(warnings_about(caplog, "QUEUED_test_unknown"))

    @pytest.mark.usefixtures("fresh_warnings")
    def test_unknown_status_warned_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """Warns once per distinct undocumented status, however many runs carry it."""
        with caplog.at_level(logging.WARNING, logger="copyai_poll"):
            for i in range(3):
                WorkflowRun.from_api({"id": f"WRUN-{i}", "status": "PAUSED_test_once"})
            WorkflowRun.from_api({"id": "WRUN-9", "status": "HALTED_test_once"})
            WorkflowRun.from_api({"id": "WRUN-8", "status": "HALTED_test_once"})

        assert 1 == len(warnings_about(caplog, "PAUSED_test_once"))
        assert 1 == len(warnings_about(caplog, "HALTED_test_once"))

    @pytest.mark.usefixtures("fresh_warnings")
    def test_unknown_status_through_body(self, caplog: pytest.LogCaptureFixture) -> None:
        """Warns about an undocumented status met while parsing a whole body."""
        body = json.dumps({"status": "success", "data": {"id": "W", "status": "Body_test_x"}})

        with caplog.at_level(logging.WARNING, logger="copyai_poll"):
            run = parse_run_body(body)

        assert "Body_test_x" == run.raw_status
        assert 1 == len(warnings_about(caplog, "Body_test_x"))

    @pytest.mark.parametrize("status", [1, 1.5, True, ["COMPLETE"], {"s": "COMPLETE"}])
    def test_non_string_status(self, status: Any) -> None:
        """Refuses a status that is not a string."""
        with pytest.raises(ResponseFormatError):
            WorkflowRun.from_api({"id": "WRUN-1", "status": status})

    @pytest.mark.parametrize("data", [None, [], ["id"], "WRUN-1", 1, True, 1.5])
    def test_non_object_data(self, data: Any) -> None:
        """Refuses data that is not an object."""
        with pytest.raises(ResponseFormatError):
            WorkflowRun.from_api(data)


class TestValue:
    def test_frozen(self) -> None:
        """Refuses assignment to a run's fields."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "status": "NEW"})

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            run.status = RunStatus.COMPLETE  # type: ignore[misc]

    @pytest.mark.parametrize("field", ["input", "output", "metadata", "raw"])
    def test_mappings_read_only(self, field: str) -> None:
        """Refuses item assignment on the run's mappings."""
        run = WorkflowRun.from_api(
            {"id": "WRUN-1", "input": {"a": 1}, "output": {"b": 2}, "metadata": {"c": 3}}
        )

        with pytest.raises(TypeError):
            getattr(run, field)["x"] = 1

    def test_mappings_are_copies(self) -> None:
        """Is unaffected by later changes to the dict it was built from."""
        data: dict[str, Any] = {"id": "WRUN-1", "output": {"b": 2}}
        run = WorkflowRun.from_api(data)

        data["output"]["b"] = 99
        data["id"] = "changed"

        assert ({"b": 2}, "WRUN-1") == (dict(run.output), run.raw["id"])

    def test_mappings_are_mappings(self) -> None:
        """Exposes input, output, metadata and raw as Mappings."""
        run = WorkflowRun.from_api(json.loads(SEED_COMPLETE)["data"])

        assert all(isinstance(m, Mapping) for m in (run.input, run.output, run.metadata, run.raw))

    def test_repr_compact(self) -> None:
        """Shows id, workflow and status only, never the payload."""
        run = WorkflowRun.from_api(
            {"id": "WRUN-1", "workflowId": "WCFG-2", "status": "COMPLETE", "output": {"t": "x"}}
        )

        assert "<WorkflowRun id='WRUN-1' workflow_id='WCFG-2' status=COMPLETE>" == repr(run)

    @pytest.mark.usefixtures("fresh_warnings")
    def test_repr_unknown_status(self) -> None:
        """Names an undocumented status in the repr."""
        run = WorkflowRun.from_api({"id": "WRUN-1", "status": "ODD_repr"})

        assert "<WorkflowRun id='WRUN-1' status=unknown 'ODD_repr'>" == repr(run)

    def test_status_change_repr(self) -> None:
        """Shows a status change as run, transition, elapsed time and poll count."""
        run = WorkflowRun(id="WRUN-1", status=RunStatus.PROCESSING, raw_status="PROCESSING")
        change = StatusChange(
            run=run, previous=None, current=RunStatus.PROCESSING, elapsed=1.5, polls=2
        )

        assert "<StatusChange run='WRUN-1' start -> PROCESSING elapsed=1.50s polls=2>" == repr(
            change
        )


class TestParsing:
    @pytest.mark.parametrize("body", [b'{"a": [1, null]}', '{"a": [1, null]}'])
    def test_parse_json(self, body: bytes | str) -> None:
        """Decodes a JSON body given as bytes or text."""
        assert {"a": [1, None]} == parse_json(body)

    @pytest.mark.parametrize(
        "body", [b"", b"<html>502</html>", b"\xff\xfe\x00", "{", "[" * 100_000]
    )
    def test_parse_json_refuses(self, body: bytes | str) -> None:
        """Turns a body that is not JSON into a ResponseFormatError caused by the decoder."""
        with pytest.raises(ResponseFormatError) as info:
            parse_json(body)

        assert info.value.__cause__ is not None

    def test_unwrap_data(self) -> None:
        """Returns the data of a success envelope."""
        assert {"id": "x"} == unwrap_data({"status": "success", "data": {"id": "x"}})

    @pytest.mark.parametrize(
        "payload",
        [
            {"status": "error", "errorCode": "NOT_FOUND"},
            {"status": "error", "data": {"id": "x"}},
            {"status": "success"},
            [{"data": {}}],
            None,
            "data",
        ],
    )
    def test_unwrap_data_refuses(self, payload: Any) -> None:
        """Refuses anything but a success envelope holding data."""
        with pytest.raises(ResponseFormatError):
            unwrap_data(payload)

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b'{"status":"success"}',
            b'{"status":"success","data":[]}',
            b'{"status":"success","data":{}}',
            b'{"status":"success","data":{"id":"x","status":3}}',
            "[" * 100_000,
            b'{"data":' + b"[" * 100_000,
        ],
    )
    def test_parse_run_body_refuses(self, body: bytes | str) -> None:
        """Turns every malformed or hostile run body into a ResponseFormatError."""
        with pytest.raises(ResponseFormatError):
            parse_run_body(body)

    def test_parse_page(self) -> None:
        """Splits a page into its total, sent as a string, and its items."""
        assert (12, [{"id": "a"}]) == parse_page({"total": "12", "data": [{"id": "a"}]})

    def test_parse_page_without_total(self) -> None:
        """Gives total None when a page does not say."""
        assert (None, []) == parse_page({"data": []})

    @pytest.mark.parametrize("payload", [{"total": 1}, {"data": {}}, [], None, {"data": "x"}])
    def test_parse_page_refuses(self, payload: Any) -> None:
        """Refuses a page whose data is not a list."""
        with pytest.raises(ResponseFormatError):
            parse_page(payload)


# --- Property: parsing never fails with anything but ResponseFormatError. ---

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from([s.value for s in RunStatus])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
run_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from([s.value for s in RunStatus]) | json_values,
        "id": st.text(max_size=20) | json_values,
        "workflowRunId": st.text(max_size=20) | json_values,
        "workflowId": st.text(max_size=20) | json_values,
        "input": json_values,
        "output": json_values | json_values.map(json.dumps),
        "metadata": json_values | json_values.map(json.dumps),
        "createdAt": st.datetimes().map(datetime.isoformat)
        | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
        | json_values,
        "credits": st.integers().map(str) | st.floats().map(str) | json_values,
        "error": json_values,
        "toolKey": json_values,
    },
)
any_data = json_values | run_like


def check_run(run: WorkflowRun) -> None:
    assert isinstance(run.id, str)
    assert run.id
    assert run.workflow_id is None or isinstance(run.workflow_id, str)
    assert run.status is None or isinstance(run.status, RunStatus)
    assert isinstance(run.raw_status, str)
    if run.raw_status in {s.value for s in RunStatus}:
        assert RunStatus(run.raw_status) is run.status
    for mapping in (run.input, run.output, run.metadata, run.raw):
        assert isinstance(mapping, Mapping)
    assert run.created_at is None or run.created_at.tzinfo is not None
    assert run.credits is None or isinstance(run.credits, int)


@settings(max_examples=200, deadline=None)
@given(data=any_data)
def test_from_api_total(data: Any) -> None:
    """Builds a WorkflowRun or raises ResponseFormatError from any JSON value."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_models, "_warned", set())
        try:
            run = WorkflowRun.from_api(data)
        except ResponseFormatError:
            return
    check_run(run)


@settings(max_examples=200, deadline=None)
@given(data=any_data, wrapper=st.sampled_from(["success", "error", None]))
def test_parse_run_body_total_on_json(data: Any, wrapper: str | None) -> None:
    """Parses any JSON body into a WorkflowRun or raises ResponseFormatError."""
    envelope: dict[str, Any] = {"data": data}
    if wrapper is not None:
        envelope["status"] = wrapper
    body = json.dumps(envelope)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_models, "_warned", set())
        try:
            run = parse_run_body(body.encode())
        except ResponseFormatError:
            return
    check_run(run)
    credits = data.get("credits") if isinstance(data, dict) else None
    if isinstance(credits, int) and not isinstance(credits, bool):  # a bool is no count
        assert credits == run.credits


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200))
def test_parse_run_body_total_on_bytes(body: bytes | str) -> None:
    """Parses any byte string or text into a WorkflowRun or raises ResponseFormatError."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_models, "_warned", set())
        try:
            run = parse_run_body(body)
        except ResponseFormatError:
            return
    check_run(run)


def test_float_credits_not_nan() -> None:
    """Never reports NaN or infinite credits as a number."""
    for value in ("nan", "inf", "-inf", math.inf, math.nan):
        assert None is WorkflowRun.from_api({"id": "x", "credits": value}).credits


@pytest.mark.parametrize("credits", [True, False])
def test_boolean_credits_are_no_count(credits: bool) -> None:
    """A boolean in `credits` is not a number of credits: it becomes None."""
    assert WorkflowRun.from_api({"id": "WRUN-1", "credits": credits}).credits is None


def test_unknown_statuses_are_remembered_in_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Warning once per huge undocumented status keeps a small digest, never the text."""
    import gc
    import tracemalloc

    monkeypatch.setattr(_models, "_warned", set())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            status = f"{i:04d}" + "x" * 1_048_576  # 1 MiB each
            WorkflowRun.from_api({"id": "WRUN-1", "status": status})
            del status
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert 20 == len(_models._warned)
    assert retained < 64 * 1024  # 20 MiB of statuses seen, a few KiB kept
