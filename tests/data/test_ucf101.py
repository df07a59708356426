from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from bwssl.cli import main
from bwssl.config import DataConfig, load_config
from bwssl.data import (
    UCF101,
    build_dataset,
    collate_clips,
    denormalize,
    index_ucf101,
    make_loader,
)
from bwssl.data import video_index as video_index_module
from bwssl.data.video_io import read_video
from bwssl.errors import DataError

if TYPE_CHECKING:
    from conftest import Tree


HSP = "HandstandPushups/v_HandStandPushups_g08_c01.avi"


def _index_of(ds: UCF101, listed: str) -> int:
    return next(
        i
        for i, p in enumerate(ds.paths)
        if Path(p).as_posix().endswith(listed if ds.backend == "video" else listed[:-4])
    )


def _levels(clip: torch.Tensor) -> np.ndarray:
    """(T,) mean 8-bit level of each frame of a normalized clip."""
    return (denormalize(clip).mean(dim=(0, 2, 3)) * 255).numpy()


def test_index_counts_and_labels(ucf_cfg):
    index = index_ucf101(ucf_cfg())
    s = index.summary()
    # The truncated video (header: 80 frames, about 50 remain) is partial, not unreadable:
    # its decodable prefix covers the clip span.
    assert (s["classes"], s["train_videos"], s["test_videos"]) == (3, 6, 4)
    assert (s["excluded_short"], s["unreadable"], s["missing"]) == (1, 1, 1)
    assert (s["partial"], s["header_disagrees"]) == (1, 1)
    assert s["missing_files"] == ["HandstandPushups/v_HandStandPushups_g10_c01.avi"]
    assert any("header claims 80" in f and "g09" in f for f in s["header_disagrees_files"])
    assert any("g09" in f for f in s["partial_files"])
    by_name = {Path(r.listed).name: r for r in index.records}
    # HandstandPushups files are named HandStandPushups: the label comes from the folder.
    assert by_name["v_HandStandPushups_g08_c01.avi"].label == 2
    assert index.class_names[2] == "HandstandPushups"
    assert by_name["v_Basketball_g08_c01.avi"].label == 1
    assert by_name["v_ApplyEyeMakeup_g10_c01.avi"].status == "short"


def test_split_two_is_selectable(ucf_cfg):
    index = index_ucf101(ucf_cfg(split=2))
    assert len(index.select("train")) == 4 and len(index.select("test")) == 6


def test_missing_files_stop_before_training_all_named(ucf_cfg):
    with pytest.raises(DataError) as err:
        build_dataset(ucf_cfg(allow_missing=False), "train")
    text = str(err.value)
    assert "1 of 13 videos" in text and "v_HandStandPushups_g10_c01.avi" in text
    assert "data.allow_missing" in text


def test_too_many_unreadable_files_stop_the_run(ucf_cfg):
    with pytest.raises(DataError, match=r"cannot be read.*max_unreadable_fraction"):
        build_dataset(ucf_cfg(max_unreadable_fraction=0.05), "train")


def test_clips_have_the_configured_shape_and_are_deterministic(ucf_cfg):
    ds = build_dataset(ucf_cfg(), "train")
    assert len(ds) == 6 and ds.num_classes == 3 and ds.labels.dtype == np.int64
    video, label = ds[(3, 1234)]
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    assert isinstance(label, int) and label == ds.labels[3]
    assert torch.equal(video, ds[(3, 1234)][0])
    assert torch.equal(ds[3][0], ds[3][0])
    views = [ds[(3, s)][0] for s in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_eval_view_is_the_centred_clip(ucf_cfg, ucf_tree: Tree):
    ds = build_dataset(ucf_cfg(), "train")
    i = _index_of(ds, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")  # 24 frames
    start = (24 - 8) // 2
    t = ucf_tree
    expected = t.base + t.step * (start + 2 * np.arange(4)) + (t.width - 1) / 2  # centre crop
    np.testing.assert_allclose(_levels(ds[i][0]), expected, atol=2.0)


def test_train_view_draws_start_crop_and_flip_from_the_aug_seed(ucf_cfg, ucf_tree: Tree):
    ds = build_dataset(ucf_cfg(), "train")
    t, W = ucf_tree, ucf_tree.width
    i = _index_of(ds, "Basketball/v_Basketball_g08_c01.avi")  # 28 frames, 32x40
    side = round(32 * 32 / 37)  # short side 32 scaled to 37, then a 32 crop
    flips = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        start = int(rng.integers(0, 28 - 8 + 1))
        rng.integers(0, 32 - side + 1)
        left = int(rng.integers(0, W - side + 1))
        flip = rng.random() < 0.5
        clip = ds[(i, seed)][0]
        expected = t.base + t.step * (start + 2 * np.arange(4)) + left + (side - 1) / 2
        np.testing.assert_allclose(_levels(clip), expected, atol=2.0)
        ramp = (clip[:, :, :, -4:].mean() - clip[:, :, :, :4].mean()).item()
        assert (ramp < 0) == flip, seed
        flips.append(flip)
    assert any(flips) and not all(flips)


def test_test_split_is_a_seeded_subsample(ucf_cfg):
    cfg = ucf_cfg(eval_fraction=0.5)
    subsets = {tuple(build_dataset(cfg, "test", seed=s).paths) for s in range(6)}
    assert all(len(s) == 2 for s in subsets) and len(subsets) > 1
    assert build_dataset(cfg, "test", seed=3).paths == build_dataset(cfg, "test", seed=3).paths
    assert len(build_dataset(ucf_cfg(eval_fraction=1.0), "test")) == 4


def test_fewer_frames_than_claimed_is_skipped_logged_and_counted(ucf_cfg, caplog):
    ds = build_dataset(ucf_cfg(), "train")
    i = _index_of(ds, HSP)
    ds.lengths[i] = 200  # the index claims frames the file does not hold
    with caplog.at_level(logging.WARNING):
        assert ds[i] is None and ds[(i, 5)] is None
    assert ds.unreadable == 2
    assert "v_HandStandPushups_g08_c01.avi" in caplog.text
    batch = collate_clips([ds[0], ds[i], ds[1]], clip_shape=ds.clip_shape)
    assert batch.video.shape == (2, 3, 4, 32, 32) and batch.skipped == 1


def test_index_is_cached(ucf_cfg, monkeypatch):
    cfg = ucf_cfg()
    index_ucf101(cfg)

    def boom(path):
        raise AssertionError(f"probed {path} again")

    monkeypatch.setattr(video_index_module, "probe_video", boom)
    assert index_ucf101(cfg).summary()["train_videos"] == 6


def test_loader_with_workers_matches_loading_in_process(ucf_cfg):
    from bwssl.train.sampling import EpochBatchSampler

    ds = build_dataset(ucf_cfg(), "train")
    sampler = EpochBatchSampler(len(ds), 2, seed=0)
    local = list(make_loader(ds, sampler, num_workers=0, pin_memory=False))
    workers = list(make_loader(ds, sampler, num_workers=2, pin_memory=False))
    assert len(local) == len(workers) == 3
    for a, b in zip(local, workers, strict=True):
        assert torch.equal(a.video, b.video) and torch.equal(a.label, b.label)
        assert a.video.shape == (2, 3, 4, 32, 32) and a.skipped == 0


def test_summary_json_through_the_cli(ucf_tree: Tree, cache_dir, capsys):
    code = main(
        [
            "data",
            "summary",
            "ucf101",
            "--root",
            str(ucf_tree.root),
            "--num-frames",
            "4",
            "--frame-stride",
            "2",
            "--cache-dir",
            cache_dir,
            "--json",
        ]
    )
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert {
        k: s[k]
        for k in (
            "classes",
            "train_videos",
            "test_videos",
            "excluded_short",
            "unreadable",
            "missing",
        )
    } == {
        "classes": 3,
        "train_videos": 6,
        "test_videos": 4,
        "excluded_short": 1,
        "unreadable": 1,
        "missing": 1,
    }
    # With the default 16x4 clips, every video is too short.
    main(["data", "summary", "ucf101", "--root", str(ucf_tree.root), "--json"])
    assert json.loads(capsys.readouterr().out)["excluded_short"] == 11


def test_summary_reports_user_errors_in_one_line(tmp_path, capsys):
    assert main(["data", "summary", "ucf101", "--root", str(tmp_path), "--json"]) == 2
    assert "classInd.txt" in capsys.readouterr().err


@pytest.fixture(scope="module")
def frames_root(ucf_tree: Tree, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("frames") / "ucf101-frames"
    assert (
        main(
            [
                "data",
                "extract-frames",
                "--root",
                str(ucf_tree.root),
                "--out",
                str(out),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    return out


def test_extract_frames_writes_frame_folders_and_markers(frames_root: Path, ucf_tree: Tree):
    hsp = frames_root / "HandstandPushups"
    assert sorted(p.name for p in (hsp / "v_HandStandPushups_g08_c01").iterdir())[:2] == [
        "000001.jpg",
        "000002.jpg",
    ]
    assert len(list((hsp / "v_HandStandPushups_g08_c01").iterdir())) == 24
    # the truncated video keeps its decodable prefix
    assert 40 <= len(list((hsp / "v_HandStandPushups_g09_c01").iterdir())) < 80
    assert (frames_root / "Basketball" / "v_Basketball_g09_c01.unreadable").exists()
    assert (frames_root / "ucfTrainTestlist" / "classInd.txt").exists()
    assert not list(frames_root.glob("*/.*tmp*"))


def test_extract_frames_is_resumable(frames_root: Path, ucf_tree: Tree):
    from bwssl.data.commands import extract_frame_tree

    done = frames_root / "Basketball" / "v_Basketball_g08_c01"
    mtime = done.stat().st_mtime_ns
    report = extract_frame_tree(ucf_tree.root, frames_root, progress=False)
    assert report.extracted == 0 and report.already_done == 12 and done.stat().st_mtime_ns == mtime


def test_frame_backend_matches_video_backend(frames_root: Path, ucf_cfg):
    cfg = ucf_cfg(root=None, frames_root=str(frames_root))
    summary = index_ucf101(cfg).summary()
    assert summary["backend"] == "frames"
    assert (
        summary["train_videos"],
        summary["unreadable"],
        summary["missing"],
        summary["excluded_short"],
    ) == (6, 1, 1, 1)
    frames, video = build_dataset(cfg, "train"), build_dataset(ucf_cfg(), "train")
    assert [Path(p).name for p in frames.paths] == [Path(p).stem for p in video.paths]
    assert np.array_equal(frames.labels, video.labels)
    for key in (0, 4, (2, 99)):
        a, b = frames[key], video[key]
        assert a[1] == b[1] and (a[0] - b[0]).abs().mean() < 0.03  # JPEG vs decoded frames


def test_resize_policy_none_crops_native_pixels(ucf_cfg):
    ds = build_dataset(ucf_cfg(resize="none", crop_size=16), "train")
    i = _index_of(ds, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")  # 24 frames of 32x40
    frames = read_video(ds.paths[i], np.arange(8, 16, 2))  # the centred clip
    window = frames[:, 8:24, 12:28]  # the central 16x16 window
    clip = ds[i][0]
    assert clip.shape == (3, 4, 16, 16)
    got = (denormalize(clip) * 255).round().permute(1, 2, 3, 0).numpy()
    assert np.array_equal(got, window)


def test_resize_policy_short_side_scales_then_crops(ucf_cfg):
    ds = build_dataset(ucf_cfg(), "train")  # short side 32 -> 37, crop 32
    i = _index_of(ds, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
    row = (denormalize(ds[i][0])[0].mean(dim=(0, 1)) * 255).numpy()  # (W,) level per column
    # A 28-pixel window of a 1-level-per-column ramp, scaled to 32 columns.
    assert np.polyfit(np.arange(32), row, 1)[0] == pytest.approx(28 / 32, abs=0.06)


def test_training_runs_on_the_generated_tree(ucf_tree: Tree, cache_dir, tmp_path):
    from bwssl.train.trainer import train

    cfg = load_config(
        "tiny-debug",
        [
            f"data.root={ucf_tree.root}",
            f"data.cache_dir={cache_dir}",
            "data.allow_missing=true",
            "data.max_unreadable_fraction=0.5",
            "train.batch_size=2",
            "train.max_steps=2",
            "train.device=cpu",
        ],
    )
    assert isinstance(cfg.data, DataConfig) and cfg.data.name == "ucf101"
    final = train(cfg, tmp_path / "run")
    assert final.exists()
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows and all(np.isfinite(v) for r in rows for v in r["loss"].values())


def _mini_tree(root: Path, write, train_line: str) -> DataConfig:
    write(root / "Foo" / "v_FOO_g08_c01.avi", 12)
    write(root / "Bar" / "v_Bar_g08_c01.avi", 12)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Bar\n2 Foo\n")
    (lists / "trainlist01.txt").write_text(f"{train_line}\nBar/v_Bar_g08_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Bar/v_Bar_g08_c01.avi\n")
    return DataConfig(
        name="ucf101",
        root=str(root),
        num_frames=4,
        frame_stride=2,
        crop_size=16,
        cache_dir=str(root / "cache"),
    )


def test_listed_paths_are_found_whatever_their_case(tmp_path, avi_writer):
    cfg = _mini_tree(tmp_path, avi_writer, "foo/v_foo_g08_c01.avi 2")
    ds = build_dataset(cfg, "train")
    assert sorted(Path(p).name for p in ds.paths) == ["v_Bar_g08_c01.avi", "v_FOO_g08_c01.avi"]
    assert ds.labels.tolist() == [1, 0] and ds.class_names == ["Bar", "Foo"]


def test_a_list_label_that_contradicts_the_folder_is_refused(tmp_path, avi_writer):
    cfg = _mini_tree(tmp_path, avi_writer, "Foo/v_FOO_g08_c01.avi 1")
    with pytest.raises(DataError, match="contradict their class folder"):
        build_dataset(cfg, "train")


def test_the_official_archive_layout_is_found_under_the_root(ucf_tree, cache_dir, tmp_path):
    """Both archives unpacked into one folder: UCF-101/<class>/*.avi beside ucfTrainTestlist/."""
    import shutil

    root = tmp_path / "ucf"
    shutil.copytree(ucf_tree.root / "ucfTrainTestlist", root / "ucfTrainTestlist")
    for cls in ucf_tree.root.iterdir():
        if cls.name != "ucfTrainTestlist":
            shutil.copytree(cls, root / "UCF-101" / cls.name)
    cfg = DataConfig(
        name="ucf101", root=str(root), num_frames=4, frame_stride=2, crop_size=32,
        cache_dir=cache_dir, allow_missing=True, max_unreadable_fraction=1.0,
    )  # fmt: skip
    index = index_ucf101(cfg)
    assert index.base == root / "UCF-101"
    s = index.summary()
    assert (s["train_videos"], s["test_videos"], s["missing"]) == (6, 4, 1)


def test_a_root_without_the_videos_says_where_it_looked(ucf_tree, cache_dir, tmp_path):
    import shutil

    root = tmp_path / "lists-only"
    shutil.copytree(ucf_tree.root / "ucfTrainTestlist", root / "ucfTrainTestlist")
    (root / "UCF-101").mkdir()
    cfg = DataConfig(name="ucf101", root=str(root), cache_dir=cache_dir, allow_missing=True)
    with pytest.raises(DataError) as caught:
        index_ucf101(cfg)
    message = str(caught.value)
    lists = root / "ucfTrainTestlist"
    n = sum(len((lists / f).read_text().split()) for f in ("trainlist01.txt",)) // 2 + len(
        (lists / "testlist01.txt").read_text().split()
    )
    assert f"{n} of the {n} videos" in message and "are not in" in message
    assert str(root) in message and str(root / "UCF-101") in message
