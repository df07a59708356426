"""Video and image data: datasets (an image is a one-frame clip), clip transforms and token masks.

The trainer and the analyses use :func:`build_dataset`, :class:`ClipDataset`
(``dataset[i]``: evaluation view; ``dataset[(i, aug_seed)]``: training view),
:func:`make_loader`, :class:`ClipBatch` and :func:`check_unreadable`; the
feature-complexity probes use :class:`GratingDataset`.
"""

from bwssl.data.build import build_dataset
from bwssl.data.cifar import CIFAR
from bwssl.data.clips import (
    ClipBatch,
    ClipDataset,
    VideoReadError,
    check_unreadable,
    collate_clips,
    make_loader,
)
from bwssl.data.gratings import GratingDataset, GratingGrid
from bwssl.data.images import ImageClips, ImageFolder, ImageReadError, index_image_folder
from bwssl.data.shapes import IMAGE_CLASSES, SyntheticShapes
from bwssl.data.synthetic import MOTION_CLASSES, SyntheticMotion
from bwssl.data.transforms import ClipFormat, denormalize, normalize
from bwssl.data.ucf101 import UCF101, index_ucf101
from bwssl.data.video_index import VideoIndex, VideoRecord
from bwssl.data.video_list import VideoListDataset

__all__ = [
    "CIFAR",
    "IMAGE_CLASSES",
    "MOTION_CLASSES",
    "UCF101",
    "ClipBatch",
    "ClipDataset",
    "ClipFormat",
    "GratingDataset",
    "GratingGrid",
    "ImageClips",
    "ImageFolder",
    "ImageReadError",
    "SyntheticMotion",
    "SyntheticShapes",
    "VideoIndex",
    "VideoListDataset",
    "VideoReadError",
    "VideoRecord",
    "build_dataset",
    "check_unreadable",
    "collate_clips",
    "denormalize",
    "index_image_folder",
    "index_ucf101",
    "make_loader",
    "normalize",
]
