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
    parser.add_argument("--take-over", "--handover", action="store_true", dest="take_over",
                        help="take the feed from the serve listening on service.handover_socket, without loss "
                             "(it then exits): an upgrade or restart started beside the running serve")


def run(args) -> int:
    from appliance.errors import UserError
    from appliance.service import config as CF
    from appliance.service.serve import Serve

    path = CF.path_from(args.config)
    cfg = CF.load(path)
    if args.take_over and not cfg.service.handover_socket:
        raise UserError(f"{path}: --take-over needs service.handover_socket in the config")
    return Serve(cfg, path, take_over=args.take_over).run()
