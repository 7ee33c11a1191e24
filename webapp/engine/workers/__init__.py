"""One module per worker kind; each is a thin asyncio adapter over plain logic."""

from webapp.engine.workers.base import Worker
from webapp.engine.workers.broadcast import BroadcastWorker
from webapp.engine.workers.listener import ListenerWorker
from webapp.engine.workers.mtuprobe import MtuProbeWorker
from webapp.engine.workers.multicast import MulticastWorker
from webapp.engine.workers.client import ClientWorker
from webapp.engine.workers.server import ServerWorker
from webapp.engine.workers.spoofer import SpooferWorker
from webapp.engine.workers.stream import StreamWorker

WORKER_CLASSES: dict[str, type[Worker]] = {
    cls.kind: cls for cls in (ServerWorker, ClientWorker, SpooferWorker, StreamWorker,
                              ListenerWorker, BroadcastWorker, MtuProbeWorker,
                              MulticastWorker)
}

__all__ = ["WORKER_CLASSES", "BroadcastWorker", "ClientWorker", "ListenerWorker",
           "MtuProbeWorker", "MulticastWorker", "ServerWorker", "SpooferWorker", "StreamWorker",
           "Worker"]
