"""Adapter registry on a local folder and on fsspec's memory:// filesystem (real files, real safetensors)."""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import save_file

from bg_platform import cli
from bg_platform.registry import (
    AdapterIntegrityError,
    Event,
    FingerprintMismatch,
    Registry,
    RegistryError,
    RejectedVersion,
    UnknownName,
    VersionExists,
    VersionInfo,
    VersionMetadata,
)
from bg_platform.registry.aliases import replay
from bg_platform.registry.ids import VERSION_PATTERN, new_version_id

REPO = Path(__file__).resolve().parents[2]
FP = "base-fp-1111"


def _publish(reg: Registry, src: Path, brand: str = "aurora", **kw):
    args = {"base_fingerprint": FP, "data_hash": "data-abc", "params": {"rank": 4}, "metrics": {"fid": 12.5}}
    args.update(kw)
    return reg.publish(brand, src, **args)


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    src = tmp_path / "adapter"
    src.mkdir()
    gen = torch.Generator().manual_seed(0)
    save_file(
        {"lora_A": torch.randn(4, 8, generator=gen), "lora_B": torch.randn(8, 4, generator=gen)},
        str(src / "adapter_model.safetensors"),
    )
    (src / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4}))
    return src


@pytest.fixture(params=["local", "memory"])
def reg(request, tmp_path: Path):
    if request.param == "local":
        yield Registry(str(tmp_path / "registry"))
    else:
        root = f"memory://registry-{uuid.uuid4().hex}"
        yield Registry(root)
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)


def _stored_path(reg: Registry, brand: str, version: str, name: str) -> str:
    return reg.store.path(brand, "versions", version, name)


def _flip_byte(reg: Registry, path: str, offset: int = -5) -> None:
    data = bytearray(reg.store.fs.cat_file(path))
    data[offset] ^= 0xFF
    reg.store.fs.pipe_file(path, bytes(data))


# -- publish / read back ----------------------------------------------------------------------------
def test_publish_records_metadata_and_is_listed(reg: Registry, adapter_dir: Path):
    info = _publish(reg, adapter_dir, extra={"run": "dvc-123"})
    assert isinstance(info, VersionInfo) and info.status == "published"
    import re

    assert re.fullmatch(VERSION_PATTERN, info.version)
    got = reg.get("aurora", info.version)
    assert got.metadata == info.metadata
    meta = got.metadata
    assert (meta.brand, meta.base_fingerprint, meta.data_hash) == ("aurora", FP, "data-abc")
    assert meta.params == {"rank": 4} and meta.metrics == {"fid": 12.5} and meta.extra == {"run": "dvc-123"}
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in adapter_dir.iterdir()}
    assert {e.name: e.sha256 for e in meta.files} == expected
    assert {e.name: e.size for e in meta.files} == {p.name: p.stat().st_size for p in adapter_dir.iterdir()}
    assert reg.list_brands() == ["aurora"]
    assert reg.list_versions("aurora") == [info.version]
    assert [e.action for e in reg.history("aurora")] == ["publish"]
    assert reg.verify("aurora", info.version).version == info.version


def test_versions_are_distinct_sorted_and_never_overwritten(reg: Registry, adapter_dir: Path):
    first = _publish(reg, adapter_dir)
    meta_path = _stored_path(reg, "aurora", first.version, "metadata.json")
    before = reg.store.fs.cat_file(meta_path)
    later = [_publish(reg, adapter_dir, metrics={"fid": float(i)}) for i in range(3)]
    versions = [first.version, *(v.version for v in later)]
    assert len(set(versions)) == 4
    assert reg.list_versions("aurora") == sorted(versions) == versions  # time-ordered ids
    assert reg.store.fs.cat_file(meta_path) == before
    assert reg.get("aurora", first.version).metadata.metrics == {"fid": 12.5}


def test_writing_into_an_existing_version_is_refused(reg: Registry, adapter_dir: Path, tmp_path: Path):
    first = _publish(reg, adapter_dir)
    other = tmp_path / "other"
    other.mkdir()
    save_file({"x": torch.ones(2)}, str(other / "adapter_model.safetensors"))
    with pytest.raises(VersionExists, match="immutable"):
        _publish(reg, other, version=first.version)
    reg.verify("aurora", first.version)  # untouched
    # An upload in progress (claimed, not committed) cannot be written by a second publisher either.
    claimed = new_version_id()
    reg.store.create(reg.store.path("aurora", "versions", claimed, ".claim"), b"{}")
    with pytest.raises(VersionExists, match="already being uploaded"):
        _publish(reg, other, version=claimed)
    assert reg.list_versions("aurora") == [first.version]


def test_read_weights_and_download_return_the_published_bytes(
    reg: Registry, adapter_dir: Path, tmp_path: Path
):
    from safetensors.torch import load_file

    info = _publish(reg, adapter_dir)
    weights = reg.read_weights("aurora", info.version, FP)
    original = load_file(str(adapter_dir / "adapter_model.safetensors"))
    assert weights.keys() == original.keys()
    for key in original:
        assert torch.equal(weights[key], original[key])
    dest = reg.download("aurora", info.version, tmp_path / "dl", expected_base_fingerprint=FP)
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "metadata.json",
    ]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (dest / name).read_bytes() == (adapter_dir / name).read_bytes()
    assert VersionMetadata.from_dict(json.loads((dest / "metadata.json").read_text())) == info.metadata


# -- integrity ----------------------------------------------------------------------------------------
def test_flipped_byte_is_refused_naming_the_file_and_both_hashes(
    reg: Registry, adapter_dir: Path, tmp_path: Path
):
    info = _publish(reg, adapter_dir)
    entry = info.metadata.file("adapter_model.safetensors")
    path = _stored_path(reg, "aurora", info.version, entry.name)
    _flip_byte(reg, path)
    actual = hashlib.sha256(reg.store.fs.cat_file(path)).hexdigest()
    for call in (
        lambda: reg.verify("aurora", info.version),
        lambda: reg.read_weights("aurora", info.version, FP),
        lambda: reg.download("aurora", info.version, tmp_path / "dl", expected_base_fingerprint=FP),
    ):
        with pytest.raises(AdapterIntegrityError) as err:
            call()
        message = str(err.value)
        assert "adapter_model.safetensors" in message and entry.sha256 in message and actual in message
    assert not (tmp_path / "dl" / "adapter_model.safetensors").exists()  # nothing unverified left behind
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".tmp-")] == []


def test_extra_or_missing_files_in_a_version_are_integrity_errors(reg: Registry, adapter_dir: Path):
    info = _publish(reg, adapter_dir)
    extra = _stored_path(reg, "aurora", info.version, "sneaky.safetensors")
    reg.store.fs.pipe_file(extra, b"x")
    with pytest.raises(AdapterIntegrityError, match="sneaky.safetensors"):
        reg.verify("aurora", info.version)
    reg.store.fs.rm_file(extra)
    reg.store.fs.rm_file(_stored_path(reg, "aurora", info.version, "adapter_config.json"))
    with pytest.raises(AdapterIntegrityError, match="adapter_config.json is missing"):
        reg.verify("aurora", info.version)


def test_fingerprint_mismatch_names_both_fingerprints(reg: Registry, adapter_dir: Path, tmp_path: Path):
    info = _publish(reg, adapter_dir)
    for call in (
        lambda: reg.read_weights("aurora", info.version, "other-base-fp"),
        lambda: reg.download(
            "aurora", info.version, tmp_path / "dl", expected_base_fingerprint="other-base-fp"
        ),
        lambda: reg.verify("aurora", info.version, expected_base_fingerprint="other-base-fp"),
    ):
        with pytest.raises(FingerprintMismatch) as err:
            call()
        assert FP in str(err.value) and "other-base-fp" in str(err.value)
    with pytest.raises(RegistryError, match="expected_base_fingerprint"):
        reg.read_weights("aurora", info.version, "")


# -- what may be published ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adapter.bin", "adapter.pt", "model.ckpt", "weights.pkl", "adapter.pth"])
def test_pickle_capable_weight_formats_are_refused(reg: Registry, adapter_dir: Path, name: str):
    (adapter_dir / name).write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(RegistryError, match=rf"{name}.*only \.safetensors"):
        _publish(reg, adapter_dir)
    assert reg.list_brands() == []


def test_a_pickle_renamed_to_safetensors_is_refused(reg: Registry, tmp_path: Path):
    src = tmp_path / "fake"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(RegistryError, match="not a valid safetensors file"):
        _publish(reg, src)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: (d / "adapter_model.safetensors").unlink(), "no .safetensors weights"),
        (lambda d: (d / "sub").mkdir(), "must be flat"),
        (lambda d: (d / "metadata.json").write_text("{}"), "reserved"),
        (lambda d: (d / ".hidden.json").write_text("{}"), "not allowed"),
        (lambda d: (d / "notes.exe").write_text("x"), "not accepted"),
        (lambda d: (d / "broken.json").write_text("{"), "not valid JSON"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_written(reg: Registry, adapter_dir: Path, setup, match):
    setup(adapter_dir)
    with pytest.raises(RegistryError, match=match):
        _publish(reg, adapter_dir)
    assert reg.store.listdir(reg.store.root) == []


def test_non_json_params_are_refused(reg: Registry, adapter_dir: Path):
    with pytest.raises(RegistryError, match="metrics must be JSON-serialisable"):
        _publish(reg, adapter_dir, metrics={"fid": float("nan")})
    with pytest.raises(RegistryError, match="params must be a dict"):
        _publish(reg, adapter_dir, params=[1, 2])


@pytest.mark.parametrize("brand", ["../x", "A B", "a/b", "", ".", "..", "Aurora", "x" * 41, "-lead", "a\\b"])
def test_bad_brand_ids_are_refused(reg: Registry, adapter_dir: Path, brand: str):
    with pytest.raises(RegistryError, match="brand id") as err:
        _publish(reg, adapter_dir, brand=brand)
    assert "^[a-z0-9][a-z0-9_-]{0,39}$" in str(err.value)
    for call in (reg.list_versions, reg.history, lambda b: reg.resolve(b, "production")):
        with pytest.raises(RegistryError, match="brand id"):
            call(brand)
    assert reg.store.listdir(reg.store.root) == []


@pytest.mark.parametrize("version", ["../../etc", "v1", "v0001", "production/../x"])
def test_malformed_version_ids_are_refused(reg: Registry, adapter_dir: Path, version: str):
    _publish(reg, adapter_dir)
    with pytest.raises(RegistryError, match="malformed"):
        reg.get("aurora", version)


# -- aliases ---------------------------------------------------------------------------------------
def test_promote_and_rollback_walk_back_through_production_history(reg: Registry, adapter_dir: Path):
    v1, v2, v3 = (_publish(reg, adapter_dir).version for _ in range(3))
    with pytest.raises(UnknownName, match="alias 'production' is not set.*versions:"):
        reg.resolve("aurora", "production")
    reg.promote("aurora", v1)
    reg.promote("aurora", v2)
    reg.promote("aurora", v2)  # no-op: already production, no event
    reg.promote("aurora", v3)
    assert reg.resolve("aurora", "production").version == v3
    assert reg.production_versions() == {"aurora": v3}
    assert reg.rollback("aurora").version == v2
    assert reg.resolve("aurora", "production").version == v2
    assert reg.rollback("aurora").version == v1
    with pytest.raises(RegistryError, match="no earlier production version"):
        reg.rollback("aurora")
    assert reg.resolve("aurora", "production").version == v1
    history = reg.history("aurora")
    sets = [(e.action, e.previous, e.version) for e in history if e.alias == "production"]
    assert sets == [
        ("set", None, v1),
        ("set", v1, v2),
        ("set", v2, v3),
        ("rollback", v3, v2),
        ("rollback", v2, v1),
    ]
    assert replay(history, "production") == [v1]


def test_candidate_then_promote_candidate_to_production(reg: Registry, adapter_dir: Path):
    v1, v2 = (_publish(reg, adapter_dir).version for _ in range(2))
    reg.promote("aurora", v1)
    reg.set_alias("aurora", "candidate", v2)
    assert reg.aliases("aurora") == {"candidate": v2, "production": v1}
    assert reg.promote("aurora", "candidate").version == v2
    assert reg.production_versions() == {"aurora": v2}
    with pytest.raises(RegistryError, match="allowed aliases: candidate, production"):
        reg.set_alias("aurora", "staging", v1)


def test_production_versions_covers_every_brand_with_production(reg: Registry, adapter_dir: Path):
    a = _publish(reg, adapter_dir, brand="aurora").version
    k = _publish(reg, adapter_dir, brand="kinetic").version
    _publish(reg, adapter_dir, brand="verdant")  # published, never promoted
    reg.promote("aurora", a)
    reg.promote("kinetic", k)
    assert reg.production_versions() == {"aurora": a, "kinetic": k}
    assert reg.list_brands() == ["aurora", "kinetic", "verdant"]


def test_rejected_version_is_listed_and_not_promoted_without_force(reg: Registry, adapter_dir: Path):
    good, bad = (_publish(reg, adapter_dir).version for _ in range(2))
    reg.promote("aurora", good)
    reg.set_alias("aurora", "candidate", bad)
    info = reg.reject("aurora", "candidate", ["fid 80 > 60", "brand judge 0.2 < 0.5"])
    assert info.version == bad and info.status == "rejected"
    assert reg.get("aurora", bad).reasons == ("fid 80 > 60", "brand judge 0.2 < 0.5")
    assert bad in reg.list_versions("aurora")
    with pytest.raises(RejectedVersion, match="fid 80 > 60.*force=True"):
        reg.promote("aurora", bad)
    with pytest.raises(RejectedVersion):
        reg.promote("aurora", "candidate")
    assert reg.resolve("aurora", "production").version == good
    reg.promote("aurora", bad, force=True)
    assert reg.resolve("aurora", "production").version == bad
    forced = [
        e for e in reg.history("aurora") if e.action == "set" and e.version == bad and e.alias == "production"
    ]
    assert len(forced) == 1 and forced[0].force
    rejects = [e for e in reg.history("aurora") if e.action == "reject"]
    assert [(e.version, e.reasons) for e in rejects] == [(bad, ("fid 80 > 60", "brand judge 0.2 < 0.5"))]
    with pytest.raises(RegistryError, match="non-empty list"):
        reg.reject("aurora", good, "a string is not a list")


def test_rollback_onto_a_rejected_version_needs_force(reg: Registry, adapter_dir: Path):
    v1, v2 = (_publish(reg, adapter_dir).version for _ in range(2))
    reg.promote("aurora", v1)
    reg.promote("aurora", v2)
    reg.reject("aurora", v1, ["found a data leak"])
    with pytest.raises(RejectedVersion, match="data leak"):
        reg.rollback("aurora")
    assert reg.resolve("aurora", "production").version == v2
    assert reg.rollback("aurora", force=True).version == v1


def test_unknown_names_list_the_allowed_values(reg: Registry, adapter_dir: Path):
    v1 = _publish(reg, adapter_dir).version
    _publish(reg, adapter_dir, brand="kinetic")
    with pytest.raises(
        UnknownName, match="brand 'nobody' has no published versions.*brands: aurora, kinetic"
    ):
        reg.resolve("nobody", "production")
    missing = new_version_id()
    with pytest.raises(UnknownName, match=rf"no version '{missing}'; versions: {v1}"):
        reg.get("aurora", missing)
    with pytest.raises(UnknownName, match=rf"neither an alias nor a version.*candidate, production.*{v1}"):
        reg.resolve("aurora", "latest")


# -- crashes and gc ----------------------------------------------------------------------------------
class _Crash(Exception):
    pass


def test_interrupted_publish_is_invisible_and_collected_by_gc(reg: Registry, adapter_dir: Path):
    v1 = _publish(reg, adapter_dir).version
    reg.promote("aurora", v1)
    save_file({"big": torch.zeros(64)}, str(adapter_dir / "z_second.safetensors"))

    def crash(name: str, done: int, total: int) -> None:
        if name == "z_second.safetensors":
            raise _Crash

    with pytest.raises(_Crash):
        _publish(reg, adapter_dir, progress=crash)
    partial = [e["name"] for e in reg.store.listdir(reg.store.path("aurora", "versions"))]
    assert len(partial) == 2  # the abandoned upload is on storage...
    assert reg.list_versions("aurora") == [v1]  # ...but not visible
    assert reg.resolve("aurora", "production").version == v1
    assert reg.gc(3600) == []  # too young to collect
    assert reg.gc(0, dry_run=True) and len(reg.store.listdir(reg.store.path("aurora", "versions"))) == 2
    removed = reg.gc(0)
    assert len(removed) == 1 and v1 not in removed[0]
    assert [e["name"] for e in reg.store.listdir(reg.store.path("aurora", "versions"))] == [v1]
    reg.verify("aurora", "production")
    assert len(reg.list_versions("aurora")) == 1
    assert _publish(reg, adapter_dir).version in reg.list_versions("aurora")
    # A brand whose only publish crashed does not exist for readers.
    with pytest.raises(_Crash):
        _publish(reg, adapter_dir, brand="kinetic", progress=crash)
    assert reg.list_brands() == ["aurora"]
    assert reg.production_versions() == {"aurora": v1}
    with pytest.raises(UnknownName, match="brand 'kinetic' has no published versions.*brands: aurora"):
        reg.list_versions("kinetic")


def test_gc_removes_old_temp_files_only(tmp_path: Path, adapter_dir: Path):
    reg = Registry(str(tmp_path / "registry"))
    v1 = _publish(reg, adapter_dir).version
    reg.promote("aurora", v1)
    stale = (
        tmp_path / "registry" / "aurora" / "aliases" / ".tmp-20200101T000000.000000Z-deadbeef-production.json"
    )
    stale.write_text("{")
    import os

    os.utime(stale, (946684800, 946684800))
    assert reg.gc(3600) == [str(stale)]
    assert not stale.exists()
    assert reg.resolve("aurora", "production").version == v1


def test_gc_rejects_negative_threshold(reg: Registry):
    with pytest.raises(RegistryError, match="older_than_s"):
        reg.gc(-1)


# -- metadata documents ------------------------------------------------------------------------------
def test_metadata_round_trips_and_refuses_unknown_keys(reg: Registry, adapter_dir: Path):
    info = _publish(reg, adapter_dir)
    assert VersionMetadata.from_dict(info.metadata.to_dict()) == info.metadata
    assert VersionInfo.from_dict(info.to_dict()) == info
    with pytest.raises(RegistryError, match="unknown keys \\['surprise'\\]"):
        VersionMetadata.from_dict({**info.metadata.to_dict(), "surprise": 1})
    event = reg.history("aurora")[0]
    assert Event.from_dict(event.to_dict()) == event


def test_corrupt_metadata_is_an_integrity_error(reg: Registry, adapter_dir: Path):
    info = _publish(reg, adapter_dir)
    reg.store.fs.pipe_file(_stored_path(reg, "aurora", info.version, "metadata.json"), b"{not json")
    with pytest.raises(AdapterIntegrityError, match="metadata.json is unreadable"):
        reg.get("aurora", info.version)


# -- CLI ---------------------------------------------------------------------------------------------
def _bgp(*args: str) -> int:
    return cli.main(["--params", str(REPO / "params.yaml"), "registry", *args])


def test_cli_publish_promote_resolve_verify(tmp_path: Path, adapter_dir: Path, capsys):
    root = str(tmp_path / "registry")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"fid": 3.0}))
    assert _bgp("publish", "aurora", str(adapter_dir), "--root", root, "--base-fingerprint", FP,
                "--data-hash", "d1", "--metrics", str(metrics)) == 0  # fmt: skip
    version = capsys.readouterr().out.strip()
    assert Registry(root).get("aurora", version).metadata.metrics == {"fid": 3.0}
    assert _bgp("promote", "aurora", version, "--root", root) == 0
    capsys.readouterr()
    assert _bgp("resolve", "aurora", "--root", root) == 0
    assert capsys.readouterr().out.strip() == version
    assert _bgp("list", "--root", root) == 0
    assert f"production={version}" in capsys.readouterr().out
    assert _bgp("list", "aurora", "--root", root, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["version"] == version and rows[0]["aliases"] == ["production"]
    assert _bgp("verify", "aurora", "--root", root, "--base-fingerprint", FP) == 0
    assert "OK" in capsys.readouterr().out
    assert _bgp("verify", "aurora", "--root", root, "--base-fingerprint", "other") == 4
    assert "other" in capsys.readouterr().err
    assert _bgp("resolve", "nobody", "--root", root) == 2
    assert "brands: aurora" in capsys.readouterr().err
    assert _bgp("history", "aurora", "--root", root) == 0
    assert f"production: - -> {version}" in capsys.readouterr().out


def test_cli_root_defaults_to_env(tmp_path: Path, adapter_dir: Path, monkeypatch, capsys):
    root = tmp_path / "from-env"
    monkeypatch.setenv("BGP_REGISTRY", str(root))
    assert _bgp("publish", "kinetic", str(adapter_dir / "adapter_model.safetensors"),
                "--base-fingerprint", FP, "--data-hash", "d") == 0  # fmt: skip
    assert Registry(str(root)).list_brands() == ["kinetic"]
    assert _bgp("gc", "--older-than", "0") == 0
    assert "removed 0 item(s)" in capsys.readouterr().out
