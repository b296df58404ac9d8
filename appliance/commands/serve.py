"""``appliance serve [--config FILE]``: the capture appliance as a long-running service (``appliance.service.serve``).

Reads the config file (``--config``, else ``$APPLIANCE_CONFIG``, else ``/etc/appliance/appliance.toml``; a bad
file is one sentence naming the key and its line, exit 2, nothing started), checks the host (the interface, the
privileges: exit 77 without them, the CPUs), then captures session after session until SIGTERM or SIGINT
(exit 0).  SIGHUP reloads the config.  Under systemd: provisioning/systemd/appliance.service (Type=notify).
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    from appliance.service.config import DEFAULT_PATH, ENV_VAR

    parser.add_argument("--config", metavar="FILE",
                        help=f"the config file (default: ${ENV_VAR}, else {DEFAULT_PATH})")


def run(args) -> int:
    from appliance.service import config as CF
    from appliance.service.serve import Serve

    path = CF.path_from(args.config)
    cfg = CF.load(path)
    return Serve(cfg, path).run()
