"""Something-Something v2 from its official layout: JSON labels and ``<id>.webm`` files.

Layout::

    LABELS/labels.json        {"Holding something next to something": "12", ...}  (174)
    LABELS/train.json         [{"id": "78687", "label": "holding potato next to ...",
                                "template": "Holding [something] next to [something]",
                                "placeholders": ["potato", "..."]}, ...]
    LABELS/validation.json
    VIDEOS/78687.webm         every video in one folder

``LABELS`` is ``data.split_dir``, else ``ROOT/labels``; ``VIDEOS`` is
``ROOT/20bn-something-something-v2`` (how the archive unpacks) when it
exists, else ``ROOT``. The class of a video is its template with the
``[`` ``]`` of the placeholders removed, which is a key of labels.json
(class names keep every other character: commas, slashes); the class index
is labels.json's id. The test split is the validation set (the official test
set has no public labels).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bwssl.config import DataConfig
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import SplitName, VideoIndex, VideoRecord
from bwssl.data.video_io import VIDEO_EXTENSIONS
from bwssl.data.video_list import finish_index
from bwssl.errors import DataError

VIDEO_FOLDER = "20bn-something-something-v2"
SPLIT_FILES: dict[SplitName, str] = {"train": "train.json", "test": "validation.json"}


def class_of_template(template: str) -> str:
    """The labels.json key of a template: ``"Putting [something] on [something]"`` ->
    ``"Putting something on something"``."""
    return template.replace("[", "").replace("]", "")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as e:
        raise DataError(
            f"{path} does not exist; data.split_dir (default ROOT/labels) must hold "
            "labels.json, train.json and validation.json of Something-Something v2"
        ) from e
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e


def read_labels(path: Path) -> list[str]:
    """Class names in class-id order, from labels.json (ids must run 0..N-1)."""
    data = _json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object of template -> id")
    try:
        by_id = {int(v): str(k) for k, v in data.items()}
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: class ids must be integers ({e})") from e
    if sorted(by_id) != list(range(len(data))):
        raise DataError(f"{path}: class ids must run 0..{len(data) - 1} without gaps")
    return [by_id[i] for i in range(len(data))]


def index_ssv2(cfg: DataConfig, *, progress: bool = True, workers: int | None = None) -> VideoIndex:
    """Read the labels and the train and validation lists, and probe every listed video."""
    root = Path(str(cfg.root))
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; give the Something-Something v2 folder")
    lists = Path(cfg.split_dir) if cfg.split_dir is not None else root / "labels"
    class_names = read_labels(lists / "labels.json")
    label_of = {c: i for i, c in enumerate(class_names)}
    base = root / VIDEO_FOLDER if (root / VIDEO_FOLDER).is_dir() else root
    files = {
        Path(e.name).stem: e.path
        for e in os.scandir(base)
        if e.is_file() and e.name.lower().endswith(VIDEO_EXTENSIONS)
    }
    records = []
    for split, name in SPLIT_FILES.items():
        items = _json(lists / name)
        unknown = []
        for item in items if isinstance(items, list) else []:
            vid, template = str(item.get("id", "")), str(item.get("template", ""))
            label = label_of.get(class_of_template(template))
            if label is None or not vid:
                unknown.append(vid or repr(item)[:60])
                continue
            found = files.get(vid)
            rec = VideoRecord(vid, split, label, found or str(base / f"{vid}.webm"))
            if found is None:
                rec.status, rec.reason = "missing", "not found"
            records.append(rec)
        if not isinstance(items, list) or unknown:
            raise DataError(
                f"{lists / name}: expected a list of {{id, label, template, placeholders}} whose "
                f"template (brackets removed) is a class of labels.json; {len(unknown)} entries "
                f"are not, e.g. {', '.join(unknown[:5])}"
            )
    index = VideoIndex(
        "ssv2", "video", base, lists, None, ClipFormat.from_config(cfg).span, class_names, records
    )
    return finish_index(
        cfg,
        index,
        hint=f"data.root must hold {VIDEO_FOLDER}/<id>.webm (or the <id>.webm files themselves)",
        progress=progress,
        workers=workers,
    )
