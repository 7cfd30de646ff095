"""`turnout server`, `turnout registrations ...`, `turnout users ...`, `turnout tokens ...`."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the server's commands to the root `turnout` command (imports stay lazy)."""
