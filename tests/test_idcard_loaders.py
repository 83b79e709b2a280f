"""Unit tests of ID-card dataset loading: every source gives the canonical schema, real data derived truth."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.errors import DatasetError
from raypipe.evaluate.driver import dataset_fingerprint
from raypipe.tasks.idcard.generator import generate_dataset, write_dataset
from raypipe.tasks.idcard.loaders import load_dataset
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA, SLICE_ATTRIBUTES, TRUTH_FIELDS, normalise_box
from raypipe.tasks.idcard.task import IdCardTask
from raypipe.tasks.idcard.truth import derive_truth

TRUTH_COLUMNS = [f"truth_{field}" for field in TRUTH_FIELDS]


@pytest.fixture(scope="module")
def cards() -> pa.Table:
    return generate_dataset("mixed", 50, seed=3)


def _words(row: dict) -> list[str]:
    return [entry["word"] for entry in row["ocr"]]


def _hub_export(table: pa.Table, flat_boxes: bool = False) -> pa.Table:
    """The table as the public dataset stores it: only `image` and `ocr`, with a `cls` key per word."""
    ocr = []
    for entries in table.column("ocr").to_pylist():
        words = []
        for entry in entries:
            (x1, y1), _, (x2, y2), _ = entry["box"]
            box = [x1, y1, x2, y2] if flat_boxes else entry["box"]
            words.append({"box": box, "cls": 0, "word": entry["word"]})
        ocr.append(words)
    return pa.table({"image": table.column("image"), "ocr": ocr})


def test_truth_derived_from_the_words_equals_the_generators_truth(cards):
    for row in cards.to_pylist():
        assert derive_truth(_words(row)) == {field: row[f"truth_{field}"] for field in TRUTH_FIELDS}


def test_truth_is_derived_from_bare_values_without_labels():
    words = ["张三", "男", "蒙古", "1990", "1", "5", "北京市朝阳区", "中山路1号", "11010519900105003X"]
    assert derive_truth(words) == {
        "name": "张三",
        "sex": "男",
        "ethnicity": "蒙古",
        "birth_date": "1990-01-05",
        "id_number": "11010519900105003X",
        "address": "北京市朝阳区中山路1号",
    }


def test_truth_is_derived_from_labels_glued_to_values():
    words = [
        "姓名张三",
        "性别女民族汉",
        "出生1990年1月5日",
        "住址北京市朝阳区",
        "中山路1号",
        "公民身份号码11010519900105003X",
    ]
    truth = derive_truth(words)
    assert (truth["name"], truth["sex"], truth["birth_date"]) == ("张三", "女", "1990-01-05")
    assert truth["address"] == "北京市朝阳区中山路1号"


def test_truth_fields_the_words_do_not_state_are_none():
    assert derive_truth(["@@", "??"]) == dict.fromkeys(TRUTH_FIELDS)


def test_generated_parquet_loads_back_unchanged(cards, tmp_path: Path):
    path = write_dataset(cards, tmp_path / "cards.parquet")
    loaded = load_dataset(str(path))
    assert loaded.schema == CANONICAL_SCHEMA
    assert loaded.equals(cards)


def test_limit_reads_only_the_first_items(cards, tmp_path: Path):
    path = write_dataset(cards, tmp_path / "cards.parquet")
    loaded = load_dataset(str(path), limit=7)
    assert loaded.column("item_id").to_pylist() == cards.column("item_id").to_pylist()[:7]


def test_a_downloaded_hub_folder_loads_with_ids_truth_and_real_profile(cards, tmp_path: Path):
    export = _hub_export(cards)
    (tmp_path / "data").mkdir()
    pq.write_table(export.slice(0, 30), tmp_path / "data" / "train-00000-of-00002.parquet")
    pq.write_table(export.slice(30), tmp_path / "data" / "train-00001-of-00002.parquet")
    loaded = load_dataset(str(tmp_path))
    assert loaded.schema == CANONICAL_SCHEMA
    assert loaded.column("item_id").to_pylist() == [f"row-{i:06d}" for i in range(50)]
    carried = [*TRUTH_COLUMNS, "truth_text", "image", "ocr"]
    assert loaded.select(carried).equals(cards.select(carried))
    assert set(loaded.column("profile").to_pylist()) == {"real"}
    assert all(loaded.column(name).null_count == 50 for name in SLICE_ATTRIBUTES if name != "profile")


def test_limit_spans_several_parquet_files(cards, tmp_path: Path):
    export = _hub_export(cards)
    pq.write_table(export.slice(0, 4), tmp_path / "part-a.parquet")
    pq.write_table(export.slice(4), tmp_path / "part-b.parquet")
    assert load_dataset(str(tmp_path), limit=10).num_rows == 10


def test_limit_stops_reading_before_later_files(cards, tmp_path: Path):
    pq.write_table(_hub_export(cards.slice(0, 4)), tmp_path / "part-a.parquet")
    (tmp_path / "part-b.parquet").write_bytes(b"not parquet at all")
    assert load_dataset(str(tmp_path), limit=3).num_rows == 3
    with pytest.raises(DatasetError, match=r"cannot read Parquet file .*part-b\.parquet"):
        load_dataset(str(tmp_path))


def test_two_point_boxes_become_four_points(cards, tmp_path: Path):
    pq.write_table(_hub_export(cards.slice(0, 2), flat_boxes=True), tmp_path / "flat.parquet")
    loaded = load_dataset(str(tmp_path / "flat.parquet"))
    (x1, y1), _, (x2, y2), _ = cards.column("ocr")[0][0]["box"].as_py()
    assert loaded.column("ocr")[0][0]["box"].as_py() == [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


@pytest.mark.parametrize(
    ("box", "points"),
    [
        ([1, 2, 3, 4], [[1, 2], [3, 2], [3, 4], [1, 4]]),
        ([1, 2, 3, 2, 3, 4, 1, 4], [[1, 2], [3, 2], [3, 4], [1, 4]]),
        ([[1, 2], [3, 4]], [[1, 2], [3, 2], [3, 4], [1, 4]]),
        ([[1, 2], [3, 2], [3, 4], [1, 4]], [[1, 2], [3, 2], [3, 4], [1, 4]]),
    ],
)
def test_normalise_box_accepts_every_encoding(box, points):
    assert normalise_box(box) == points


def test_normalise_box_rejects_other_shapes():
    with pytest.raises(ValueError, match="unrecognised box encoding"):
        normalise_box([1, 2, 3])


def test_an_ocr_column_stored_as_json_text_is_read(cards, tmp_path: Path):
    ocr = [json.dumps(entries, ensure_ascii=False) for entries in cards.slice(0, 2).column("ocr").to_pylist()]
    pq.write_table(pa.table({"image": cards.column("image").slice(0, 2), "ocr": ocr}), tmp_path / "j.parquet")
    loaded = load_dataset(str(tmp_path / "j.parquet"))
    assert loaded.column("ocr").equals(cards.slice(0, 2).column("ocr"))
    assert loaded.column("truth_id_number").equals(cards.slice(0, 2).column("truth_id_number"))


def test_a_malformed_box_names_the_problem(cards, tmp_path: Path):
    raw = pa.table(
        {"image": cards.column("image").slice(0, 1), "ocr": [[{"word": "x", "box": [1.0, 2.0, 3.0]}]]}
    )
    pq.write_table(raw, tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match='malformed "ocr" entry: unrecognised box encoding'):
        load_dataset(str(tmp_path / "bad.parquet"))


def _write_labelled_folder(cards: pa.Table, folder: Path) -> None:
    for index, row in enumerate(cards.slice(0, 3).to_pylist()):
        stem = f"card{index}"
        (folder / f"{stem}.{row['image']['path'].rsplit('.', 1)[1]}").write_bytes(row["image"]["bytes"])
        label: dict = {"ocr": row["ocr"]}
        if index == 0:
            label.update(truth={"name": "不同"}, profile="scanner", rotation=90)
        (folder / f"{stem}.json").write_text(json.dumps(label, ensure_ascii=False), encoding="utf-8")
    (folder / "orphan.json").write_text('{"ocr": []}', encoding="utf-8")  # no image: skipped


def test_a_folder_of_images_with_json_labels_loads(cards, tmp_path: Path):
    _write_labelled_folder(cards, tmp_path)
    loaded = load_dataset(str(tmp_path)).to_pylist()
    assert [row["item_id"] for row in loaded] == ["card0", "card1", "card2"]
    first, second = loaded[0], loaded[1]
    assert (first["truth_name"], first["profile"], first["rotation"]) == ("不同", "scanner", 90)
    assert first["truth_id_number"] == cards.column("truth_id_number")[0].as_py()  # the rest derived
    assert (second["truth_name"], second["profile"], second["rotation"]) == (
        cards.column("truth_name")[1].as_py(),
        "real",
        None,
    )
    assert second["image"]["bytes"] == cards.column("image")[1]["bytes"].as_py()


def test_a_label_without_ocr_is_reported(cards, tmp_path: Path):
    (tmp_path / "card.png").write_bytes(cards.column("image")[0]["bytes"].as_py())
    (tmp_path / "card.json").write_text('{"words": []}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"card\.json needs an \"ocr\" list"):
        load_dataset(str(tmp_path))


def test_a_missing_path_says_how_to_make_a_dataset(tmp_path: Path):
    missing = tmp_path / "nowhere.parquet"
    with pytest.raises(DatasetError, match=r"dataset not found: .*nowhere\.parquet.*raypipe data generate"):
        load_dataset(str(missing))


def test_an_empty_dataset_is_an_error(cards, tmp_path: Path):
    write_dataset(cards.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match="is empty"):
        load_dataset(str(tmp_path / "empty.parquet"))


def test_a_folder_without_data_is_an_error(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match=r"holds no data/train-\*\.parquet"):
        load_dataset(str(tmp_path))


def test_a_limit_below_one_and_a_file_that_is_not_parquet_are_errors(cards, tmp_path: Path):
    path = write_dataset(cards.slice(0, 2), tmp_path / "cards.parquet")
    with pytest.raises(DatasetError, match="dataset limit must be at least 1, got 0"):
        load_dataset(str(path), limit=0)
    (tmp_path / "cards.csv").write_text("image,ocr\n")
    with pytest.raises(DatasetError, match=r"cards\.csv is not a Parquet file"):
        load_dataset(str(tmp_path / "cards.csv"))


def test_a_bare_binary_image_column_becomes_the_image_struct(cards, tmp_path: Path):
    images = [image["bytes"] for image in cards.slice(0, 2).column("image").to_pylist()]
    pq.write_table(
        pa.table({"image": images, "ocr": cards.slice(0, 2).column("ocr")}), tmp_path / "b.parquet"
    )
    loaded = load_dataset(str(tmp_path / "b.parquet"))
    assert loaded.column("image").to_pylist() == [{"bytes": data, "path": None} for data in images]
    assert loaded.column("truth_id_number").equals(cards.slice(0, 2).column("truth_id_number"))


def test_a_table_without_ocr_names_the_columns_it_has(cards, tmp_path: Path):
    pq.write_table(pa.table({"image": cards.column("image").slice(0, 1)}), tmp_path / "no-ocr.parquet")
    with pytest.raises(DatasetError, match=r"needs `image` and `ocr` columns; this one has \['image'\]"):
        load_dataset(str(tmp_path / "no-ocr.parquet"))


def test_duplicate_item_ids_are_an_error(cards, tmp_path: Path):
    doubled = pa.concat_tables([cards.slice(0, 2), cards.slice(0, 2)])
    write_dataset(doubled, tmp_path / "dup.parquet")
    with pytest.raises(DatasetError, match="nulls or duplicates"):
        load_dataset(str(tmp_path / "dup.parquet"))


def test_hub_source_without_the_datasets_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DatasetError, match="needs the `datasets` package: `pip install datasets`"):
        load_dataset("hf:lansinuote/ocr_id_card")


def test_hub_source_offline_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DatasetError, match="may be offline"):
        load_dataset("hf:lansinuote/ocr_id_card", limit=5)


def test_fingerprint_is_stable_and_sensitive_to_ids_and_images(cards):
    task = IdCardTask()
    fingerprint = dataset_fingerprint(task, cards)
    assert fingerprint == dataset_fingerprint(task, pa.Table.from_batches(cards.to_batches(max_chunksize=7)))
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    renamed = cards.set_column(0, "item_id", pa.array([f"x{i}" for i in range(cards.num_rows)]))
    assert dataset_fingerprint(task, renamed) != fingerprint
    assert dataset_fingerprint(task, cards.slice(0, 49)) != fingerprint
    images = cards.column("image").to_pylist()
    images[0], images[1] = images[1], images[0]
    swapped = cards.set_column(1, "image", pa.array(images, type=cards.schema.field("image").type))
    assert dataset_fingerprint(task, swapped) != fingerprint


def test_fingerprint_hashes_each_id_the_input_length_and_its_bytes():
    # Pinned: a run's manifest is compared with older runs' by this value, so its format must not drift.
    # sha256("a" + (2).to_bytes(8, "little") + b"xy" + "b" + (0).to_bytes(8, "little"))[:16]
    images = pa.array([{"bytes": b"xy", "path": "a.png"}, {"bytes": None, "path": None}])
    table = pa.table({"item_id": ["a", "b"], "image": images})
    assert dataset_fingerprint(IdCardTask(), table) == "5dba88c171efe1a5"
