"""`bgp serve-import-base`: put the trained base into the BentoML model store for the service.

The model is labelled with its fingerprint (what adapters are checked against) and the DVC hash
of the folder (from dvc.lock or `<base>.dvc`), so a Bento says exactly which base it serves.
"""

from __future__ import annotations

HELP = "import the base model folder into the BentoML model store (tag bg-base) for the service"


def add_arguments(p) -> None:
    p.add_argument("--base", help="base model folder (default: train_base.out_dir)")
    p.add_argument("--name", default="bg-base", help="model name in the store (default: bg-base)")
    p.add_argument("--dvc-hash", help="DVC hash of the folder (default: read from dvc.lock or <base>.dvc)")
    p.add_argument("--dvc-lock", default="dvc.lock", help="dvc.lock to read the hash from (default: ./dvc.lock)")


def dvc_hash(base: str, dvc_lock: str) -> tuple[str, str]:
    """(hash, where it came from); ("", reason) when there is none."""
    import os
    from pathlib import Path

    import yaml

    base_abs = Path(base).resolve()
    lock = Path(dvc_lock)
    if lock.is_file():
        doc = yaml.safe_load(lock.read_text()) or {}
        for stage, spec in (doc.get("stages") or {}).items():
            for out in spec.get("outs") or ():
                if (lock.parent / out.get("path", "")).resolve() == base_abs and out.get("md5"):
                    return out["md5"], f"{lock}:{stage}"
    dot_dvc = Path(f"{base_abs}.dvc")
    if dot_dvc.is_file():
        doc = yaml.safe_load(dot_dvc.read_text()) or {}
        for out in doc.get("outs") or ():
            if out.get("md5"):
                return out["md5"], str(dot_dvc)
    return "", f"no entry for {os.path.relpath(base_abs)} in {lock} or {dot_dvc.name}"


def run(args, params) -> int:
    import logging
    import shutil
    from pathlib import Path

    from bg_platform.errors import BgError
    from bg_platform.model.components import META_NAME, fingerprint, read_meta

    log = logging.getLogger("bgp.serving")
    base = Path(args.base or params.train_base.out_dir)
    if not (base / META_NAME).is_file():
        raise BgError(f"--base: {base} is not a saved base model (no {META_NAME}); run `bgp train-base` or pass --base")
    meta = read_meta(base)
    actual = fingerprint(base)
    if meta.fingerprint and meta.fingerprint != actual:
        raise BgError(
            f"--base: {base} was modified after it was saved (fingerprint {actual[:12]}, recorded {meta.fingerprint[:12]}); "
            "re-run `bgp train-base` or `dvc checkout` it"
        )
    digest, source = (args.dvc_hash, "--dvc-hash") if args.dvc_hash else dvc_hash(str(base), args.dvc_lock)
    if not digest:
        log.warning("no DVC hash for %s (%s); labelled dvc_hash=unknown", base, source)
    import bentoml

    labels = {"fingerprint": actual, "dvc_hash": digest or "unknown", "kind": meta.kind}
    metadata = {"categories": list(meta.categories), "resolution": meta.resolution, "source": str(base.resolve()),
                "dvc_hash_source": source}
    with bentoml.models.create(args.name, labels=labels, metadata=metadata) as ref:
        shutil.copytree(base, ref.path, dirs_exist_ok=True)
    stored = bentoml.models.get(ref.tag)  # `ref.path` was a staging folder, moved into the store on exit
    print(f"{stored.tag} (fingerprint {actual[:12]}, dvc {digest or 'unknown'}) -> {stored.path}")
    return 0
