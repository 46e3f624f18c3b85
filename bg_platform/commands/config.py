"""`bgp config`: check the params file(s) and optionally explain every key."""

from __future__ import annotations

HELP = "check params.yaml (and --profile overlays) and print every key with its help"


def add_arguments(p) -> None:
    p.add_argument("--explain", action="store_true", help="print every key with its default and help")
    p.add_argument("--dump", action="store_true", help="print the effective params as YAML, with help comments")


def run(args, params) -> int:
    from bg_platform import config

    if args.dump:
        print(config.dump_yaml(params), end="")
    elif args.explain:
        print("\n".join(config.explain()))
    else:
        print(f"{' + '.join([args.params, *args.profile])}: OK")
    return 0
