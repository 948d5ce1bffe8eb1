"""The demo's one error: something it starts did not come up as it must."""

from __future__ import annotations


class DemoError(Exception):
    """A part of the demo failed; the message says which and why."""
