"""The web console at `/ui` on the admin plane: server-rendered pages over the admin API."""

from crossway.ui.console import Console, create_console

__all__ = ["Console", "create_console"]
