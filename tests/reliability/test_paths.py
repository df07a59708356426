"""Listed paths stay inside their roots: a split line or a shard index entry that points
outside the dataset or checkpoint folder is refused before anything is read."""

from __future__ import annotations

import json

import pytest

from bwssl.data.ucf101 import read_split_lists
from bwssl.errors import DataError, UserError


def _split_dir(tmp_path, train_lines):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (d / "trainlist01.txt").write_text("".join(f"{x}\n" for x in train_lines))
    (d / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    return d


@pytest.mark.parametrize(
    "line",
    [
        "ApplyEyeMakeup/../../outside.avi 1",
        "/etc/passwd 1",
        "ApplyEyeMakeup/./v_x.avi 1",
        "Archery/../ApplyEyeMakeup/v_x.avi 2",
    ],
)
def test_split_lines_that_leave_the_dataset_are_refused(tmp_path, line):
    d = _split_dir(tmp_path, ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1", line])
    with pytest.raises(DataError, match="leave the dataset folder") as caught:
        read_split_lists(d, 1)
    assert line.split()[0] in str(caught.value)


def test_official_split_lines_still_parse(tmp_path):
    d = _split_dir(tmp_path, ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1"])
    lists = read_split_lists(d, 1)
    assert lists.train == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)]


@pytest.mark.parametrize("shard", ["../x.safetensors", "/tmp/x.safetensors", "a/../../x.bin"])
def test_a_shard_index_entry_outside_the_folder_is_refused(tmp_path, shard):
    from bwssl.interop.hf import _read_weights

    folder = tmp_path / "hf"
    folder.mkdir()
    index = {"metadata": {}, "weight_map": {"a.weight": "model-1.safetensors", "b": shard}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="outside"):
        _read_weights(folder)
