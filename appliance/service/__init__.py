"""The long-running service's parts: its config file (``config``), metrics and health over HTTP (``metrics``,
``health``, ``http``), the systemd notify protocol (``notify``); ``appliance serve`` itself is not built yet."""
