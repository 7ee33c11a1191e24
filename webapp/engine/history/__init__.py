"""The history: the store in SQLite (`store`) and its file's lock (`file`), the recorder that
fills it from the bus (`recorder`), and its exports (`export`, `pcapng`, sharing `datagrams`).

The store's public names are here too, where the rest of the app imports them from. Only the
store is imported with the package: the recorder pulls in the supervisor, and the pcapng
writer dpkt (~6 MiB, loaded only when a capture is asked for)."""

from webapp.engine.history.store import (
    FILENAME, MIGRATIONS, SCHEMA_VERSION, HistoryInUse, HistoryStore, HistoryUnavailable,
    UnknownHistory, WorkerRecord, default_data_dir,
)

__all__ = [
    "FILENAME", "MIGRATIONS", "SCHEMA_VERSION", "HistoryInUse", "HistoryStore",
    "HistoryUnavailable", "UnknownHistory", "WorkerRecord", "default_data_dir",
]
