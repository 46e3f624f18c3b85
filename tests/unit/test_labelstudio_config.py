"""Labeling config builder, brush RLE round trip through the SDK's converter, annotation decoding,
and credential resolution (no server needed)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from bg_platform.data import labelstudio as ls
from bg_platform.errors import DataError


def test_label_config_has_every_control_wired_to_the_image():
    xml = ls.build_label_config(["marble", "fabric sofa"])
    root = ET.fromstring(xml)
    image = root.find("Image")
    assert image.get("name") == ls.IMAGE and image.get("value") == f"${ls.IMAGE}"
    brush = root.find("BrushLabels")
    assert brush.get("name") == ls.MASK and brush.get("toName") == ls.IMAGE
    assert [lab.get("value") for lab in brush.iter("Label")] == [ls.PRODUCT_LABEL]
    choices = root.find("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == (
        ls.CATEGORY,
        ls.IMAGE,
        "single",
    )
    assert choices.get("required") == "true"
    text = root.find("TextArea")
    assert (text.get("name"), text.get("toName")) == (ls.STYLE, ls.IMAGE)
    assert root.find("Text").get("value") == f"${ls.BRAND}"
    assert ls.config_categories(xml) == ["marble", "fabric sofa"]


@pytest.mark.parametrize(
    ("categories", "match"),
    [
        ([], "give 1\\+ names"),
        (["Marble"], "'Marble'"),
        (['a"b'], "invalid"),
        (["wood", "wood"], "more than once"),
    ],
)
def test_label_config_rejects_bad_categories(categories, match):
    with pytest.raises(DataError, match=match):
        ls.build_label_config(categories)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (40, 56), (64, 64)])
@pytest.mark.parametrize("kind", ["random", "empty", "full", "rect"])
def test_brush_rle_round_trip_is_exact(shape, kind):
    rng = np.random.default_rng(sum(shape))
    mask = {
        "random": lambda: np.where(rng.random(shape) < 0.3, 255, 0).astype(np.uint8),
        "empty": lambda: np.zeros(shape, np.uint8),
        "full": lambda: np.full(shape, 255, np.uint8),
        "rect": lambda: np.pad(np.full((shape[0] // 2, shape[1] // 2), 255, np.uint8),
                               ((0, shape[0] - shape[0] // 2), (0, shape[1] - shape[1] // 2))),
    }[kind]()  # fmt: skip
    result = ls.brush_result(mask)
    assert (result["original_width"], result["original_height"]) == (shape[1], shape[0])
    assert all(isinstance(v, int) for v in result["value"]["rle"])  # JSON-serialisable for the API
    np.testing.assert_array_equal(ls.decode_brush(result), mask)


def test_decode_annotation_unions_strokes_and_reads_category_and_notes():
    a = np.zeros((10, 12), np.uint8)
    a[1:4, 1:4] = 255
    b = np.zeros((10, 12), np.uint8)
    b[5:9, 6:11] = 255
    result = [
        ls.brush_result(a),
        ls.brush_result(b),
        ls.choice_result("wood"),
        ls.text_result(" oak, soft light "),
    ]
    mask, category, caption, problems = ls.decode_annotation(result, 12, 10)
    np.testing.assert_array_equal(mask, np.maximum(a, b))
    assert (category, caption, problems) == ("wood", "oak, soft light", [])


def test_decode_annotation_reports_every_problem():
    zeros = np.zeros((10, 12), np.uint8)
    _, _, _, problems = ls.decode_annotation([ls.brush_result(zeros)], 12, 10)
    assert problems == ["empty brush mask", "missing category"]
    mask, _, _, problems = ls.decode_annotation([ls.choice_result("wood")], 12, 10)
    assert problems == ["no brush mask"] and mask.shape == (10, 12) and not mask.any()
    ones = np.full((8, 8), 255, np.uint8)
    mask, _, _, problems = ls.decode_annotation([ls.brush_result(ones), ls.choice_result("wood")], 12, 10)
    assert problems == ["brush drawn on a 8x8 image but the image is 12x10"] and not mask.any()
    broken = ls.brush_result(ones)
    broken["value"]["rle"] = broken["value"]["rle"][:3]
    _, _, _, problems = ls.decode_annotation([broken, ls.choice_result("wood")], 8, 8)
    assert len(problems) == 1 and problems[0].startswith("brush RLE cannot be decoded")


def test_brush_result_rejects_non_uint8_masks():
    with pytest.raises(DataError, match="uint8"):
        ls.brush_result(np.zeros((4, 4), np.float32))


def test_credentials_from_env(monkeypatch):
    monkeypatch.setenv("BGP_LS_URL", "http://ls.internal:9000/")
    monkeypatch.setenv("BGP_LS_TOKEN", "tok-123456")
    assert ls.resolve_credentials() == ("http://ls.internal:9000", "tok-123456")
    monkeypatch.delenv("BGP_LS_URL")
    assert ls.resolve_credentials() == ("http://127.0.0.1:8081", "tok-123456")


def test_credentials_from_airflow_connection_then_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_HOME", str(tmp_path)
    )  # set before the import: importing airflow creates its home
    pytest.importorskip("airflow.sdk")
    monkeypatch.delenv("BGP_LS_URL", raising=False)
    monkeypatch.delenv("BGP_LS_TOKEN", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_LABEL_STUDIO",
        '{"conn_type": "http", "host": "ls.internal", "port": 8081, "password": "tok-af"}',
    )
    assert ls.resolve_credentials() == ("http://ls.internal:8081", "tok-af")
    monkeypatch.delenv("AIRFLOW_CONN_LABEL_STUDIO")
    with pytest.raises(ls.LabelStudioError, match="BGP_LS_TOKEN.*AIRFLOW_CONN_LABEL_STUDIO"):
        ls.resolve_credentials()


def test_server_env_drops_what_label_studio_would_read_unprefixed(monkeypatch, tmp_path):
    from bg_platform.orchestration.labelstudio_server import server_env

    leaks = {"USERNAME": "x", "PASSWORD": "x", "PORT": "1", "HOST": "http://evil", "SECRET_KEY": "k", "DEBUG": "1",
             "DJANGO_DB": "mysql", "LABEL_STUDIO_DATABASE_NAME": "/elsewhere.db", "BGP_LS_TOKEN": "t"}  # fmt: skip
    for k, v in leaks.items():
        monkeypatch.setenv(k, v)
    env = server_env(tmp_path / "d", tmp_path / "f", "admin@bg.local", None, "tok-123456", None)
    assert not set(leaks) - {"LABEL_STUDIO_DATABASE_NAME"} & set(env)
    assert env["LABEL_STUDIO_DATABASE_NAME"] == str(tmp_path / "d" / "label_studio.sqlite3")
    assert env["LABEL_STUDIO_USERNAME"] == "admin@bg.local" and "LABEL_STUDIO_PASSWORD" not in env
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true" and env["PATH"] == os.environ["PATH"]
