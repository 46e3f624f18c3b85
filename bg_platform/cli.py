"""`bgp <command>` (also `python -m bg_platform`): one subcommand per DVC stage plus tools.

Heavy libraries (torch, diffusers, great_expectations) are imported inside the command that needs
them, so `bgp --help` and the DAG files stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from bg_platform.errors import BgError

# name -> module. Each command module is light at import time and defines
#   HELP: str, add_arguments(parser) -> None, run(args, params) -> int
# (heavy imports go inside run()).
COMMANDS: dict[str, str] = {
    "config": "bg_platform.commands.config",
    "registry": "bg_platform.commands.registry",
    "import": "bg_platform.commands.importers",
    "validate": "bg_platform.commands.validate",
    "synth": "bg_platform.commands.synth",
    "contact-sheet": "bg_platform.commands.contact_sheet",
    "dataset": "bg_platform.commands.dataset",
    "train-judges": "bg_platform.commands.train_judges",
    "train-base": "bg_platform.commands.train_base",
    "evaluate": "bg_platform.commands.evaluate",
    "generate": "bg_platform.commands.generate",
    "train-adapter": "bg_platform.commands.train_adapter",
    "evaluate-adapter": "bg_platform.commands.evaluate_adapter",
    "demo": "bg_platform.commands.demo",
    "labelstudio": "bg_platform.commands.labelstudio",
    "serve-import-base": "bg_platform.commands.serving",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgp", description=__doc__.splitlines()[0])
    params_default = os.environ.get("BGP_PARAMS") or "params.yaml"  # an empty variable means unset
    parser.add_argument("--params", default=params_default, help="params file (default: $BGP_PARAMS or params.yaml)")
    parser.add_argument(
        "--profile", action="append", default=[], metavar="YAML", help="overlay merged over --params (repeatable)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("accelerate", "great_expectations", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        from bg_platform import config

        params = config.load(args.params, args.profile)
        return int(importlib.import_module(COMMANDS[args.command]).run(args, params) or 0)
    except BgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
