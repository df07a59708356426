"""Hugging Face transformers VideoMAE checkpoints in and out of bwssl.

:func:`from_hf_videomae` turns a local VideoMAE checkpoint folder into a
:class:`~bwssl.models.blockwise.BlockwiseModel` cut into K blocks, so the
analysis suite runs on public encoders; :func:`export_hf` writes a bwssl model
as a folder that ``transformers.VideoMAEModel.from_pretrained`` (and
``VideoMAEForPreTraining`` when a last-block decoder is exported) loads.

The two architectures are the same network with different parameter names:
HF keeps separate query/key/value projections, bwssl one fused ``qkv`` weight;
both have biases on q and v only. Weights are renamed and reshaped by a single
name table used in both directions. Neither side stores the position table: both
use the fixed 1-D sinusoid over the flattened (t, h, w) token index.

Hand-written rather than via ``transformers`` modules because the point is to
run the bwssl model (its block cuts, decoders and analyses) on HF weights; HF
is imported only for its config class, and is an optional extra.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwssl.base.files import atomic_write_file
from bwssl.config import Config, ConfigError, DataConfig, LossConfig, ModelConfig
from bwssl.errors import UserError
from bwssl.models.blockwise import BlockwiseModel, build_model, load_model
from bwssl.models.video_vit import VideoViT

INSTALL_HINT = "pip install 'bwssl[hf]'"
HF_DECODER_NORM_EPS = 1e-5
"""``VideoMAEDecoder.norm`` is a plain ``nn.LayerNorm`` (eps 1e-5), whatever the config says."""

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_LINEARS = (
    ("norm1", "layernorm_before"),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.0", "intermediate.dense"),
    ("mlp.2", "output.dense"),
)
_ENCODER_PREFIXES = ("embeddings.", "encoder.", "layernorm.")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise UserError(f"Hugging Face interop needs transformers: {INSTALL_HINT}") from e
    return transformers


# --- the name table ------------------------------------------------------------------------


def _layer_names(
    ours: str, hf: str, single: dict[str, str], fused: dict[str, tuple[str, str, str]]
) -> None:
    """Names of one transformer layer: bwssl ``ours.*`` <-> HF ``hf.*``."""
    for a, b in _LINEARS:
        for p in ("weight", "bias"):
            single[f"{ours}.{a}.{p}"] = f"{hf}.{b}.{p}"
    single[f"{ours}.attn.q_bias"] = f"{hf}.attention.attention.q_bias"
    single[f"{ours}.attn.v_bias"] = f"{hf}.attention.attention.v_bias"
    q, k, v = (f"{hf}.attention.attention.{n}.weight" for n in ("query", "key", "value"))
    fused[f"{ours}.attn.qkv.weight"] = (q, k, v)


def _decoder_prefix(model: BlockwiseModel, k: int) -> str:
    return "decoders.0" if model.backbone.cfg.shared_decoder else f"decoders.{k}"


def _name_table(
    model: BlockwiseModel, decoder_block: int | None
) -> tuple[dict[str, str], dict[str, tuple[str, str, str]]]:
    """bwssl state-dict key -> HF key (``VideoMAEForPreTraining`` names without ``videomae.``).

    ``single`` maps one tensor to one tensor; ``fused`` maps our qkv weight to HF's
    (query, key, value) weights. The decoder of ``decoder_block`` is included if given.
    """
    single: dict[str, str] = {}
    fused: dict[str, tuple[str, str, str]] = {}
    for p in ("weight", "bias"):
        single[f"blocks.0.embed.proj.{p}"] = f"embeddings.patch_embeddings.projection.{p}"
    for b, (start, stop) in enumerate(model.backbone.cfg.block_ranges()):
        for j, i in enumerate(range(start, stop)):
            _layer_names(f"blocks.{b}.layers.layers.{j}", f"encoder.layer.{i}", single, fused)
    last = model.num_blocks - 1
    if model.blocks[last].norm is not None:
        for p in ("weight", "bias"):
            single[f"blocks.{last}.norm.{p}"] = f"layernorm.{p}"
    if decoder_block is not None:
        d = _decoder_prefix(model, decoder_block)
        single[f"{d}.embed.weight"] = "encoder_to_decoder.weight"
        single[f"{d}.mask_token"] = "mask_token"
        for i in range(model.backbone.cfg.decoder_depth):
            _layer_names(f"{d}.layers.layers.{i}", f"decoder.decoder_layers.{i}", single, fused)
        for part in ("norm", "head"):
            for p in ("weight", "bias"):
                single[f"{d}.{part}.{p}"] = f"decoder.{part}.{p}"
    return single, fused


def _layer_norms(module: nn.Module) -> Iterator[nn.LayerNorm]:
    return (m for m in module.modules() if isinstance(m, nn.LayerNorm))


def _set_norm_eps(model: BlockwiseModel, eps: float) -> None:
    """Give every LayerNorm HF's eps (bwssl builds them with 1e-6; the HF default is 1e-12)."""
    for norm in _layer_norms(model):
        norm.eps = eps
    for decoder in model.heads.values():
        decoder.norm.eps = HF_DECODER_NORM_EPS  # type: ignore[union-attr]


# --- import --------------------------------------------------------------------------------


def _checkpoint_dir(path: str | Path) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(
            f"{path} is not a folder; give a local Hugging Face VideoMAE checkpoint "
            "folder (config.json plus model.safetensors or pytorch_model.bin)"
        )
    if not (folder / "config.json").is_file():
        raise UserError(f"{path} holds no config.json; is it a Hugging Face checkpoint folder?")
    return folder


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError as e:
                raise UserError(f"reading {path.name} needs safetensors: {INSTALL_HINT}") from e
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read weights from {path}: {e}") from e


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, with HF-version and head prefixes normalized."""
    name = next((n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
    if name is None:
        raise UserError(f"{folder} holds no weights; expected one of {', '.join(_WEIGHT_FILES)}")
    if name.endswith(".index.json"):
        shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
        outside = [s for s in shards if Path(s).name != s or s in ("", ".", "..")]
        if outside:
            raise UserError(
                f"{folder / name} lists weight files outside {folder}: {', '.join(outside[:5])}; "
                "refusing to read them (shards must be plain file names in the same folder)"
            )
        raw: dict[str, torch.Tensor] = {}
        for shard in shards:
            raw.update(_read_file(folder / shard))
    else:
        raw = _read_file(folder / name)
    weights = {}
    for key, value in raw.items():
        key = key.removeprefix("videomae.")
        # transformers >= 5 names q/v biases query.bias/value.bias in memory, q_bias/v_bias on disk
        key = re.sub(r"attention\.attention\.query\.bias$", "attention.attention.q_bias", key)
        key = re.sub(r"attention\.attention\.value\.bias$", "attention.attention.v_bias", key)
        weights[key] = value
    return weights


def _qv_bias(hf: Any) -> bool:
    """Whether q and v have biases (``qv_bias`` in transformers >= 5, ``qkv_bias`` before)."""
    return bool(getattr(hf, "qv_bias", getattr(hf, "qkv_bias", True)))


def _mlp_ratio(dim: int, hidden: int) -> float:
    """A ratio with ``int(dim * ratio) == hidden``, as bwssl's Layer computes its MLP width."""
    ratio = hidden / dim
    return ratio if int(dim * ratio) == hidden else (hidden + 0.5) / dim


def _square(value: Any, name: str, path: Path) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise UserError(
                f"{path}: {name}={list(value)} is not square; bwssl models take "
                "square clips and patches"
            )
        value = value[0]
    return int(value)


def _read_hf_config(path: str | Path) -> tuple[Path, Any]:
    """The checkpoint folder and its ``transformers.VideoMAEConfig``."""
    folder = _checkpoint_dir(path)
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "videomae":
        raise UserError(
            f"{path}/config.json has model_type {raw.get('model_type')!r}; "
            "only 'videomae' checkpoints can be imported"
        )
    return folder, _transformers().VideoMAEConfig.from_pretrained(str(folder))


def _bwssl_config(hf: Any, num_blocks: int, boundaries: list[int] | None, path: Path) -> Config:
    if hf.hidden_act != "gelu":
        raise UserError(
            f"{path}: hidden_act={hf.hidden_act!r}; bwssl layers use exact GELU ('gelu') only"
        )
    try:
        return Config(
            regime="e2e",
            model=ModelConfig(
                tubelet_size=int(hf.tubelet_size),
                patch_size=_square(hf.patch_size, "patch_size", path),
                embed_dim=hf.hidden_size,
                depth=hf.num_hidden_layers,
                num_heads=hf.num_attention_heads,
                mlp_ratio=_mlp_ratio(hf.hidden_size, hf.intermediate_size),
                num_blocks=num_blocks,
                boundaries=boundaries,
                decoder_depth=hf.decoder_num_hidden_layers,
                decoder_dim=hf.decoder_hidden_size,
                decoder_heads=hf.decoder_num_attention_heads,
            ),
            loss=LossConfig(target="norm_pixels" if hf.norm_pix_loss else "pixels"),
            data=DataConfig(
                num_frames=hf.num_frames,
                channels=hf.num_channels,
                crop_size=_square(hf.image_size, "image_size", path),
            ),
        )
    except ConfigError as e:
        raise UserError(f"{path}: cannot build a bwssl model from this checkpoint: {e}") from e


def hf_videomae_config(
    path: str | Path, num_blocks: int = 4, boundaries: list[int] | None = None
) -> Config:
    """The bwssl :class:`Config` of a local HF VideoMAE checkpoint folder, cut into K blocks.

    ``regime`` is ``e2e`` (one decoder, at the last block); the clip shape
    (``data.num_frames``, ``data.crop_size``, ``data.channels``) is the checkpoint's.
    Raises :class:`UserError` for what bwssl cannot represent: another model type,
    an activation other than exact GELU, non-square images or patches.
    """
    folder, hf = _read_hf_config(path)
    return _bwssl_config(hf, num_blocks, boundaries, folder)


def from_hf_videomae(
    path: str | Path, num_blocks: int = 4, boundaries: list[int] | None = None
) -> BlockwiseModel:
    """Load a local Hugging Face VideoMAE checkpoint folder as a bwssl model of K blocks.

    ``path`` holds ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``
    (sharded ``*.index.json`` too), saved from ``VideoMAEModel``,
    ``VideoMAEForPreTraining`` or ``VideoMAEForVideoClassification`` (the
    ``videomae.`` prefix is stripped; classifier heads are ignored). Layers are cut
    evenly into ``num_blocks`` blocks, or at ``boundaries`` (see
    :class:`~bwssl.config.ModelConfig`).

    What is equal: ``model.block_outputs(x)[k]`` equals HF's
    ``hidden_states[stop_k]`` (``output_hidden_states=True``; index 0 is the
    embedding output) for every block k but the last, and the last block's output
    equals HF's ``last_hidden_state``, for the same clip given to HF as
    ``x.permute(0, 2, 1, 3, 4)`` (ours is (B, C, T, H, W), HF's (B, T, C, H, W)).
    So the last block ends with the final LayerNorm when the checkpoint has one
    (``use_mean_pooling=False``, the pre-training checkpoints). With
    ``use_mean_pooling=True`` HF normalizes no token (classification checkpoints
    normalize the pooled vector with ``fc_norm``, which is not imported): the last
    block then has no final norm (``blocks[-1].norm is None``).

    The checkpoint's decoder (``VideoMAEForPreTraining``) becomes
    ``decoders[K-1]``, as in the ``e2e`` regime, and reproduces HF's logits;
    when its MLP width does not follow the encoder's MLP ratio (bwssl decoders
    share it) it is skipped with a warning. Without a decoder the model has
    ``head_blocks == ()``: ``block_outputs`` works, the reconstruction losses do not.

    HF's LayerNorm eps (``layer_norm_eps``, 1e-12 by default, and 1e-5 in the
    decoder's final norm) is set on the modules, since bwssl models are built with
    1e-6; it is kept in memory only, not in the bwssl config. A checkpoint without
    q/v biases (``qv_bias=False``) gets zero biases, which computes the same.
    The model is returned in eval mode, in float32, on the CPU.
    """
    folder, hf = _read_hf_config(path)
    cfg = _bwssl_config(hf, num_blocks, boundaries, folder)
    weights = _read_weights(folder)
    m, k_last = cfg.model, cfg.model.num_blocks - 1
    decoder = "encoder_to_decoder.weight" in weights
    if decoder and int(m.decoder_dim * m.mlp_ratio) != hf.decoder_intermediate_size:
        warnings.warn(
            f"{path}: decoder MLP width {hf.decoder_intermediate_size} is not "
            f"decoder width x encoder MLP ratio ({m.decoder_dim} x {m.mlp_ratio:g}); "
            "importing the encoder only",
            stacklevel=2,
        )
        decoder = False
    model = build_model(cfg, head_blocks=[k_last] if decoder else [])
    if hf.use_mean_pooling:
        model.blocks[k_last].norm = None
    _set_norm_eps(model, hf.layer_norm_eps)
    _check_position_table(weights, model, path)

    single, fused = _name_table(model, k_last if decoder else None)
    state, missing = {}, []
    for ours, theirs in single.items():
        if theirs in weights:
            state[ours] = weights.pop(theirs)
        elif theirs.endswith(("q_bias", "v_bias")) and not _qv_bias(hf):
            state[ours] = torch.zeros(model.state_dict()[ours].shape)
        else:
            missing.append(theirs)
    for ours, names in fused.items():
        if all(n in weights for n in names):
            state[ours] = torch.cat([weights.pop(n) for n in names])
        else:
            missing += [n for n in names if n not in weights]
    for key in [k for k in weights if k.endswith("attention.attention.key.bias")]:
        if weights[key].any():
            raise UserError(f"{path}: {key} is non-zero; bwssl attention has no key bias")
        del weights[key]
    if missing:
        raise UserError(
            f"{path}: missing weights {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    unknown = [k for k in weights if k.startswith(_ENCODER_PREFIXES)]
    if unknown:
        raise UserError(f"{path}: encoder weights bwssl cannot place: {', '.join(unknown[:5])}")
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise UserError(
            f"{path}: weights do not fit the model its config.json describes: {e}"
        ) from e
    return model.eval()


def _check_position_table(
    weights: dict[str, torch.Tensor], model: BlockwiseModel, path: str | Path
) -> None:
    """Fail unless the checkpoint's position embedding is bwssl's fixed sinusoid table."""
    ours = model.blocks[0].pos_embed  # (N, D)
    stored = weights.pop("embeddings.position_embeddings", None)
    if stored is not None and not torch.allclose(
        stored.float().reshape(ours.shape), ours, atol=1e-5
    ):
        raise UserError(
            f"{path}: the checkpoint stores its own position embeddings; bwssl "
            "models use the fixed sinusoid table only"
        )
    try:
        from transformers.models.videomae import modeling_videomae
    except ImportError:  # a transformers layout we do not know; the parity tests still run
        return
    reference = getattr(modeling_videomae, "get_sinusoid_encoding_table", None)
    if reference is not None:  # rows are independent: a prefix checks the formula
        n = min(ours.shape[0], 64)
        if not torch.allclose(reference(n, ours.shape[1])[0], ours[:n], atol=1e-6):
            raise UserError(
                "this transformers version's VideoMAE position table differs from "
                "bwssl's fixed sinusoid; the import would not match HF"
            )


# --- export --------------------------------------------------------------------------------


def _uniform_eps(modules: list[nn.LayerNorm], what: str) -> float:
    values = {norm.eps for norm in modules}
    if len(values) != 1:
        raise UserError(
            f"the {what} LayerNorms use different eps {sorted(values)}; HF VideoMAE "
            "has one layer_norm_eps"
        )
    return values.pop()


def videomae_config(cfg: Config, **extra: Any) -> Any:
    """The ``transformers.VideoMAEConfig`` of a bwssl video ViT config with its decoder (clip
    format, token grid, encoder and decoder shapes, normalized-pixel loss); ``extra`` sets or
    overrides any other field."""
    transformers = _transformers()
    m, d = cfg.model, cfg.data
    fields: dict[str, Any] = {
        "image_size": d.crop_size,
        "patch_size": m.patch_size,
        "num_channels": d.channels,
        "num_frames": d.num_frames,
        "tubelet_size": m.tubelet_size,
        "hidden_size": m.embed_dim,
        "num_hidden_layers": m.depth,
        "num_attention_heads": m.num_heads,
        "intermediate_size": int(m.embed_dim * m.mlp_ratio),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "use_mean_pooling": False,
        "decoder_hidden_size": m.decoder_dim,
        "decoder_num_hidden_layers": m.decoder_depth,
        "decoder_num_attention_heads": m.decoder_heads,
        "decoder_intermediate_size": int(m.decoder_dim * m.mlp_ratio),
        "norm_pix_loss": cfg.loss.target == "norm_pixels",
    }
    return transformers.VideoMAEConfig(**{**fields, **extra})


def export_hf(
    source: str | Path | BlockwiseModel, out_dir: str | Path, decoder: bool = True
) -> Path:
    """Write a bwssl model as a Hugging Face VideoMAE checkpoint folder; returns ``out_dir``.

    ``source`` is a run directory (``checkpoints/final.pt``, else ``last.pt``), a
    checkpoint file, or a model. ``out_dir`` receives ``config.json`` and
    ``model.safetensors``. With ``decoder`` and a decoder at the last block
    (every regime has one) the folder is a ``VideoMAEForPreTraining`` checkpoint
    (encoder under ``videomae.``); otherwise a ``VideoMAEModel`` one. Both load
    with ``VideoMAEModel.from_pretrained``, whose ``last_hidden_state`` equals
    our last block's output, ``hidden_states`` the earlier block outputs.
    The block cut itself is not stored: pass K again to :func:`from_hf_videomae`.

    HF's decoder ends with a LayerNorm of fixed eps 1e-5 where ours has 1e-6, so
    exported decoder predictions agree with ours to about 1e-5, not exactly.
    """
    _transformers()  # a clear error when transformers is missing
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise UserError(f"export needs safetensors: {INSTALL_HINT}") from e
    model = source if isinstance(source, BlockwiseModel) else load_model(source)
    if not isinstance(model.backbone, VideoViT):
        raise UserError(
            f"only video ViT encoders can be exported to Hugging Face VideoMAE, "
            f"not model.arch={model.objective.cfg.model.arch}"
        )
    if model.objective.cfg.model.rope:
        raise UserError(
            "a model with model.rope=true cannot be exported to Hugging Face VideoMAE: "
            "VideoMAE has no rotary position embeddings, only an added sinusoid table"
        )
    if model.objective.cfg.model.boundary_norm:
        raise UserError(
            "a model with model.boundary_norm=true cannot be exported to Hugging Face VideoMAE: "
            "VideoMAE has no LayerNorm between its layers' blocks"
        )
    if not model.objective.reconstructs_pixels:
        decoder = False  # a projector or other head has no VideoMAE counterpart
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_dir} exists and is not a folder")
    k_last = model.num_blocks - 1
    decoder_block = k_last if decoder and k_last in model.head_blocks else None
    layer_norms = [n for b in model.blocks for n in _layer_norms(b)]
    if decoder_block is not None:
        layer_norms += list(_layer_norms(model.head(decoder_block).layers))
    eps = _uniform_eps(layer_norms, "encoder and decoder")
    arch = "VideoMAEForPreTraining" if decoder_block is not None else "VideoMAEModel"
    hf_cfg = videomae_config(
        model.objective.cfg,
        layer_norm_eps=eps,
        qkv_bias=True,  # transformers >= 5 reads it as qv_bias
        use_mean_pooling=model.blocks[k_last].norm is None,
        architectures=[arch],
    )

    state = model.state_dict()
    single, fused = _name_table(model, decoder_block)
    prefix = "videomae." if decoder_block is not None else ""

    def hf_name(name: str) -> str:
        return prefix + name if name.startswith(_ENCODER_PREFIXES) else name

    tensors = {hf_name(theirs): state[ours] for ours, theirs in single.items()}
    for ours, names in fused.items():
        tensors.update(zip(map(hf_name, names), state[ours].chunk(3), strict=True))
    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}

    out.mkdir(parents=True, exist_ok=True)
    hf_cfg.save_pretrained(str(out))
    atomic_write_file(
        out / "model.safetensors",
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}),
    )
    return out
