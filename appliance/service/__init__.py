"""The long-running service's parts (``appliance serve``): so far its config file, :mod:`appliance.service.config`."""
