"""nsk's command line (click)."""

from nsk.cli.commands import main  # noqa: F401
