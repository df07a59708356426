"""Block features of an encoder on a dataset: extracted once, cached on disk.

For every clip the model's K block outputs h_k are computed with masking off
(:meth:`~bwssl.models.BlockwiseModel.block_outputs`), in eval mode, without
gradients, in batches, with a progress bar. What is kept:

- ``pooled``: z_k, block k's output pooled by its backbone
  (:meth:`~bwssl.models.BlockwiseModel.pool`: the token mean for the video
  ViT, which has no class token), for every clip: K arrays (M, D_k) float32
  (widths may differ between blocks, as in a ResNet).
- ``tokens``: the full h_k as tokens (:meth:`~bwssl.models.BlockwiseModel.tokens`),
  only for a seeded subsample of clips (the CPS analysis needs every token,
  and all tokens of all clips would not fit): K arrays (M_tok, N_k, D_k),
  float16 when every value fits its range, else float32.
  CPS normalizes each token by itself (LayerNorm, L2), so fp16's relative
  rounding (5e-4) does not move it.
- ``head`` (only when asked for, ``heads=True``): block k's head's pooled vector
  before its projector or classifier
  (:meth:`~bwssl.models.BlockwiseModel.head_features`: a CbE head's
  ``objective.pool_width`` expanded features), for every clip: K entries,
  (M, D'_k) float32, or None where block k has no such vector (a decoder)
  or where it equals ``pooled`` (``objective.pooling=backbone``, or a global
  average like the backbone's own pooling): probes of it would only repeat
  those of ``pooled``.

Clips that cannot be read are dropped; ``index`` says which dataset items
the rows are.

The cache key is the sha256 of the encoder's *content* (:func:`file_sha256`
of the checkpoint, not its path or mtime), the dataset's identity (its
config, split, subsample, any occlusion: whatever decides the pixels) and
the token subsample. A rerun with the same key loads the ``.npz`` instead of
running the model; a file is written to a temporary name and renamed, so an
interrupted run never leaves a torn cache entry. Whether the head vectors were
extracted is not part of the key: an entry without them is recomputed (and
replaced) when they are asked for, and an entry with them serves requests
without. Each entry records :data:`FEATURES_VERSION`; an entry of another
format is never read, only recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bwssl.base.files import atomic_write, file_sha256
from bwssl.models.blockwise import BlockwiseModel

logger = logging.getLogger(__name__)

FEATURES_VERSION = 3
"""Bumped when what is stored (or how it is computed) changes: old cache entries are ignored
(3: the heads' pooled vectors, and the version stored in every entry)."""

VideoTransform = Callable[[torch.Tensor], torch.Tensor]
"""A function of a clip batch (B, C, T, H, W) applied before the model (e.g. an occluder)."""

_FP16_MAX = 6.0e4
_SAME_RTOL = 1e-4
"""A head vector within this relative tolerance of the pooled features counts as the same."""


@dataclass
class Features:
    """Block outputs of one encoder on one dataset."""

    pooled: list[np.ndarray]
    """K arrays (M, D_k) float32: z_k, block k's pooled output, per kept clip."""
    index: np.ndarray
    """(M,) int64: the dataset item of each row (unreadable clips are left out)."""
    token_index: np.ndarray
    """(M_tok,) int64: the dataset items whose full tokens are in ``tokens``."""
    tokens: list[np.ndarray]
    """K arrays (M_tok, N_k, D_k): block outputs of the ``token_index`` clips as tokens
    (float16 or float32)."""
    head: list[np.ndarray | None] | None = None
    """K entries (M, D'_k) float32: block k's head's pooled vector per kept clip, None where
    block k has none distinct from ``pooled`` (see the module docstring); None altogether
    when the head vectors were not extracted."""

    @property
    def num_blocks(self) -> int:
        return len(self.pooled)

    def head_blocks(self) -> list[int]:
        """The blocks (0-based) with a head vector of their own."""
        return [k for k, h in enumerate(self.head or ()) if h is not None]


def files_sha256(paths: Sequence[str | Path]) -> str:
    """Hex sha256 over several files (their names and contents, in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + file_sha256(p).encode())
    return h.hexdigest()


def cache_key(
    encoder_digest: str, dataset_id: Mapping[str, Any], token_items: Sequence[int] = ()
) -> str:
    """The cache key of (encoder content, dataset identity, token subsample) under this
    :data:`FEATURES_VERSION`."""
    text = json.dumps(
        {
            "version": FEATURES_VERSION,
            "encoder": encoder_digest,
            "dataset": dataset_id,
            "token_items": [int(i) for i in token_items],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Indexed(torch.utils.data.Dataset):
    """``items`` of a dataset as ``(item, clip or None)``; labels are not needed here."""

    def __init__(self, dataset: Any, items: np.ndarray) -> None:
        self.dataset, self.items = dataset, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor | None]:
        i = int(self.items[j])
        sample = self.dataset[i]
        if isinstance(sample, tuple):  # (video, label) clip datasets; gratings give the clip
            sample = sample[0]
        return i, sample


def _collate(
    batch: list[tuple[int, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(items, clips) of the readable samples, and how many samples the batch had."""
    good = [(i, v) for i, v in batch if v is not None]
    if not good:
        return torch.empty(0, dtype=torch.int64), torch.empty(0), len(batch)
    return torch.tensor([i for i, _ in good]), torch.stack([v for _, v in good]), len(batch)


def clip_batches(
    dataset: Any,
    items: Sequence[int] | np.ndarray,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Batches ``(items, clips, seen)`` over ``dataset[i]`` for ``i`` in ``items``, in order.

    ``items`` (B',) are the dataset indices of the readable clips (B', C, T,
    H, W); ``seen`` counts every item of the batch, unreadable ones included.
    """
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset, np.asarray(items, dtype=np.int64)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
    )
    yield from loader


def extract_features(
    model: BlockwiseModel,
    dataset: Any,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    token_items: Sequence[int] = (),
    transform: VideoTransform | None = None,
    items: Sequence[int] | None = None,
    heads: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> Features:
    """Run ``model`` over ``dataset`` (or its ``items``) and keep pooled and subsampled tokens.

    ``dataset[i]`` is ``(video, label)``, a bare video (C, T, H, W), or None
    (unreadable: skipped). ``transform`` is applied to each batch on
    ``device`` before the model. Full tokens are kept for ``token_items``
    (dataset indices); the heads' pooled vectors when ``heads`` (``Features.head``;
    a CbE head costs about as much as its block). The model is put in eval mode.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    order = (
        np.arange(len(dataset), dtype=np.int64)
        if items is None
        else np.asarray(items, dtype=np.int64)
    )
    want = {int(i) for i in token_items}
    pooled: list[list[torch.Tensor]] = []
    head_parts: list[list[torch.Tensor | None]] = []
    kept: list[torch.Tensor] = []
    tok: dict[int, torch.Tensor] = {}
    bar = tqdm(
        total=len(order),
        desc=desc,
        unit="clip",
        file=sys.stderr,
        leave=False,
        disable=not progress,
        dynamic_ncols=True,
    )
    batches = clip_batches(dataset, order, batch_size, num_workers, device.type == "cuda")
    with torch.inference_mode(), bar:
        for idx, video, seen in batches:
            bar.update(seen)
            if len(idx) == 0:
                continue
            video = video.to(device, non_blocking=True)
            if transform is not None:
                video = transform(video)
            outs = model.block_outputs(video)  # K block outputs
            pooled.append([model.pool(k, h).float().cpu() for k, h in enumerate(outs)])
            if heads:
                vecs = [model.head_features(k, h) for k, h in enumerate(outs)]
                head_parts.append([None if v is None else v.float().cpu() for v in vecs])
            kept.append(idx)
            rows = [j for j, i in enumerate(idx.tolist()) if i in want]
            if rows:
                toks = [model.tokens(k, h[rows]).float() for k, h in enumerate(outs)]
                for r, j in enumerate(rows):
                    tok[int(idx[j])] = [x[r].cpu() for x in toks]  # K x (N_k, D_k)
    if not kept:
        raise ValueError(f"{desc}: no clip of the dataset could be read")
    num_blocks = len(pooled[0])
    z = [torch.cat([b[k] for b in pooled]).numpy() for k in range(num_blocks)]
    token_index = np.array(sorted(tok), dtype=np.int64)
    tokens = []
    for k in range(num_blocks):
        if len(token_index):
            t = torch.stack([tok[int(i)][k] for i in token_index]).numpy()  # (M_tok, N_k, D_k)
            if np.isfinite(t).all() and np.abs(t).max() < _FP16_MAX:
                t = t.astype(np.float16)
        else:
            t = np.zeros((0, 0, z[k].shape[1]), dtype=np.float32)
        tokens.append(t)
    head = None
    if heads:
        head = [_own_vector([b[k] for b in head_parts], z[k]) for k in range(num_blocks)]
    return Features(z, torch.cat(kept).numpy().astype(np.int64), token_index, tokens, head)


def _own_vector(parts: list[torch.Tensor | None], pooled: np.ndarray) -> np.ndarray | None:
    """A block's head vectors (M, D') from their batches, or None when the block has none or
    they equal its ``pooled`` features (M, D) to float rounding."""
    if not parts or any(v is None for v in parts):
        return None
    h = torch.cat([v for v in parts if v is not None]).numpy()
    scale = float(np.abs(pooled).max(initial=0.0))
    if h.shape == pooled.shape and np.allclose(h, pooled, rtol=_SAME_RTOL, atol=_SAME_RTOL * scale):
        return None
    return h


class FeatureCache:
    """``.npz`` files of :class:`Features` under ``root``, one per :func:`cache_key`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str, heads: bool = False) -> Features | None:
        """The cached features of ``key``, or None, to be recomputed: missing, unreadable,
        of another :data:`FEATURES_VERSION`, or without the head vectors when ``heads``."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as f:
                version = int(f["version"]) if "version" in f.files else None
                if version != FEATURES_VERSION:
                    logger.warning(
                        "ignoring feature cache %s of format %s (this is %d); recomputing",
                        p,
                        version or "1-2",
                        FEATURES_VERSION,
                    )
                    return None
                k = int(f["num_blocks"])
                head = None
                if bool(f["has_heads"]):
                    own = {int(b) for b in f["head_blocks"]}
                    head = [f[f"head_{i}"] if i in own else None for i in range(k)]
                elif heads:
                    return None
                return Features(
                    [f[f"pooled_{i}"] for i in range(k)],
                    f["index"],
                    f["token_index"],
                    [f[f"tokens_{i}"] for i in range(k)],
                    head,
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            logger.warning("ignoring unreadable feature cache %s (%s)", p, e)
            return None

    def save(self, key: str, feats: Features, about: Mapping[str, Any] | None = None) -> Path:
        """Write ``feats`` (and ``about``, a JSON note of what they are) atomically."""
        p = self.path(key)
        note = np.array(json.dumps(about or {}, sort_keys=True, default=str))
        atomic_write(
            p,
            lambda f: np.savez(
                f,
                version=np.array(FEATURES_VERSION),
                num_blocks=np.array(feats.num_blocks),
                has_heads=np.array(feats.head is not None),
                head_blocks=np.array(feats.head_blocks(), dtype=np.int64),
                index=feats.index,
                token_index=feats.token_index,
                about=note,
                **{f"pooled_{k}": z for k, z in enumerate(feats.pooled)},
                **{f"tokens_{k}": t for k, t in enumerate(feats.tokens)},
                **{f"head_{k}": (feats.head or [])[k] for k in feats.head_blocks()},
            ),
        )
        return p


def block_features(
    model: BlockwiseModel,
    dataset: Any,
    *,
    encoder_digest: str,
    dataset_id: Mapping[str, Any],
    cache: FeatureCache | None,
    token_items: Sequence[int] = (),
    items: Sequence[int] | None = None,
    heads: bool = False,
    **kwargs: Any,
) -> Features:
    """:func:`extract_features`, read from ``cache`` when this exact extraction was done before
    (with the head vectors when ``heads``; an entry without them is then replaced).

    ``dataset_id`` must pin down every pixel the model sees (config, split,
    subsample, transform); ``encoder_digest`` the weights (e.g.
    :func:`file_sha256` of the checkpoint); ``items`` and ``token_items``
    (dataset indices) are part of the key. ``kwargs`` go to
    :func:`extract_features`: a ``transform`` changes the pixels and must be
    described in ``dataset_id``; the others (batch size, device, workers,
    progress) do not change the result.
    """
    ident = dict(dataset_id)
    if items is not None:
        ident["items"] = [int(i) for i in items]
    key = cache_key(encoder_digest, ident, token_items)
    if cache is not None:
        hit = cache.load(key, heads=heads)
        if hit is not None:
            return hit
    feats = extract_features(
        model, dataset, token_items=token_items, items=items, heads=heads, **kwargs
    )
    if cache is not None:
        cache.save(key, feats, {"encoder": encoder_digest, "dataset": dict(dataset_id)})
    return feats
