"""``appliance config check [FILE]``: validate the service's config file and print it with every default filled.

The file is ``FILE``, else ``$APPLIANCE_CONFIG``, else ``/etc/appliance/appliance.toml`` (the one ``appliance
serve`` reads).  A bad file is one sentence naming the key and its line, exit 2; a good one is printed back as
TOML on stdout, exit 0, so ``appliance config check > effective.toml`` shows what the service will use.
"""
from __future__ import annotations

import sys

ACTIONS = {
    "check": "check a config file and print the effective config (every default filled in) as TOML",
}


def add_arguments(parser) -> None:
    from appliance.service.config import DEFAULT_PATH, ENV_VAR

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in ACTIONS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("file", nargs="?", metavar="FILE",
                       help=f"the config file (default: ${ENV_VAR}, else {DEFAULT_PATH})")


def run(args) -> int:
    from appliance.service.config import load, render

    config = load(args.file)
    sys.stdout.write(render(config))
    return 0
