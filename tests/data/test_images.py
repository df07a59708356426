"""Image datasets as one-frame clips: ImageFolder trees, CIFAR pickles, the embedded shapes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bwssl.cli import main
from bwssl.config import ConfigError, DataConfig, from_dict
from bwssl.data import build_dataset, collate_clips
from bwssl.data.images import decode_image, index_image_folder
from bwssl.data.shapes import IMAGE_CLASSES, SyntheticShapes, render_shape, sample_shape_params
from bwssl.data.transforms import ClipFormat, denormalize
from bwssl.errors import DataError
from bwssl.train.trainer import train

CLASSES = ["cat", "dog", "fish"]


def pattern(seed: int, h: int = 20, w: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """train: 2 PNG + 1 JPEG per class, a corrupt .jpg and a .txt in dog; val: 1 PNG per class."""
    root = tmp_path / "imgs"
    for split, per_class in (("train", 3), ("val", 1)):
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pix = pattern(10 * c + i + (100 if split == "val" else 0))
                if i == 2:
                    Image.fromarray(pix).save(folder / f"{i}.jpeg", quality=95)
                else:
                    Image.fromarray(pix).save(folder / f"{i}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 8)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def image_cfg(root: Path, **kw) -> DataConfig:
    base = {"crop_size": 16, "resize": "none", "eval_fraction": 1.0}
    return DataConfig(name="images", root=str(root), num_frames=1, **{**base, **kw})


def test_folder_reads_real_files_skips_and_counts_bad_ones(image_tree: Path):
    ds = build_dataset(image_cfg(image_tree), "train")
    assert ds.class_names == CLASSES and len(ds) == 10  # 9 images + the corrupt .jpg
    assert [Path(p).name for p, _ in ds.not_images] == ["notes.txt"]
    assert np.bincount(ds.labels).tolist() == [3, 4, 3]
    # The PNG comes back exactly: the central 16x16 window of the 20x24 image.
    first = ds.paths.index(str(image_tree / "train" / "cat" / "0.png"))
    video, label = ds[first]
    assert video.shape == (3, 1, 16, 16) and label == 0
    want = torch.from_numpy(pattern(0)[2:18, 4:20]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(denormalize(video[:, 0]), want, atol=1e-5, rtol=0)
    # The corrupt file is skipped (None), counted, and dropped by the collate.
    bad = ds.paths.index(str(image_tree / "train" / "dog" / "broken.jpg"))
    assert ds[bad] is None and ds.unreadable == 1
    batch = collate_clips([ds[(i, 7)] for i in range(len(ds))], ds.clip_shape)
    assert batch.video.shape == (9, 3, 1, 16, 16) and batch.skipped == 1
    # Evaluation split: the val folder, same class list; one channel is luma.
    test = build_dataset(image_cfg(image_tree, channels=1), "test")
    assert test.class_names == CLASSES and len(test) == 3 and test[0][0].shape == (1, 1, 16, 16)


def test_val_classes_must_match_train(image_tree: Path):
    (image_tree / "val" / "bird").mkdir()
    for p in (image_tree / "val" / "fish").iterdir():
        p.unlink()
    (image_tree / "val" / "fish").rmdir()
    with pytest.raises(DataError, match=r"missing fish; extra bird"):
        index_image_folder(image_tree)
    with pytest.raises(DataError, match="train/"):
        index_image_folder(image_tree / "val")


def test_summary_images_json(image_tree: Path, capsys):
    assert main(["data", "summary", "images", "--root", str(image_tree), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["classes"] == 3 and s["class_names"] == CLASSES
    assert s["splits"]["train"]["images"] == 9 and s["splits"]["train"]["unreadable"] == 1
    assert s["splits"]["train"]["per_class"] == {"cat": 3, "dog": 3, "fish": 3}
    assert s["splits"]["val"]["images"] == 3
    bad = {Path(b["path"]).name: b["reason"] for b in s["bad_files"]}
    assert set(bad) == {"broken.jpg", "notes.txt"}
    assert "cannot decode" in bad["broken.jpg"] and "not an image" in bad["notes.txt"]


def write_cifar(root: Path, name: str, rows: int) -> tuple[np.ndarray, list[int]]:
    """Fake pickles in the official format; returns the test batch's data rows and labels."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, key, files = root / "cifar-10-batches-py", b"labels", ["test_batch"]
        files += [f"data_batch_{i}" for i in range(1, 6)]
        meta = ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        classes = 10
    else:
        folder, key, files = root / "cifar-100-python", b"fine_labels", ["test", "train"]
        meta = ("meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
        classes = 100
    folder.mkdir(parents=True)
    with (folder / meta[0]).open("wb") as f:
        pickle.dump(meta[1], f)
    out = None
    for file in files:
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, rows).tolist()
        batch = {b"batch_label": file.encode(), b"data": data, key: labels}
        if name == "cifar100":
            batch[b"coarse_labels"] = [lab // 5 for lab in labels]
        with (folder / file).open("wb") as f:
            pickle.dump(batch, f)
        out = out or (data, labels)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_read_back_pixels_and_labels(tmp_path: Path, name: str, capsys):
    data, labels = write_cifar(tmp_path, name, rows=6)
    cfg = DataConfig(name=name, root=str(tmp_path), num_frames=1, crop_size=32, resize="none")
    test = build_dataset(DataConfig(**{**cfg.__dict__, "eval_fraction": 1.0}), "test")
    train = build_dataset(cfg, "train")
    assert len(train) == (30 if name == "cifar10" else 6) and test.num_classes == len(
        set(test.class_names)
    )
    assert test.num_classes == (10 if name == "cifar10" else 100)
    for i in (0, 5):
        video, label = test[i]
        assert label == labels[i] and video.shape == (3, 1, 32, 32)
        chw = torch.from_numpy(data[i].reshape(3, 32, 32)).float() / 255  # red plane first
        torch.testing.assert_close(denormalize(video[:, 0]), chw, atol=1e-5, rtol=0)
    # The pickles' own folder works as the root too, and the summary counts both splits.
    folder = next(tmp_path.iterdir())
    assert len(build_dataset(DataConfig(**{**cfg.__dict__, "root": str(folder)}), "train"))
    assert main(["data", "summary", name, "--root", str(tmp_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["splits"]["test"]["images"] == 6 and s["classes"] == test.num_classes
    with pytest.raises(DataError, match="no cifar"):
        build_dataset(DataConfig(**{**cfg.__dict__, "root": str(tmp_path / "none")}), "train")


def test_image_names_need_one_frame_and_a_root():
    with pytest.raises(ConfigError, match=r"data\.num_frames"):
        DataConfig(name="synthetic_images")
    with pytest.raises(ConfigError, match=r"data\.root"):
        DataConfig(name="cifar10", num_frames=1)
    with pytest.raises(ConfigError, match=r"data\.name"):
        from_dict({"data": {"name": "imagenet"}})


def test_shapes_are_deterministic_and_cover_both_sizes():
    assert len(IMAGE_CLASSES) >= 10 and len(set(IMAGE_CLASSES)) == len(IMAGE_CLASSES)
    for crop in (32, 64):
        fmt = ClipFormat(1, 1, crop)
        a, b = SyntheticShapes(fmt, 40, 10, "train"), SyntheticShapes(fmt, 40, 10, "train")
        assert np.array_equal(a.render(0, 40), b.render(0, 40))
        assert a.render(0, 1).shape == (1, fmt.short_side, fmt.short_side, 3)
        assert a[(3, 11)][0].shape == (3, 1, crop, crop)
        assert torch.equal(a[(3, 11)][0], b[(3, 11)][0])
        assert sorted(set(a.labels.tolist())) == list(range(10))
    test = SyntheticShapes(ClipFormat(1, 1, 32), 40, 10, "test")
    assert not np.array_equal(test.render(0, 4), a.render(0, 4))


def test_shape_classes_differ_but_raw_pixels_do_not_tell_them():
    from sklearn.linear_model import RidgeClassifier

    # Same nuisance (position, size, colours, background), different class: different images,
    # and the object's pixel area tells shape apart.
    rng_state = 123
    imgs = {}
    for cls in ("disk_stripes", "ring_stripes", "cross_stripes", "disk_checker"):
        p = sample_shape_params(np.random.default_rng(rng_state), cls, 37)
        imgs[cls] = render_shape(p, 37).astype(np.int64)
    names = list(imgs)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert np.abs(imgs[x] - imgs[y]).mean() > 2.0, (x, y)
    # Raw pixels: a linear probe stays far from perfect; the 2-D spectrum's magnitude (which
    # ignores position) does much better, so the classes are learnable yet not trivial.
    fmt = ClipFormat(1, 1, 32)
    train, test = SyntheticShapes(fmt, 800, 10, "train"), SyntheticShapes(fmt, 400, 10, "test")
    xtr, xte = train.render(0, 800) / 255.0, test.render(0, 400) / 255.0

    def spectrum(x: np.ndarray) -> np.ndarray:
        g = x.mean(-1)
        return np.abs(np.fft.rfft2(g - g.mean((1, 2), keepdims=True))).reshape(len(x), -1)

    raw = RidgeClassifier(alpha=10.0).fit(xtr.reshape(800, -1), train.labels)
    raw_acc = raw.score(xte.reshape(400, -1), test.labels)
    spec = RidgeClassifier(alpha=10.0).fit(spectrum(xtr), train.labels)
    spec_acc = spec.score(spectrum(xte), test.labels)
    assert raw_acc < 0.3, raw_acc
    assert spec_acc > raw_acc + 0.08, (raw_acc, spec_acc)


def test_a_barlow_run_trains_on_an_image_folder_and_counts_the_bad_file(
    image_tree, tmp_path, make_cfg
):
    """The trainer is unchanged: one-frame clips through the tiny ViT (tubelet 1), with the
    Barlow Twins views; the corrupt image is skipped and counted in the metrics."""
    cfg = make_cfg(
        "data.name=images",
        f"data.root={image_tree}",
        "data.num_frames=1",
        "data.crop_size=16",
        "data.resize=none",
        "model.tubelet_size=1",
        "objective.name=barlow_twins",
        "objective.views.jitter=[0.4,0.4,0.2,0.1]",
        "objective.views.jitter_order=random",
        "objective.views.gray_prob=0.2",
        "objective.views.blur_prob=[1.0,0.1]",
        "objective.views.solarize_prob=[0.0,0.2]",
        "train.batch_size=5",
    )
    train(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    steps = [r for r in rows if "skipped" in r]
    assert steps and steps[-1]["skipped"] == 1
    assert all(np.isfinite(v) for r in steps for v in r["loss"].values())


def test_large_jpeg_decoded_at_reduced_scale_gives_the_same_view(tmp_path: Path):
    """JPEGs are decoded at 1/2..1/8 scale when that keeps the short-side target; the view
    matches a full decode scaled to the target short side and centre-cropped."""
    h, w = 240, 320
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs * 255 / w, ys * 255 / h, (xs + ys) * 255 / (h + w)], -1).astype(np.uint8)
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(pix).save(tmp_path / split / "a" / "big.jpg", quality=95)
    ds = build_dataset(image_cfg(tmp_path, resize="short_side"), "test")
    got = denormalize(ds[0][0][:, 0])  # (3, 16, 16); short side 18 = round(16 * 8 / 7)
    full = Image.fromarray(pix).resize((24, 18), Image.Resampling.BILINEAR)
    want = torch.from_numpy(np.array(full)[1:17, 4:20]).permute(2, 0, 1).float() / 255
    assert (got - want).abs().mean() < 0.03
    assert decode_image(ds.paths[0], 18).shape == (30, 40, 3)  # decoded at 1/8 scale
    assert decode_image(ds.paths[0]).shape == (h, w, 3)
