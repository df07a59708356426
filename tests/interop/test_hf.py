"""Parity of bwssl models with Hugging Face transformers VideoMAE, both directions.

Tiny random HF configs built here (no downloads): clips of 4 frames at 32 px,
tubelet 2, patch 8 (2x4x4 = 32 tokens).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bwssl.cli import main  # noqa: E402
from bwssl.config import load_config  # noqa: E402
from bwssl.data.masking import tube_mask  # noqa: E402
from bwssl.data.transforms import normalize  # noqa: E402
from bwssl.errors import UserError  # noqa: E402
from bwssl.interop import export_hf, from_hf_videomae, hf_videomae_config  # noqa: E402
from bwssl.models.blockwise import BlockwiseModel, build_model  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: threads only add spin-waiting, which is slow on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.logging.set_verbosity(level)
    transformers.utils.logging.enable_progress_bar()


def _hf_config(**overrides):
    kw = dict(
        image_size=32,
        patch_size=8,
        num_channels=3,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    kw.update(overrides)
    return transformers.VideoMAEConfig(**kw)


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random offsets on every parameter, so zero-initialized biases are tested too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _save_hf(model, path: Path, seed: int = 0) -> Path:
    _perturb(model, seed)
    model.eval().save_pretrained(str(path))
    return path


def _clip(b: int = 2, t: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    """A normalized clip (B, C, T, H, W), ours."""
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(b, 3, t, size, size, generator=g), channel_dim=1)


def _hf_forward(model, video: torch.Tensor):
    base = getattr(model, "videomae", model)
    with torch.no_grad():
        return base(video.permute(0, 2, 1, 3, 4), output_hidden_states=True)


def _assert_block_parity(ours: BlockwiseModel, hf_model, video: torch.Tensor) -> None:
    """Block k's output == HF hidden state at its boundary; the last == last_hidden_state."""
    out = _hf_forward(hf_model, video)
    with torch.no_grad():
        blocks = ours.block_outputs(video)
    ranges = ours.backbone.cfg.block_ranges()
    for k, (_, stop) in enumerate(ranges[:-1]):
        torch.testing.assert_close(blocks[k], out.hidden_states[stop], atol=ATOL, rtol=0)
    torch.testing.assert_close(blocks[-1], out.last_hidden_state, atol=ATOL, rtol=0)


# --- import --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["final_norm", "mean_pooling"])
def hf_encoder(request, tmp_path_factory):
    """A random VideoMAEModel saved to disk: (model, folder)."""
    model = transformers.VideoMAEModel(_hf_config(use_mean_pooling=request.param))
    return model, _save_hf(model, tmp_path_factory.mktemp("hf"))


@pytest.mark.parametrize(("k", "boundaries"), [(2, None), (3, None), (3, [1, 4]), (1, None)])
def test_import_block_outputs_equal_hf_hidden_states(hf_encoder, k, boundaries):
    hf_model, folder = hf_encoder
    ours = from_hf_videomae(folder, num_blocks=k, boundaries=boundaries)
    assert ours.num_blocks == k and ours.head_blocks == ()
    assert (ours.blocks[-1].norm is None) == hf_model.config.use_mean_pooling
    _assert_block_parity(ours, hf_model, _clip())


def test_hf_position_table_is_ours(hf_encoder):
    hf_model, folder = hf_encoder
    ours = from_hf_videomae(folder, num_blocks=2)
    torch.testing.assert_close(
        hf_model.embeddings.position_embeddings[0], ours.blocks[0].pos_embed, atol=1e-6, rtol=0
    )


def test_import_config_describes_the_checkpoint(hf_encoder):
    _, folder = hf_encoder
    cfg = hf_videomae_config(folder, num_blocks=3)
    m, d = cfg.model, cfg.data
    assert (m.embed_dim, m.depth, m.num_heads, m.mlp_ratio) == (32, 6, 2, 2.0)
    assert (m.tubelet_size, m.patch_size, d.num_frames, d.crop_size, d.channels) == (2, 8, 4, 32, 3)
    assert cfg.regime == "e2e" and m.block_ranges() == [(0, 2), (2, 4), (4, 6)]


def test_import_without_qv_bias_odd_mlp_width_and_large_eps(tmp_path):
    hf_model = transformers.VideoMAEModel(
        _hf_config(qv_bias=False, intermediate_size=50, layer_norm_eps=1e-2, use_mean_pooling=False)
    )
    ours = from_hf_videomae(_save_hf(hf_model, tmp_path), num_blocks=2)
    assert ours.blocks[0].layers.layers[0].mlp[0].out_features == 50
    assert not ours.blocks[0].layers.layers[0].attn.q_bias.any()
    _assert_block_parity(ours, hf_model, _clip())


def test_import_pretraining_checkpoint_brings_its_decoder(tmp_path):
    hf_model = transformers.VideoMAEForPreTraining(_hf_config(use_mean_pooling=False))
    ours = from_hf_videomae(_save_hf(hf_model, tmp_path), num_blocks=3)
    assert ours.head_blocks == (2,)
    video = _clip()
    _assert_block_parity(ours, hf_model, video)

    mask = tube_mask(
        2, ours.backbone.grid, 0.75, torch.Generator().manual_seed(0)
    )  # (B, N) True = hidden
    with torch.no_grad():
        hf_out = hf_model(video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)
        step = ours.objective.step_from_mask(video, mask)
        h = video
        for k in range(ours.num_blocks):
            h = ours.forward_block(k, h, step.block_inputs[0])
        pred = ours.head(2)(h, step.visible_idx, step.target_idx)
        loss = ours.local_losses(step)[2]
    torch.testing.assert_close(pred, hf_out.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, hf_out.loss, atol=ATOL, rtol=1e-5)


def test_import_decoder_with_other_mlp_ratio_is_skipped(tmp_path):
    hf_model = transformers.VideoMAEForPreTraining(_hf_config(decoder_intermediate_size=48))
    with pytest.warns(UserWarning, match="encoder only"):
        ours = from_hf_videomae(_save_hf(hf_model, tmp_path), num_blocks=2)
    assert ours.head_blocks == ()
    _assert_block_parity(ours, hf_model, _clip())


@pytest.mark.parametrize("layout", ["bin", "sharded"])
def test_import_classification_checkpoint_in_other_file_layouts(tmp_path, layout):
    hf_model = transformers.VideoMAEForVideoClassification(_hf_config(num_labels=5))
    _perturb(hf_model)
    hf_model.eval()
    if layout == "bin":
        hf_model.config.save_pretrained(str(tmp_path))
        torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        hf_model.save_pretrained(str(tmp_path), max_shard_size="40KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = from_hf_videomae(tmp_path, num_blocks=2)
    assert ours.head_blocks == () and ours.blocks[-1].norm is None
    _assert_block_parity(ours, hf_model, _clip())


def test_import_errors_are_clear(tmp_path, hf_encoder, monkeypatch):
    _, folder = hf_encoder
    with pytest.raises(UserError, match="not a folder"):
        from_hf_videomae(tmp_path / "missing")
    with pytest.raises(UserError, match=r"no config\.json"):
        from_hf_videomae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(UserError, match="model_type 'vit'"):
        from_hf_videomae(tmp_path)
    _hf_config().save_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="holds no weights"):
        from_hf_videomae(tmp_path, num_blocks=2)
    _hf_config(hidden_act="relu").save_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="exact GELU"):
        from_hf_videomae(tmp_path, num_blocks=2)
    with pytest.raises(UserError, match=r"model\.num_blocks"):
        from_hf_videomae(folder, num_blocks=4)  # 6 layers
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"pip install 'bwssl\[hf\]'"):
        from_hf_videomae(folder)


def test_import_reports_missing_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _save_hf(transformers.VideoMAEModel(_hf_config(use_mean_pooling=False)), tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["encoder.layer.3.attention.attention.key.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"missing weights encoder\.layer\.3\.attention"):
        from_hf_videomae(folder, num_blocks=2)


# --- export --------------------------------------------------------------------------------


def _run_dir(tmp_path: Path, *overrides: str) -> tuple[Path, BlockwiseModel]:
    """A run directory with checkpoints/final.pt in the trainer's format."""
    cfg = load_config("tiny-debug", list(overrides))
    torch.manual_seed(0)
    model = build_model(cfg)
    _perturb(model, seed=3)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"model": model.state_dict(), "config": cfg.to_dict()}, run / "checkpoints" / "final.pt"
    )
    return run, model.eval()


@pytest.mark.parametrize(
    "overrides", [("regime=e2e",), ("model.num_blocks=4",), ("model.shared_decoder=true",)]
)
def test_export_loads_in_transformers_with_equal_outputs(tmp_path, overrides):
    run, ours = _run_dir(tmp_path, *overrides)
    out = export_hf(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "VideoMAEForPreTraining"
    ]

    hf_model, info = transformers.VideoMAEModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    video = _clip()
    _assert_block_parity(ours, hf_model.eval(), video)

    pretrain, info = transformers.VideoMAEForPreTraining.from_pretrained(
        str(out), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    k = ours.num_blocks - 1
    mask = tube_mask(2, ours.backbone.grid, 0.75, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = pretrain.eval()(video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).logits
        step = ours.objective.step_from_mask(video, mask)
        h = video
        for i in range(ours.num_blocks):
            h = ours.forward_block(i, h, step.block_inputs[0])
        pred = ours.head(k)(h, step.visible_idx, step.target_idx)
    # HF's decoder norm has eps 1e-5 where ours has 1e-6: close, not exact
    torch.testing.assert_close(logits, pred, atol=1e-4, rtol=1e-4)

    back = from_hf_videomae(out, num_blocks=ours.num_blocks)
    state = ours.state_dict()
    for key, value in back.state_dict().items():
        torch.testing.assert_close(
            value,
            state[key.replace(f"decoders.{k}", "decoders.0")]
            if "shared_decoder=true" in overrides[0]
            else state[key],
            atol=0,
            rtol=0,
        )


def test_export_of_an_imported_model_round_trips(hf_encoder, tmp_path):
    hf_model, folder = hf_encoder
    ours = from_hf_videomae(folder, num_blocks=3)
    out = export_hf(ours, tmp_path / "again")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEModel"]
    assert config["layer_norm_eps"] == hf_model.config.layer_norm_eps
    assert config["use_mean_pooling"] == hf_model.config.use_mean_pooling
    reloaded = transformers.VideoMAEModel.from_pretrained(str(out)).eval()
    video = _clip()
    a, b = _hf_forward(hf_model, video), _hf_forward(reloaded, video)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=0, rtol=0)


def test_cli_export_hf(tmp_path, capsys):
    run, ours = _run_dir(tmp_path)
    out = tmp_path / "hf"
    assert main(["export-hf", str(run), str(out), "--encoder-only"]) == 0
    assert "VideoMAEModel" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    hf_model = transformers.VideoMAEModel.from_pretrained(str(out)).eval()
    _assert_block_parity(ours, hf_model, _clip())

    assert main(["export-hf", str(run / "checkpoints" / "final.pt"), str(out)]) == 0
    assert "VideoMAEForPreTraining" in capsys.readouterr().out

    assert main(["export-hf", str(tmp_path / "no-such-run"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no-such-run" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_export_without_transformers_says_how_to_install(tmp_path, monkeypatch, capsys):
    run, _ = _run_dir(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["export-hf", str(run), str(tmp_path / "hf")]) == 2
    assert "pip install 'bwssl[hf]'" in capsys.readouterr().err


def test_export_of_a_joint_embedding_model_writes_its_encoder_only(tmp_path):
    """A projector has no VideoMAE counterpart: the encoder is exported as VideoMAEModel."""
    cfg = load_config("tiny-debug", ["objective.name=barlow_twins", "regime=e2e"])
    model = build_model(cfg).eval()
    out = export_hf(model, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["VideoMAEModel"]
    hf_model = transformers.VideoMAEModel.from_pretrained(str(out)).eval()
    video = normalize(torch.rand(2, 3, 4, 32, 32), channel_dim=1)
    with torch.no_grad():
        ours = model.block_outputs(video)[-1]
        theirs = hf_model(video.permute(0, 2, 1, 3, 4)).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
