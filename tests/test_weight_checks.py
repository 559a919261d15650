"""Checks on load that no weight file can slip past: NaN/inf in any part, a network file
holding another variant, a ControlNet on other base weights, parts that do not belong together
(named, with advice for the part that is wrong), model sets in sub-folders, smoke-test sets."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import pytest
import torch

from nag_core.checkpoint import read_checkpoint, write_safetensors, write_torch
from nag_core.controlnet import load_controlnet, save_controlnet
from nag_core.errors import WeightsError
from nag_core.smoke import write_smoke_models
from nag_core.weights import find_model_files, find_vocab, load_model_files

from nag_tiny import controlnet, tiny_network


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    write_smoke_models(root)
    return root


def _copy(smoke, tmp_path):
    dst = tmp_path / "set"
    shutil.copytree(smoke, dst)
    return dst


# --------------------------------------------------------------------------- a folder in the way
def test_a_folder_where_a_weight_file_belongs_is_named_as_a_folder_offline(smoke, tmp_path,
                                                                          monkeypatch):
    """Offline nothing can be fetched: a folder in a weight file's place is named as what it is
    (the user sees it there: "missing" would send them looking for the wrong thing), next to
    the files that really are missing; the folder is left as it is."""
    from nag_core.download import ensure_model_files
    root = _copy(smoke, tmp_path)
    (root / "v1-16.pth").unlink()
    (root / "v1-16.pth").mkdir()
    (root / "best_netG.pt").unlink()
    for find in (lambda: find_model_files(root, "small_16k"),
                 lambda: ensure_model_files("small_16k", root, offline=True)):
        with pytest.raises(WeightsError) as e:
            find()
        lines = str(e.value).splitlines()
        folder = [ln for ln in lines if "v1-16.pth" in ln]
        assert len(folder) == 1 and "missing" not in folder[0], lines
        assert f"{root / 'v1-16.pth'} is a directory, expected a file; remove or rename it" \
            in folder[0]
        assert any(f"{root / 'best_netG.pt'}  missing" in ln for ln in lines), lines
    assert (root / "v1-16.pth").is_dir()

    root = _copy(smoke, tmp_path / "vocab")  # the vocabulary is looked for after the weights
    from nag_core.mmaudio import tokenizer  # as without open_clip_torch's copy of it
    monkeypatch.setattr(tokenizer, "_installed_open_clip_vocab", lambda: None)
    vocab = next(root.glob("bpe_simple_vocab*"))
    vocab.unlink()
    vocab.mkdir()
    with pytest.raises(WeightsError, match=f"{vocab} is a directory, expected a file; remove or "
                                           "rename it"):
        ensure_model_files("small_16k", root, offline=True)


# --------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("kind", ["network", "clip", "synchformer", "vae", "vocoder"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_weight_in_any_part_is_refused_naming_the_file(smoke, tmp_path, kind, bad):
    root = _copy(smoke, tmp_path)
    files = find_model_files(root, "small_16k")
    path = getattr(files, kind)
    obj, _ = read_checkpoint(path)
    sd = obj["generator"] if kind == "vocoder" and "generator" in obj else obj
    name = next(k for k, v in sorted(sd.items()) if v.is_floating_point() and v.numel() > 1)
    sd[name] = sd[name].clone().view(-1).index_fill(0, torch.tensor([1]), bad).view_as(sd[name])
    write_torch(obj, path)
    with pytest.raises(WeightsError) as e:
        load_model_files(files)
    assert str(path) in str(e.value) and "NaN or infinite" in str(e.value)


def test_a_non_finite_controlnet_weight_is_refused(tmp_path):
    net = tiny_network()
    path = tmp_path / "cn.safetensors"
    save_controlnet(controlnet(net, nonzero=True), path)
    state, meta = read_checkpoint(path)
    key = sorted(state)[0]
    state[key] = torch.full_like(state[key], float("nan"))
    write_safetensors(state, path, metadata=meta)
    with pytest.raises(WeightsError, match="NaN or infinite") as e:
        load_controlnet(path, net)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- variants
def test_the_detected_variant_is_exposed_and_another_released_one_refused(smoke, tmp_path,
                                                                         monkeypatch):
    """The smoke network's config is registered as a released variant, so a file of one
    variant under another variant's name can be made at test size."""
    from nag_core.mmaudio import variants
    from nag_core.smoke import tiny_network_config

    assert load_model_files(find_model_files(smoke, "small_16k")).variant == "custom"
    files = find_model_files(smoke, "small_16k")
    monkeypatch.setitem(variants.VARIANTS, "medium_44k", tiny_network_config("16k"))
    with pytest.raises(WeightsError, match="holds the weights of MMAudio medium_44k, not of the "
                                           "requested small_16k") as e:
        load_model_files(files)
    assert str(files.network) in str(e.value)
    monkeypatch.undo()
    monkeypatch.setitem(variants.VARIANTS, "small_16k", tiny_network_config("16k"))
    assert load_model_files(files).variant == "small_16k"


# --------------------------------------------------------------------------- ControlNet base
def test_a_controlnet_refuses_other_base_weights_of_the_same_shape(tmp_path):
    base, other = tiny_network(seed=0), tiny_network(seed=1)
    path = tmp_path / "cn.safetensors"
    save_controlnet(controlnet(base, nonzero=True), path)
    load_controlnet(path, base)  # its own base
    load_controlnet(path, tiny_network(seed=0).to(torch.bfloat16))  # the same base in bf16
    with pytest.raises(WeightsError, match="trained on other base weights") as e:
        load_controlnet(path, other)
    assert str(path) in str(e.value) and "sampled weights differ" in str(e.value)


def test_a_controlnet_without_a_fingerprint_warns_loudly(tmp_path, caplog):
    base = tiny_network(seed=0)
    cn = controlnet(base, nonzero=True)
    cn._config = dataclasses.replace(cn.config, base_fingerprint="")  # as files written before
    path = tmp_path / "old.safetensors"
    save_controlnet(cn, path)
    with caplog.at_level(logging.WARNING):
        load_controlnet(path, tiny_network(seed=1))
    assert any("carries no fingerprint" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)


def test_the_fingerprint_survives_an_ema_copy_of_the_config(tmp_path):
    """Everything that carries the config (EMA profiles, snapshots) carries the fingerprint."""
    from nag_core.train.loop import controlnet_from_state
    base = tiny_network(seed=0)
    cn = controlnet(base, nonzero=True)
    assert cn.config.base_fingerprint.startswith("v1:")
    path = tmp_path / "ema.safetensors"
    save_controlnet(controlnet_from_state(cn.config, cn.state_dict()), path)
    with pytest.raises(WeightsError, match="other base weights"):
        load_controlnet(path, tiny_network(seed=3))


# --------------------------------------------------------------------------- mismatches, sets
def test_a_clip_of_another_set_is_named_with_advice_for_the_clip(smoke, tmp_path):
    from nag_core.mmaudio.clip import save_clip, tiny_clip
    root = _copy(smoke, tmp_path)
    files = find_model_files(root, "small_16k")
    save_clip(tiny_clip(seed=9, embed_dim=32, width=64), files.clip)
    with pytest.raises(WeightsError) as e:
        load_model_files(files)
    msg = str(e.value)
    assert files.clip.name in msg and files.network.name in msg
    assert "Use the CLIP" in msg and "VAE of the network's mode" not in msg


def test_a_set_in_a_sub_folder_is_taken_whole(smoke, tmp_path):
    """models/ holds another set's VAE and vocabulary at its top; the set in world/ must use
    its own parts and its own vocabulary (beside its CLIP), not those."""
    from nag_core.mmaudio.tokenizer import write_tiny_bpe_vocab
    from nag_core.mmaudio.vae import save_vae_checkpoint, tiny_vae
    root = tmp_path / "models"
    shutil.copytree(smoke, root / "world")
    (root / "world" / "bpe_simple_vocab_16e6.txt.gz").unlink()
    own_vocab = write_tiny_bpe_vocab(
        root / "world" / "apple" / "DFN5B-CLIP-ViT-H-14-384" / "bpe_simple_vocab_16e6.txt.gz")
    save_vae_checkpoint(tiny_vae("16k", seed=42), root / "v1-16.pth")
    write_tiny_bpe_vocab(root / "bpe_simple_vocab_16e6.txt.gz", num_merges=20)
    files = find_model_files(root, "small_16k")
    assert files.network == root / "world" / "mmaudio_small_16k.pth"
    assert files.vae == root / "world" / "v1-16.pth"
    assert files.bpe_vocab == own_vocab
    assert find_vocab(files.clip, files.network, root) == own_vocab
    model = load_model_files(files)
    assert model.tokenizer.vocab_path == own_vocab


def test_loading_a_smoke_set_warns_loudly(smoke, caplog):
    with caplog.at_level(logging.WARNING):
        model = load_model_files(find_model_files(smoke, "small_16k"))
    assert model.smoke_test_weights
    assert any("SMOKE-TEST WEIGHTS" in r.getMessage() for r in caplog.records)


def test_real_looking_weights_do_not_warn(smoke, tmp_path, caplog):
    root = _copy(smoke, tmp_path)
    (root / "SMOKE_TEST_MODELS.txt").unlink()
    with caplog.at_level(logging.WARNING):
        model = load_model_files(find_model_files(root, "small_16k"))
    assert not model.smoke_test_weights
    assert not any("SMOKE" in r.getMessage() for r in caplog.records)
