"""Errors of the provisioning layer.  The CLI turns each into one sentence for the operator (``UserError``)."""
from __future__ import annotations


class ProvisioningError(Exception):
    """Base class: something the operator can act on; ``str()`` is one sentence."""


class Unsupported(ProvisioningError):
    """This host or driver does not offer a setting: shown as unsupported, never an error."""


class ProfileError(ProvisioningError):
    """A profile is missing, is not valid TOML, or names a knob or key that does not exist."""


class TargetError(ProvisioningError):
    """An interface or core list that tuning refuses (unknown, not named, carries the default route)."""


class StateError(ProvisioningError):
    """The state file is missing, unreadable, or belongs to a different tuning."""


class ApplyError(ProvisioningError):
    """A write failed or did not stick; raised after what was applied has been rolled back."""

    def __init__(self, message: str, rollback_errors: list[str] | None = None):
        super().__init__(message)
        self.rollback_errors = rollback_errors or []
