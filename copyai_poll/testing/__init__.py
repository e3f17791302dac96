"""A faithful fake of the Copy.ai Workflows API, for testing code that uses it."""

from ._clock import Clock, ManualClock
from ._faults import Fault
from ._log import RequestRecord
from ._quirks import Quirks
from ._scripts import Phase, Script, Step
from ._server import FakeCopyAI
from ._webhooks import Delivery

__all__ = [
    "Clock",
    "Delivery",
    "FakeCopyAI",
    "Fault",
    "ManualClock",
    "Phase",
    "Quirks",
    "RequestRecord",
    "Script",
    "Step",
]
