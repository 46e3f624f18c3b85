"""`bgp serve-import-base`: where the DVC hash label comes from (the import itself runs in
tests/integration/service_fixtures.py against a real BentoML model store)."""

from __future__ import annotations

import yaml

from bg_platform.commands.serving import dvc_hash


def test_dvc_hash_from_dvc_lock_then_dot_dvc_then_none(tmp_path):
    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    lock = tmp_path / "dvc.lock"
    assert dvc_hash(str(base), str(lock))[0] == ""
    (tmp_path / "models" / "base.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "b" * 32 + ".dir", "path": "base"}]}))
    assert dvc_hash(str(base), str(lock)) == ("b" * 32 + ".dir", str(tmp_path / "models" / "base.dvc"))
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "dataset": {"outs": [{"path": "data/dataset", "md5": "c" * 32 + ".dir"}]},
        "train_base": {"outs": [{"path": "models/base", "hash": "md5", "md5": "a" * 32 + ".dir"}]}}}))
    assert dvc_hash(str(base), str(lock)) == ("a" * 32 + ".dir", f"{lock}:train_base")
