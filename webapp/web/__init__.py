"""The web layer: FastAPI routes that translate HTTP and WebSockets into engine calls."""

from webapp.web.app import create_app
from webapp.web.settings import Settings

__all__ = ["Settings", "create_app"]
