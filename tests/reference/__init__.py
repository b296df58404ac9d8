"""A slow, obvious, pure-Python twin of ``appliance replay``, written from the contract and not from the engine.

Two implementations of one contract catch each other's bugs: the tests feed both the same files and compare
every output.  Nothing here is fast or clever on purpose; dicts, lists and ``struct`` only.  ITCH message
layouts come from :mod:`appliance.itch.layout` (the one table), which ``tests/test_layout.py`` checks
against the specification independently.
"""
from .replay import reference_replay

__all__ = ["reference_replay"]
