"""The long-running service's parts: metrics and health over HTTP, the systemd notify protocol (and, later,
``appliance serve`` and its config)."""
