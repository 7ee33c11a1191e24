"""The experiments, free of any web library: sockets, workers, events.

`Supervisor` owns every worker; `EventBus` carries their events to whoever listens.
"""

from webapp.engine.bus import EventBus, Subscription
from webapp.engine.errors import (
    BadSpec, Conflict, EngineError, Refused, TooMany, UnknownWorker,
)
from webapp.engine.supervisor import Supervisor

__all__ = [
    "BadSpec",
    "Conflict",
    "EngineError",
    "EventBus",
    "Refused",
    "Subscription",
    "Supervisor",
    "TooMany",
    "UnknownWorker",
]
