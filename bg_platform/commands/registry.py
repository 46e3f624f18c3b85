"""`bgp registry ...`: inspect and operate the adapter registry (see bg_platform/registry/store.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HELP = "adapter registry: list, history, resolve, promote, rollback, reject, publish, verify, gc"
DEFAULT_ROOT = "registry"
DEFAULT_GC_AGE_S = 24 * 3600


def add_arguments(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        default=os.environ.get("BGP_REGISTRY", DEFAULT_ROOT),
        help="registry root: a folder or an fsspec URL such as s3://bucket/registry "
        "(default: $BGP_REGISTRY or ./registry)",
    )
    sub = p.add_subparsers(dest="registry_command", required=True, metavar="<action>")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    s = add("list", "brands with their production/candidate versions, or one brand's versions")
    s.add_argument("brand", nargs="?", help="list this brand's versions")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = add("history", "a brand's publishes, alias changes and rejections, oldest first")
    s.add_argument("brand")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = add("resolve", "print the version an alias (or version id) stands for")
    s.add_argument("brand")
    s.add_argument("name", nargs="?", default="production", help="alias or version id (default: production)")
    s.add_argument("--json", action="store_true", help="print the full version metadata")

    s = add("promote", "point an alias (default: production) at a version")
    s.add_argument("brand")
    s.add_argument("version", help="version id, or an alias such as 'candidate'")
    s.add_argument("--alias", default="production", help="alias to move (default: production)")
    s.add_argument("--force", action="store_true", help="allow promoting a rejected version")

    s = add("rollback", "point an alias back at the version it had before")
    s.add_argument("brand")
    s.add_argument("--alias", default="production", help="alias to roll back (default: production)")
    s.add_argument("--force", action="store_true", help="allow rolling back onto a rejected version")

    s = add("reject", "mark a version rejected (it stays listed; promoting it then needs --force)")
    s.add_argument("brand")
    s.add_argument("version", help="version id or alias")
    s.add_argument("--reason", action="append", required=True, help="why (repeatable)")

    s = add("publish", "upload a folder (or files) of .safetensors weights + configs as a new version")
    s.add_argument("brand")
    s.add_argument("src", nargs="+", help="adapter folder, or the files to publish")
    s.add_argument("--base-fingerprint", required=True, help="fingerprint of the base the adapter was trained on")
    s.add_argument("--data-hash", required=True, help="hash of the training data (e.g. the DVC md5)")
    s.add_argument("--train-params", type=Path, help="JSON file with the training parameters")
    s.add_argument("--metrics", type=Path, help="JSON file with the evaluation metrics (e.g. metrics.json)")
    s.add_argument("--extra", type=Path, help="JSON file with extra metadata")
    s.add_argument("--promote", choices=("candidate", "production"), help="also point this alias at it")

    s = add("verify", "re-hash a version's files against its metadata (and check the base fingerprint)")
    s.add_argument("brand")
    s.add_argument("name", nargs="?", default="production", help="alias or version id (default: production)")
    s.add_argument("--base-fingerprint", help="refuse unless the adapter was trained on this base")

    s = add("gc", "delete abandoned uploads and temp files older than a threshold")
    s.add_argument(
        "--older-than", type=float, default=DEFAULT_GC_AGE_S, metavar="SECONDS",
        help=f"age threshold in seconds (default {DEFAULT_GC_AGE_S}); keep it above the longest upload",
    )  # fmt: skip
    s.add_argument("--dry-run", action="store_true", help="only print what would be removed")


def _read_json_file(path: Path | None, option: str) -> dict:
    from bg_platform.registry import RegistryError

    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"{option} {path}: file not found") from None
    except ValueError as exc:
        raise RegistryError(f"{option} {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{option} {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _brand_rows(reg) -> list[dict]:
    rows = []
    for brand in reg.list_brands():
        aliases = reg.aliases(brand)
        rows.append({"brand": brand, "versions": len(reg.list_versions(brand)), **aliases})
    return rows


def _version_rows(reg, brand: str) -> list[dict]:
    aliases = reg.aliases(brand)
    rows = []
    for version in reg.list_versions(brand):
        info = reg.get(brand, version)
        rows.append(
            {
                "version": version,
                "status": info.status,
                "aliases": [a for a, v in aliases.items() if v == version],
                "created_at": info.metadata.created_at,
                "metrics": info.metadata.metrics,
                "reasons": list(info.reasons),
            }
        )
    return rows


def run(args, params) -> int:
    from bg_platform.registry import Registry

    reg = Registry(args.root)
    action = args.registry_command
    if action == "list":
        if args.brand is None:
            rows = _brand_rows(reg)
            if args.json:
                print(json.dumps(rows, indent=2))
            for row in [] if args.json else rows:
                print(
                    f"{row['brand']:<20} {row['versions']:>4} versions  production={row.get('production', '-')}  "
                    f"candidate={row.get('candidate', '-')}"
                )
            if not rows and not args.json:
                print(f"no published adapters in {reg.root}")
        else:
            rows = _version_rows(reg, args.brand)
            if args.json:
                print(json.dumps(rows, indent=2))
            for row in [] if args.json else rows:
                metrics = ", ".join(f"{k}={v}" for k, v in list(row["metrics"].items())[:4])
                note = f"  ({'; '.join(row['reasons'])})" if row["reasons"] else ""
                print(
                    f"{row['version']}  {row['status']:<9} {','.join(row['aliases']) or '-':<21} "
                    f"{row['created_at']}  {metrics}{note}"
                )
    elif action == "history":
        events = reg.history(args.brand)
        if args.json:
            print(json.dumps([e.to_dict() for e in events], indent=2))
        else:
            print("\n".join(e.describe() for e in events))
    elif action == "resolve":
        info = reg.resolve(args.brand, args.name)
        print(json.dumps(info.to_dict(), indent=2) if args.json else info.version)
    elif action == "promote":
        info = reg.promote(args.brand, args.version, alias=args.alias, force=args.force)
        print(f"{args.brand}: {args.alias} -> {info.version}")
    elif action == "rollback":
        info = reg.rollback(args.brand, alias=args.alias, force=args.force)
        print(f"{args.brand}: {args.alias} rolled back to {info.version}")
    elif action == "reject":
        info = reg.reject(args.brand, args.version, args.reason)
        print(f"{args.brand}/{info.version}: rejected ({'; '.join(info.reasons)})")
    elif action == "publish":
        src = args.src[0] if len(args.src) == 1 else args.src
        info = reg.publish(
            args.brand,
            src,
            base_fingerprint=args.base_fingerprint,
            data_hash=args.data_hash,
            params=_read_json_file(args.train_params, "--train-params"),
            metrics=_read_json_file(args.metrics, "--metrics"),
            extra=_read_json_file(args.extra, "--extra"),
        )
        if args.promote:
            reg.promote(args.brand, info.version, alias=args.promote)
        print(info.version)
    elif action == "verify":
        info = reg.verify(args.brand, args.name, expected_base_fingerprint=args.base_fingerprint)
        print(f"{info.brand}/{info.version}: OK ({len(info.files)} files, base {info.base_fingerprint})")
    elif action == "gc":
        removed = reg.gc(args.older_than, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print("\n".join([*(f"{verb} {p}" for p in removed), f"gc: {verb} {len(removed)} item(s)"]))
    return 0
