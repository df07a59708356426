"""The field's video datasets in their official layouts, on generated trees of real files:
class folders, HMDB51, Kinetics and Something-Something v2, each with its traps."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, get_args, get_type_hints

import pytest

from bwssl.cli import main
from bwssl.config import ConfigError, DataConfig, load_config
from bwssl.data import build_dataset
from bwssl.data.build import VIDEO_DATASETS, index_dataset
from bwssl.errors import DataError

if TYPE_CHECKING:
    from conftest import VideoKit

FRAMES = 10  # every generated video; clips of 4 frames at stride 2 span 8


def _cfg(name: str, root: Path, **overrides: object) -> DataConfig:
    kwargs: dict[str, object] = dict(
        name=name,
        root=str(root),
        num_frames=4,
        frame_stride=2,
        crop_size=32,
        cache_dir=str(root.parent / f"{root.name}-cache"),
        eval_fraction=1.0,
    )
    kwargs.update(overrides)
    return DataConfig(**kwargs)  # type: ignore[arg-type]


def _summary_cli(name: str, root: Path, capsys, *extra: str) -> dict:
    args = ["data", "summary", name, "--root", str(root), "--num-frames", "4"]
    assert main([*args, "--frame-stride", "2", *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_video_dataset_name_is_a_data_name():
    assert set(VIDEO_DATASETS) <= set(get_args(get_type_hints(DataConfig)["name"]))


def test_a_new_layout_needs_a_root_and_no_frame_folders():
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config("tiny-debug", ["data.name=kinetics"])
    with pytest.raises(ConfigError, match=r"data\.frames_root"):
        DataConfig(name="hmdb51", root="r", frames_root="f")


# --- folder: ROOT/<class>/<video> -----------------------------------------------------------


@pytest.fixture(scope="module")
def own_tree(tmp_path_factory, videos: VideoKit) -> Path:
    root = tmp_path_factory.mktemp("own") / "clips"
    for cls, names in {"cat": ["a.mp4", "b.avi", "c.mkv"], "dog": ["d.avi", "e.webm"]}.items():
        for name in names:
            codec = {"mp4": "libx264", "webm": "libvpx"}.get(name.split(".")[1], "mpeg4")
            videos.write(root / cls / name, FRAMES, codec)
    (root / "dog" / "broken.avi").write_bytes(b"not a video" * 50)
    (root / "dog" / "notes.txt").write_text("not listed")
    return root


def test_folder_without_lists_splits_each_class_by_name(own_tree: Path, capsys):
    s = _summary_cli("folder", own_tree, capsys)
    assert (s["classes"], s["class_names"]) == (2, ["cat", "dog"])
    # per class, the last fifth by name (at least one) is test: cat c.mkv, dog e.webm
    assert (s["train_videos"], s["test_videos"], s["unreadable"]) == (3, 2, 1)
    assert s["unreadable_files"][0].startswith("dog/broken.avi")
    test = build_dataset(_cfg("folder", own_tree, max_unreadable_fraction=0.5), "test")
    assert sorted(Path(p).name for p in test.paths) == ["c.mkv", "e.webm"]
    assert test.labels.tolist() == [0, 1] and test[1][0].shape == (3, 4, 32, 32)


def test_folder_split_lists_with_crlf_and_a_missing_file(own_tree: Path, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_bytes(b"cat/a.mp4\r\nCAT/B.avi 1\r\ndog/d.avi\r\n\r\n")
    (lists / "test.txt").write_bytes(b"cat/c.mkv\r\ndog/e.webm\r\ndog/gone.avi\r\n")
    cfg = _cfg("folder", own_tree, split_dir=str(lists))
    s = index_dataset(cfg, progress=False).summary()
    assert (s["train_videos"], s["test_videos"], s["missing"]) == (3, 2, 1)
    assert s["missing_files"] == ["dog/gone.avi"]
    with pytest.raises(DataError, match=r"1 of 6 videos.*dog/gone\.avi.*allow_missing"):
        build_dataset(cfg, "train")
    (lists / "test.txt").write_text("cat/c.mkv\nbird/x.avi\n")
    with pytest.raises(DataError, match=r"bird/x\.avi"):
        index_dataset(cfg, progress=False)


# --- hmdb51 ---------------------------------------------------------------------------------

HMDB = {
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1), ("Blonde_brush_hair_f_nm_np2_le_goo_1.avi", 2), ("Brushing_hair_u_cm_np1_fr_med_2.avi", 0)],
    "ride_bike": [("Bike_ride_f_cm_np1_ba_med_0.avi", 1), ("Bike_ride_f_cm_np1_ba_med_1.avi", 1), ("Missing_ride_bike_0.avi", 2), ("Bike_ride_u_cm_np1_fr_bad_3.avi", 2)],
}  # fmt: skip


@pytest.fixture(scope="module")
def hmdb_tree(tmp_path_factory, videos: VideoKit) -> Path:
    root = tmp_path_factory.mktemp("hmdb") / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cls, items in HMDB.items():
        for name, _ in items:
            if not name.startswith("Missing"):
                videos.write(root / "hmdb51_org" / cls / name, FRAMES)
        for k in (1, 2):  # split 2 swaps train and test
            lines = [f"{n} {m if k == 1 else {1: 2, 2: 1, 0: 0}[m]} \r\n" for n, m in items]
            (splits / f"{cls}_test_split{k}.txt").write_text("".join(lines), newline="")
    return root


def test_hmdb51_split_files_marks(hmdb_tree: Path, capsys):
    s = _summary_cli("hmdb51", hmdb_tree, capsys, "--split", "1")
    assert s["class_names"] == ["brush_hair", "ride_bike"]
    # mark 0 is left out; the listed file that is not on disk is missing
    assert (s["train_videos"], s["test_videos"], s["missing"]) == (3, 2, 1)
    assert s["missing_files"] == ["ride_bike/Missing_ride_bike_0.avi"]
    assert s["base"] == str(hmdb_tree / "hmdb51_org")
    s2 = _summary_cli("hmdb51", hmdb_tree, capsys, "--split", "2")
    assert (s2["train_videos"], s2["test_videos"]) == (2, 3)
    ds = build_dataset(_cfg("hmdb51", hmdb_tree, allow_missing=True), "train")
    assert ds.labels.tolist() == [0, 1, 1] and ds[(0, 7)][0].shape == (3, 4, 32, 32)


def test_hmdb51_without_split_files_says_what_it_needs(tmp_path):
    (tmp_path / "brush_hair").mkdir()
    with pytest.raises(DataError, match=r"_test_split1\.txt"):
        index_dataset(_cfg("hmdb51", tmp_path), progress=False)


# --- kinetics -------------------------------------------------------------------------------

KINETICS = [  # label, youtube_id, start, end, split, where the clip is (None: taken down)
    ("abseiling", "--33Lscn6sk", 4, 14, "train", "flat"),
    ("abseiling", "-0bOKCbCCY0", 12, 22, "train", "flat"),
    ('passing, "American" football', "0aXy_5xU-Ko", 100, 110, "train", "class"),
    ('passing, "American" football', "Gone0000000", 0, 10, "train", None),
    ("abseiling", "3caPS4FHFF8", 36, 46, "validate", "class"),
    ('passing, "American" football', "5LSqWZv9HNY", 5, 15, "validate", "flat"),
]


@pytest.fixture(scope="module")
def kinetics_tree(tmp_path_factory, videos: VideoKit) -> Path:
    root = tmp_path_factory.mktemp("kinetics") / "k700"
    (root / "annotations").mkdir(parents=True)
    for split, folder in (("train", "train"), ("validate", "val")):
        with (root / "annotations" / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for label, yid, start, end, s, where in KINETICS:
                if s == split:
                    w.writerow([label, yid, start, end, s])
                    name = f"{yid}_{start:06d}_{end:06d}.mp4"
                    if where == "flat":
                        videos.write(root / folder / name, FRAMES, "libx264")
                    elif where == "class":
                        videos.write(root / folder / label / name, FRAMES, "libx264")
    return root


def test_kinetics_csv_and_clip_names(kinetics_tree: Path, capsys):
    s = _summary_cli("kinetics", kinetics_tree, capsys)
    assert s["class_names"] == ["abseiling", 'passing, "American" football']
    assert (s["train_videos"], s["test_videos"], s["missing"]) == (3, 2, 1)
    assert s["missing_files"] == ["Gone0000000_000000_000010"]
    train = build_dataset(_cfg("kinetics", kinetics_tree), "train")  # missing: not fatal
    assert train.labels.tolist() == [0, 0, 1]
    assert Path(train.paths[0]).name == "--33Lscn6sk_000004_000014.mp4"
    assert train[2][0].shape == (3, 4, 32, 32)


def test_kinetics_without_any_clip_is_refused(kinetics_tree: Path, tmp_path):
    cfg = _cfg("kinetics", tmp_path, split_dir=str(kinetics_tree / "annotations"))
    with pytest.raises(DataError, match="train/ and val/"):
        index_dataset(cfg, progress=False)


# --- something-something v2 -----------------------------------------------------------------

SSV2_CLASSES = [
    "Holding something next to something",
    "Lifting up one end of something, then letting it drop down",
    "Putting something/someone onto something",
]
SSV2 = [  # id, class index, split (None as id: a missing file)
    ("101", 0, "train"),
    ("102", 1, "train"),
    ("103", 2, "train"),
    ("104", 1, "validation"),
    ("105", 2, "validation"),
    ("106", 0, "validation"),
]


def _template(name: str) -> str:
    return name.replace("something", "[something]").replace("someone", "[someone]")


@pytest.fixture(scope="module")
def ssv2_tree(tmp_path_factory, videos: VideoKit) -> Path:
    root = tmp_path_factory.mktemp("ssv2") / "ssv2"
    (root / "labels").mkdir(parents=True)
    labels = {name: str(i) for i, name in enumerate(SSV2_CLASSES)}
    (root / "labels" / "labels.json").write_text(json.dumps(labels))
    for split in ("train", "validation"):
        items = [
            {"id": vid, "label": "x", "template": _template(SSV2_CLASSES[c]), "placeholders": []}
            for vid, c, s in SSV2
            if s == split
        ]
        (root / "labels" / f"{split}.json").write_text(json.dumps(items))
    for vid, _, _ in SSV2:
        if vid != "106":
            videos.write(root / "20bn-something-something-v2" / f"{vid}.webm", FRAMES, "libvpx")
    return root


def test_ssv2_labels_from_templates_with_commas_and_slashes(ssv2_tree: Path, capsys):
    s = _summary_cli("ssv2", ssv2_tree, capsys)
    assert s["class_names"] == SSV2_CLASSES
    assert (s["train_videos"], s["test_videos"], s["missing"]) == (3, 2, 1)
    assert s["missing_files"] == ["106"]
    test = build_dataset(_cfg("ssv2", ssv2_tree, allow_missing=True), "test")
    assert test.labels.tolist() == [1, 2] and test[0][0].shape == (3, 4, 32, 32)


def test_ssv2_template_not_in_labels_is_named(ssv2_tree: Path, tmp_path):
    import shutil

    labels = tmp_path / "labels"
    shutil.copytree(ssv2_tree / "labels", labels)
    items = json.loads((labels / "train.json").read_text())
    items[0]["template"] = "Holding [something] next to [something]."
    (labels / "train.json").write_text(json.dumps(items))
    with pytest.raises(DataError, match=r"1 entries are not, e\.g\. 101"):
        index_dataset(_cfg("ssv2", ssv2_tree, split_dir=str(labels)), progress=False)
