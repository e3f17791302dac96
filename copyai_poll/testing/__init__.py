"""A faithful fake of the Copy.ai Workflows API, for testing code that uses it."""

from ._clock import Clock, ManualClock
from ._demo import DEMO_WORKFLOW_ID, demo_faults, demo_scripts
from ._faults import Fault
from ._log import RequestRecord
from ._quirks import Quirks
from ._scripts import Phase, Script, Step
from ._serve import serve
from ._server import FakeCopyAI
from ._webhooks import Delivery, DeliveryPlan

__all__ = [
    "Clock",
    "DEMO_WORKFLOW_ID",
    "Delivery",
    "DeliveryPlan",
    "FakeCopyAI",
    "Fault",
    "ManualClock",
    "Phase",
    "Quirks",
    "RequestRecord",
    "Script",
    "Step",
    "demo_faults",
    "demo_scripts",
    "serve",
]
