"""The ComfyUI nodes, run without ComfyUI on the tiny smoke-test models."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
import uuid

import pytest
import torch

from nodes_support import (CONTROLNET_FILE, DEMO_SECONDS, DEMO_VIDEO, MODEL_FILES, ROOT,
                           controlnet_models, load_pack, loaded, result, submodule, use_workspace,
                           write_controlnet)

# Core node ids: a custom id equal to one of them is silently dropped by ComfyUI.
CORE_IDS = {"LoadVideo", "LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus",
            "RecordAudio", "EmptyAudio", "TrimAudioDuration", "SplitAudioChannels", "AudioConcat",
            "AudioMerge", "AudioAdjustVolume", "EmptyLatentAudio", "VAEEncodeAudio",
            "VAEDecodeAudio", "SaveVideo", "SaveWEBM", "CreateVideo", "GetVideoComponents",
            "AudioEncoderLoader", "LoadImage", "SaveImage", "KSampler", "VAELoader"}
KNOWN_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "AUDIO", "VIDEO", "IMAGE", "NAGFOLEY_VIDEO",
               "NAGFOLEY_MODEL", "NAGFOLEY_CONTROLNET", "NAGFOLEY_VIDEO_FEATURES",
               "NAGFOLEY_CHAIN"}


def nodes():
    return load_pack().NODE_CLASS_MAPPINGS


def sample(monkeypatch, prompt="a ball bounces", **kw):
    model, controlnet, _, features = loaded(monkeypatch)
    settings = dict(method="nag", alpha=4.5, beta=1.5, steps=3, seed=1)
    settings.update(kw)
    return result(nodes()["NAGFoley_NAGSampler"]().sample(model, features, prompt,
                                                          **settings))[0]


# ----------------------------------------------------------------------------- the package
def test_pack_imports_as_a_package_with_prefixed_ids():
    name = f"nagfoley_pack_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        keys = set(module.NODE_CLASS_MAPPINGS)
        assert keys and all(k.startswith("NAGFoley_") for k in keys)
        assert not keys & CORE_IDS
        assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == keys
        assert "nodes" not in sys.modules or not str(getattr(sys.modules["nodes"], "__file__", "")
                                                     ).startswith(str(ROOT / "nodes"))
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]


@pytest.mark.parametrize("node_id", sorted(load_pack().NODE_CLASS_MAPPINGS))
def test_input_types_are_well_formed(node_id):
    cls = nodes()[node_id]
    assert cls.CATEGORY.startswith("audio/NAG Foley")
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    if cls.RETURN_TYPES:
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    else:
        assert cls.OUTPUT_NODE
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            kind, opts = s[0], s[1]
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list):
                assert all(isinstance(o, str) for o in kind)
                if "default" in opts and kind:
                    assert opts["default"] in kind
                continue
            assert kind in KNOWN_TYPES, f"{node_id}.{name}: unknown type {kind}"
            if kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name}"
                assert isinstance(opts["default"], int if kind == "INT" else float)
            if kind == "BOOLEAN":
                assert isinstance(opts["default"], bool)


def test_seed_input_gets_the_frontend_seed_control():
    spec = nodes()["NAGFoley_NAGSampler"].INPUT_TYPES()["required"]
    assert spec["seed"][0] == "INT" and spec["seed"][1].get("control_after_generate") is not False


# ----------------------------------------------------------------------------- host services
def test_host_registers_models_mmaudio_with_comfyui(monkeypatch, tmp_path):
    host = submodule("host")
    fake = types.SimpleNamespace(models_dir=str(tmp_path / "models"), folder_names_and_paths={})
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    assert host.register_model_folder() == [str(tmp_path / "models" / "mmaudio")]
    assert (tmp_path / "models" / "mmaudio").is_dir()
    paths, exts = fake.folder_names_and_paths["mmaudio"]
    assert ".safetensors" in exts and ".pth" in exts and ".json" not in exts
    # kijai's pack registered the key first (other path): ours is added, theirs kept.
    fake.folder_names_and_paths["mmaudio"] = (["/elsewhere/mmaudio"], {".safetensors"})
    assert host.register_model_folder() == ["/elsewhere/mmaudio", str(tmp_path / "models" /
                                                                      "mmaudio")]


def test_host_fallback_lists_weights_and_numbers_outputs(monkeypatch, tmp_path):
    host = submodule("host")
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("NAGFOLEY_OUTPUT_DIR", str(tmp_path / "out"))
    big = tmp_path / "m" / "nvidia" / "bigvgan_v2_44khz_128band_512x"
    big.mkdir(parents=True)
    (big / "bigvgan_generator.pt").write_bytes(b"x")
    (big / "config.json").write_text("{}")
    (tmp_path / "m" / "mmaudio_large_44k_v2_fp16.safetensors").write_bytes(b"x")
    assert host.list_model_files() == ["mmaudio_large_44k_v2_fp16.safetensors",
                                       "nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt"]
    model_nodes = submodule("model_nodes")
    assert model_nodes.files_of_kind("vocoder") == [
        "nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt"]
    assert model_nodes.files_of_kind("network") == ["mmaudio_large_44k_v2_fp16.safetensors"]
    folder, name, counter, sub = host.save_path("nag/foley")
    assert (name, counter, sub) == ("foley", 1, "nag")
    (tmp_path / "out" / "nag" / "foley_00007_mix.flac").write_bytes(b"")
    assert host.save_path("nag/foley")[2] == 8


def test_precision_auto_is_fp32_on_cpu():
    model_nodes = submodule("model_nodes")
    assert model_nodes.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert model_nodes.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


# ----------------------------------------------------------------------------- loading
def test_loader_combos_are_filtered_by_kind(monkeypatch):
    use_workspace(monkeypatch)
    spec = nodes()["NAGFoley_MMAudioLoader"].INPUT_TYPES()["required"]
    for kind, name in MODEL_FILES.items():
        assert spec[kind][0] == [name], kind
        assert spec[kind][1]["default"] == name
    cn = nodes()["NAGFoley_NAGControlNetLoader"].INPUT_TYPES()["required"]["controlnet"][0]
    assert cn == []  # a fresh install has no ControlNet
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(controlnet_models()))
    cn = nodes()["NAGFoley_NAGControlNetLoader"].INPUT_TYPES()["required"]["controlnet"][0]
    assert cn == [CONTROLNET_FILE]


def test_loader_builds_the_model_at_its_true_rate(monkeypatch):
    model, controlnet, clip, features = loaded(monkeypatch)
    assert model.sample_rate == 16000 and model.model.dtype == torch.float32
    assert clip.duration == pytest.approx(DEMO_SECONDS, abs=0.05)
    assert features.clip_f.device.type == "cpu"


def test_kijai_fp16_safetensors_conversions_load(monkeypatch, tmp_path):
    """The same weights saved as fp16 safetensors under kijai's names (flat state dicts, same
    keys) load through the loader and encode like the originals."""
    from nag_core.checkpoint import read_state_dict, write_safetensors
    root = use_workspace(monkeypatch)
    src = root / "models" / "mmaudio"
    dst = tmp_path / "mmaudio"
    dst.mkdir()
    names = {"network": "mmaudio_small_16k_fp16.safetensors",
             "vae": "mmaudio_vae_16k_fp16.safetensors",
             "vocoder": "mmaudio_vocoder_16k_fp16.safetensors",
             "synchformer": "mmaudio_synchformer_fp16.safetensors",
             "clip": "apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors"}
    for kind, name in names.items():
        sd = read_state_dict(src / MODEL_FILES[kind], unwrap=("generator",))
        write_safetensors({k: v.half().contiguous() if v.is_floating_point() else v
                           for k, v in sd.items()}, dst / name)
    (dst / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        (src / "bpe_simple_vocab_16e6.txt.gz").read_bytes())
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(dst))
    spec = nodes()["NAGFoley_MMAudioLoader"].INPUT_TYPES()["required"]
    for kind, name in names.items():
        assert spec[kind][0] == [name], kind
    fp16 = result(nodes()["NAGFoley_MMAudioLoader"]().load(**names, precision="fp32"))[0]
    original, _, clip, features = loaded(monkeypatch)
    assert fp16.sample_rate == 16000
    again = nodes()["NAGFoley_EncodeVideo"]().encode(fp16, clip)[0]
    torch.testing.assert_close(again.clip_f, features.clip_f, atol=5e-3, rtol=5e-3)


def test_the_loader_finds_the_vocabulary_as_the_cli_does(monkeypatch, tmp_path):
    """The loader node asks nag_core.weights.find_vocab (one rule for the CLI, the API and the
    nodes): a set kept in a sub-folder with its vocabulary beside the network is tokenized with
    that vocabulary, not with the one at the top of the folder."""
    from nag_core.weights import find_vocab
    root = use_workspace(monkeypatch)
    dst = tmp_path / "mmaudio"
    shutil.copytree(root / "models" / "mmaudio", dst)
    (dst / "set").mkdir()
    (dst / MODEL_FILES["network"]).rename(dst / "set" / MODEL_FILES["network"])
    vocab = dst / "set" / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy2(dst / vocab.name, vocab)
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(dst))
    picks = {**MODEL_FILES, "network": "set/" + MODEL_FILES["network"]}
    assert nodes()["NAGFoley_MMAudioLoader"].INPUT_TYPES()["required"]["network"][0] == [
        picks["network"]]
    model = result(nodes()["NAGFoley_MMAudioLoader"]().load(**picks))[0]
    assert model.model.tokenizer.vocab_path.resolve() == vocab.resolve()
    assert find_vocab(dst / picks["clip"], dst / picks["network"], dst) == vocab


def test_a_failed_load_is_not_cached_and_a_replaced_file_loads_again(monkeypatch, tmp_path):
    """A load that failed keeps nothing (fix the file, queue again: it loads), and a file
    replaced under the same name changes the loaders' IS_CHANGED, so ComfyUI loads it again
    instead of serving the model it cached; an untouched folder keeps its cached model."""
    import os

    from nag_core.errors import WeightsError
    root = use_workspace(monkeypatch)
    dst = tmp_path / "mmaudio"
    shutil.copytree(root / "models" / "mmaudio", dst)
    write_controlnet(dst / CONTROLNET_FILE, dst)
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(dst))
    loader, cn_loader = nodes()["NAGFoley_MMAudioLoader"], nodes()["NAGFoley_NAGControlNetLoader"]
    state = loader.IS_CHANGED(**MODEL_FILES, precision="auto", offload=False, graph=None,
                              node_id="1")
    cn_state = cn_loader.IS_CHANGED(model=None, controlnet=CONTROLNET_FILE, graph=None)
    assert state == loader.IS_CHANGED(**MODEL_FILES) and cn_state == cn_loader.IS_CHANGED(
        controlnet=CONTROLNET_FILE)
    vae = dst / MODEL_FILES["vae"]
    good = vae.read_bytes()
    vae.write_bytes(good[: len(good) // 2])  # a download cut short
    with pytest.raises(WeightsError, match=MODEL_FILES["vae"]):
        loader().load(**MODEL_FILES)
    broken = loader.IS_CHANGED(**MODEL_FILES)
    assert broken != state
    vae.write_bytes(good)  # fixed under the same name
    st = vae.stat()
    os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert loader.IS_CHANGED(**MODEL_FILES) not in (state, broken)
    model = result(loader().load(**MODEL_FILES))[0]  # the same node, queued again
    assert model.sample_rate == 16000
    vocab = dst / "bpe_simple_vocab_16e6.txt.gz"  # read from beside the chosen files
    before = loader.IS_CHANGED(**MODEL_FILES)
    os.utime(vocab, ns=(vocab.stat().st_atime_ns, vocab.stat().st_mtime_ns + 10**9))
    assert loader.IS_CHANGED(**MODEL_FILES) != before
    cn = dst / CONTROLNET_FILE
    os.utime(cn, ns=(cn.stat().st_atime_ns, cn.stat().st_mtime_ns + 10**9))
    assert cn_loader.IS_CHANGED(controlnet=CONTROLNET_FILE) != cn_state
    assert loader.IS_CHANGED(**{**MODEL_FILES, "vae": "gone.pth"}) == "missing"


def test_controlnet_for_another_model_is_a_clear_error(monkeypatch, tmp_path):
    from nag_core.errors import WeightsError
    from nag_core.mmaudio.network import MMAudioNetwork
    from nag_core.smoke import tiny_network_config
    import dataclasses
    model, *_ = loaded(monkeypatch)
    other = MMAudioNetwork(dataclasses.replace(tiny_network_config("16k"), hidden_dim=128,
                                               num_heads=2))
    cn_dir = tmp_path / "mmaudio"
    cn_dir.mkdir()
    write_controlnet(cn_dir / "other_controlnet.safetensors", cn_dir, network=other)
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(cn_dir))
    with pytest.raises(WeightsError, match="this ControlNet was trained for .* but the loaded "
                                           "MMAudio is"):
        nodes()["NAGFoley_NAGControlNetLoader"]().load(model, "other_controlnet.safetensors")


def test_44k_model_outputs_44100(monkeypatch, tmp_path):
    from nag_core.smoke import write_smoke_models
    root = use_workspace(monkeypatch)
    models = tmp_path / "mmaudio"
    write_smoke_models(models, modes=("44k",))
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(models))
    spec = nodes()["NAGFoley_MMAudioLoader"].INPUT_TYPES()["required"]
    assert spec["vocoder"][1]["default"] == ("nvidia/bigvgan_v2_44khz_128band_512x/"
                                             "bigvgan_generator.pt")
    picks = {k: v[1]["default"] for k, v in spec.items() if k in MODEL_FILES}
    model = result(nodes()["NAGFoley_MMAudioLoader"]().load(**picks))[0]
    clip = result(nodes()["NAGFoley_LoadVideo"]().load(DEMO_VIDEO, 0.0, 1.0))[0]
    feats = nodes()["NAGFoley_EncodeVideo"]().encode(model, clip)[0]
    audio = result(nodes()["NAGFoley_NAGSampler"]().sample(model, feats, "rain", steps=2,
                                                            seed=3))[0]
    assert audio["sample_rate"] == 44100
    assert audio["waveform"].shape == (1, 1, 44100)
    assert root.exists()


# ----------------------------------------------------------------------------- video in
def test_load_video_is_changed_follows_the_file(monkeypatch):
    root = use_workspace(monkeypatch)
    load = nodes()["NAGFoley_LoadVideo"]
    assert DEMO_VIDEO in load.INPUT_TYPES()["required"]["video"][0]
    assert load.INPUT_TYPES()["required"]["video"][1]["video_upload"] is True
    first = load.IS_CHANGED(DEMO_VIDEO, 0.0, 8.0)
    assert first == load.IS_CHANGED(DEMO_VIDEO, 0.0, 8.0)
    path = root / "input" / DEMO_VIDEO
    st = path.stat()
    import os
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load.IS_CHANGED(DEMO_VIDEO, 0.0, 8.0) != first
    assert load.VALIDATE_INPUTS("missing.mp4") != True  # noqa: E712  (an error string)


def test_video_from_frames_takes_an_image_batch(monkeypatch):
    images = torch.rand(60, 32, 40, 3)
    out = nodes()["NAGFoley_VideoFromFrames"]().convert(
        fps=24.0, start_time=0.5, duration=1.5, images=images)
    clip, duration = result(out)
    assert duration == pytest.approx(1.5)
    assert clip.clip_frames.shape[0] == 12 and clip.sync_frames.shape[0] == 37
    assert clip.path is None
    assert clip.warning is None and out["ui"]["text"] == []  # an empty note clears an old one


def test_a_short_source_is_a_note_on_the_video_nodes(monkeypatch):
    """The MediaWarning of a clip shorter than asked is the node's note (``ui.text``), word for
    word, not only a line in the server's console."""
    from nag_core.errors import MediaWarning
    from nag_core.media import decode_video
    root = use_workspace(monkeypatch)
    seconds = decode_video(root / "input" / DEMO_VIDEO, 0.0, None).duration
    asked = seconds + 5.0
    with pytest.warns(MediaWarning) as shown:
        out = nodes()["NAGFoley_LoadVideo"]().load(DEMO_VIDEO, 0.0, asked)
    clip, duration = result(out)
    assert duration == clip.duration < asked and clip.warning
    assert out["ui"]["text"] == ["warning: " + clip.warning] == [
        "warning: " + str(w.message) for w in shown]
    assert f"of the {asked:g} s asked" in clip.warning
    frames = torch.rand(15, 32, 40, 3)  # 1.5 s at 10 fps, 3 s asked
    with pytest.warns(MediaWarning):
        out = nodes()["NAGFoley_VideoFromFrames"]().convert(
            fps=10.0, start_time=0.0, duration=3.0, images=frames)
    assert out["ui"]["text"] == ["warning: " + result(out)[0].warning]
    assert "IMAGE batch (15 frames at 10 fps)" in out["ui"]["text"][0]
    WARNING = submodule("messages").WARNING  # the web extension shows lines so marked orange
    assert f'"{WARNING}"' in (ROOT / "web" / "nag_foley.js").read_text()


# ----------------------------------------------------------------------------- sampling
def test_sampler_outputs_true_rate_mono_audio(monkeypatch):
    audio = sample(monkeypatch)
    assert audio["sample_rate"] == 16000
    wave = audio["waveform"]
    assert wave.dtype == torch.float32 and wave.shape == (1, 1, int(DEMO_SECONDS * 16000))
    assert torch.isfinite(wave).all()


def test_same_seed_same_audio_other_seed_other_audio(monkeypatch):
    a = sample(monkeypatch, seed=5)["waveform"]
    b = sample(monkeypatch, seed=5)["waveform"]
    c = sample(monkeypatch, seed=6)["waveform"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_cancel_mid_sampling_leaves_the_pack_usable(monkeypatch):
    host = submodule("host")
    reference = sample(monkeypatch, seed=9, steps=4)["waveform"]
    calls = []

    class Interrupted(Exception):
        pass

    def cancel_on_second_step():
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted()

    monkeypatch.setattr(host, "check_interrupt", cancel_on_second_step)
    with pytest.raises(Interrupted):
        sample(monkeypatch, seed=9, steps=4)
    assert len(calls) == 2  # stopped inside the Euler loop, at the second step
    monkeypatch.undo()
    again = sample(monkeypatch, seed=9, steps=4)["waveform"]
    assert torch.equal(again, reference)


def test_progress_reaches_every_euler_step(monkeypatch):
    host = submodule("host")
    seen = []
    monkeypatch.setattr(host.Progress, "__call__", lambda self, i, n=None: seen.append((i, n)))
    sample(monkeypatch, steps=3)
    assert [i for i, _ in seen] == [1, 2, 3] and all(n == 3 for _, n in seen)


def test_step_k_conditions_on_the_mix_and_methods_differ(monkeypatch):
    mix_node = nodes()["NAGFoley_MixAndNormalize"]()
    first = sample(monkeypatch, "a ball bounces", seed=1)
    chain, mix = result(mix_node.mix(first, 0.0))
    outs = {m: sample(monkeypatch, "rain", seed=2, method=m, negative_audio=mix,
                      controlnet=loaded(monkeypatch)[1])["waveform"]
            for m in ("nag", "negative_prompt", "independent")}
    plain = sample(monkeypatch, "rain", seed=2)["waveform"]  # step 1 = CFG
    assert torch.equal(outs["independent"], plain)
    assert not torch.equal(outs["nag"], plain)
    assert not torch.equal(outs["negative_prompt"], plain)


def test_nag_without_controlnet_says_what_to_do(monkeypatch):
    from nag_core.errors import ConfigError
    first = sample(monkeypatch)
    mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(first, 0.0))[1]
    model, _, _, features = loaded(monkeypatch)
    with pytest.raises(ConfigError, match="^Step 2: NAG Sampler \\(NAG Foley\\): method 'nag' "
                                          "needs a NAG ControlNet: connect a NAG ControlNet "
                                          "Loader") as e:
        nodes()["NAGFoley_NAGSampler"]().sample(model, features, "rain", method="nag", steps=2,
                                                negative_audio=mix)
    assert "--controlnet" not in str(e.value)
    # the default, auto, is the training-free method when no ControlNet is connected
    auto = result(nodes()["NAGFoley_NAGSampler"]().sample(model, features, "rain", steps=2,
                                                          negative_audio=mix))[0]
    assert torch.isfinite(auto["waveform"]).all()


def test_negative_prompt_needs_the_earlier_prompts(monkeypatch):
    from nag_core.errors import ConfigError
    first = sample(monkeypatch, "a ball bounces")
    mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(first, 0.0))[1]
    assert mix["nag_foley_prompts"] == ("a ball bounces",)
    foreign = {"waveform": mix["waveform"], "sample_rate": mix["sample_rate"]}
    with pytest.raises(ConfigError, match="earlier prompts"):
        sample(monkeypatch, "rain", method="negative_prompt", negative_audio=foreign)
    # typed by hand, the same negative text gives the same track as the carried prompts
    typed = sample(monkeypatch, "rain", method="negative_prompt", negative_audio=foreign,
                   negative_text="a ball bounces")["waveform"]
    carried = sample(monkeypatch, "rain", method="negative_prompt", negative_audio=mix
                     )["waveform"]
    assert torch.equal(typed, carried)


def test_node_chain_equals_the_python_session(monkeypatch):
    """Three steps through the nodes give exactly what nag_core's FoleySession gives."""
    from nag_core.pipeline import FoleySession
    model, controlnet, clip, features = loaded(monkeypatch)
    prompts = ["a ball bounces", "a beep", "rain"]
    chain, mix, waves = None, None, []
    for k, p in enumerate(prompts, start=1):
        track = sample(monkeypatch, p, seed=k, negative_audio=mix,
                       controlnet=controlnet if mix is not None else None)
        waves.append(track["waveform"][0, 0])
        chain, mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(track, 0.0, chain))
    session = FoleySession(model.model, clip, controlnet=controlnet)
    for k, p in enumerate(prompts, start=1):
        session.add_step(p, seed=k, steps=3, method="nag")
    for mine, theirs in zip(waves, session.tracks):
        assert torch.equal(mine, theirs)
    assert torch.equal(mix["waveform"][0], session.composite().wave)


# ----------------------------------------------------------------------------- mixing
def test_mix_and_normalize_never_mutates_its_input_chain(monkeypatch):
    from nag_core.mix import Track, composite, measure_lufs
    node = nodes()["NAGFoley_MixAndNormalize"]()
    a = {"waveform": 0.1 * torch.randn(1, 1, 16000), "sample_rate": 16000}
    b = {"waveform": 0.3 * torch.randn(1, 2, 22050), "sample_rate": 44100}
    chain1, mix1 = result(node.mix(a, -3.0))
    chain2, mix2 = result(node.mix(b, 2.0, chain1))
    assert len(chain1) == 1 and len(chain2) == 2 and chain2 is not chain1
    expected = composite([Track(a["waveform"][0], 16000), Track(b["waveform"][0], 44100)],
                         [-3.0, 2.0])
    assert torch.equal(mix2["waveform"][0], expected.wave)
    assert mix2["sample_rate"] == 44100 and mix2["waveform"].shape[1] == 2
    assert measure_lufs(mix2["waveform"][0], 44100) == pytest.approx(-20.0, abs=0.05)


# ----------------------------------------------------------------------------- export
def test_save_stems_numbers_files_and_stems_add_up(monkeypatch):
    from nag_core.media import read_audio
    root = use_workspace(monkeypatch)
    node = nodes()["NAGFoley_MixAndNormalize"]()
    a = {"waveform": 0.05 * torch.randn(1, 1, 8000), "sample_rate": 16000}
    b = {"waveform": 0.05 * torch.randn(1, 1, 8000), "sample_rate": 16000}
    chain = result(node.mix(b, -6.0, result(node.mix(a, 0.0))[0]))[0]
    save = nodes()["NAGFoley_SaveStems"]()
    first = save.save(chain, "stemtest/run", "wav 32-bit float", "as mixed")["ui"]["audio"]
    second = save.save(chain, "stemtest/run", "flac", "raw")["ui"]["audio"]
    assert [f["filename"] for f in first] == ["run_00001_stem01.wav", "run_00001_stem02.wav",
                                              "run_00001_mix.wav"]
    assert [f["filename"] for f in second][-1] == "run_00002_mix.flac"
    folder = root / "output" / "stemtest"
    s1, s2, mix = (read_audio(folder / f["filename"], mono=False)[0] for f in first)
    torch.testing.assert_close(s1 + s2, mix, atol=1e-5, rtol=0)


def _streams(path):
    import av
    from fractions import Fraction
    with av.open(str(path)) as f:
        v = f.streams.video[0]
        origin = Fraction(f.start_time or 0, 1_000_000)  # the container's time 0
        times = [Fraction(fr.pts) * v.time_base - origin for fr in f.decode(v)]
        if not f.streams.audio:
            return times, 0, None, 0, len(f.streams.video)
        f.seek(0)
        a = f.streams.audio[0]
        samples = sum(fr.samples for fr in f.decode(a))
        return times, samples, a.rate, len(f.streams.audio), len(f.streams.video)


def test_save_video_with_audio_writes_the_scored_clip_or_the_whole_video(monkeypatch):
    from nag_core.media import decode_video
    root = use_workspace(monkeypatch)
    src = root / "input" / DEMO_VIDEO
    whole, *_ = _streams(src)
    start, duration = 0.4, 1.0
    clip = decode_video(src, start, duration)
    audio = {"waveform": 0.1 * torch.randn(1, 1, 16000), "sample_rate": 16000}
    node = nodes()["NAGFoley_SaveVideoWithAudio"]()
    ui = node.save(clip, audio, "vidtest/out")["ui"]
    name = ui["images"][0]["filename"]
    assert name == "out_00001_.mp4"
    times, samples, rate, n_audio, n_video = _streams(root / "output" / "vidtest" / name)
    assert n_audio == 1 and n_video == 1
    from fractions import Fraction
    lo, hi = Fraction(repr(start)), Fraction(repr(start)) + Fraction(repr(duration))
    in_clip = [t for t in whole if lo <= t < hi]  # the exact seconds the user typed
    assert in_clip and len(times) == len(in_clip)  # exactly the frames of the clip
    assert float(times[0]) == pytest.approx(0.0, abs=1e-3)
    assert samples / rate == pytest.approx(duration, abs=0.07)  # AAC frames of 1024 samples
    ui = node.save(clip, audio, "vidtest/out", keep="whole video")["ui"]
    times, *_ = _streams(root / "output" / "vidtest" / ui["images"][0]["filename"])
    assert len(times) == len(whole)  # the whole source, picture copied
    frames = result(nodes()["NAGFoley_VideoFromFrames"]().convert(
        25.0, 0.0, 1.0, images=torch.rand(30, 16, 16, 3)))[0]
    from nag_core.errors import ConfigError
    with pytest.raises(ConfigError, match="CreateVideo"):
        node.save(frames, audio, "vidtest/out")


def test_comfyui_services_are_used_when_present(monkeypatch):
    """With ComfyUI's modules present (fakes with the real signatures), the sampler reports each
    Euler step to comfy.utils.ProgressBar and checks for Cancel through model_management."""
    loaded(monkeypatch)  # the model is loaded before the fakes appear
    log = []

    class ProgressBar:
        def __init__(self, total, node_id=None):
            log.append(("bar", total))

        def update_absolute(self, value, total=None, preview=None):
            log.append(("update", value, total))

    class Interrupted(Exception):
        pass

    def throw_exception_if_processing_interrupted():
        log.append(("check",))
        if sum(1 for e in log if e[0] == "check") == 3 and cancel:
            raise Interrupted()

    mm = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"),
        unet_offload_device=lambda: torch.device("cpu"),
        intermediate_device=lambda: torch.device("cpu"),
        soft_empty_cache=lambda: log.append(("empty",)),
        free_memory=lambda n, d: log.append(("free", n)),
        throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=ProgressBar))
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    cancel = False
    sample(monkeypatch, steps=3)
    assert log == [("bar", 3), ("update", 1, 3), ("check",), ("update", 2, 3), ("check",),
                   ("update", 3, 3), ("check",)]
    log.clear()
    cancel = True
    with pytest.raises(Interrupted):
        sample(monkeypatch, steps=3)
    cancel = False
    assert sample(monkeypatch, steps=3)["waveform"].shape[-1] == int(DEMO_SECONDS * 16000)


def test_a_resident_model_asks_comfyui_for_no_room(monkeypatch):
    """free_memory gets only the bytes still to move: asking for a resident model's whole size
    again would make ComfyUI evict other models on every node run."""
    host = submodule("host")
    asked = []
    mm = types.SimpleNamespace(free_memory=lambda n, d: asked.append(n),
                               soft_empty_cache=lambda: None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    module = torch.nn.Linear(4, 3)  # 15 float32 parameters
    meta = torch.device("meta")  # a non-CPU device that exists on every torch build
    with host.model_on_device(module, meta, None):
        pass
    with host.model_on_device(module, meta, None):
        pass
    assert asked == [15 * 4]
    assert host.bytes_to_move(module, meta) == 0


def test_only_the_nag_method_moves_the_controlnet(monkeypatch):
    host = submodule("host")
    model, controlnet, _, _ = loaded(monkeypatch)
    first = sample(monkeypatch)
    mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(first, 0.0))[1]
    original = host.model_on_device
    moved = []

    def spy(module, device, offload_to):
        moved.append(module)
        return original(module, device, offload_to)

    monkeypatch.setattr(host, "model_on_device", spy)
    for method in ("negative_prompt", "independent"):
        sample(monkeypatch, "rain", method=method, negative_audio=mix, controlnet=controlnet,
               steps=2)
    assert moved and all(m is model.model for m in moved)
    moved.clear()
    sample(monkeypatch, "rain", method="nag", negative_audio=mix, controlnet=controlnet, steps=2)
    assert any(m is controlnet for m in moved)


# ----------------------------------------------------------------------------- graph wording
def test_every_display_name_says_it_is_nag_foley():
    names = load_pack().NODE_DISPLAY_NAME_MAPPINGS
    assert len(names) == len(nodes())
    assert all(n.endswith(" (NAG Foley)") for n in names.values()), names


def test_errors_name_the_node_title_and_the_step_before_anything_loads(monkeypatch):
    """An empty prompt at step 3 fails with the title from the graph, before the model moves."""
    from nag_core.errors import ConfigError
    host = submodule("host")
    model, _, _, features = loaded(monkeypatch)
    mix_node = nodes()["NAGFoley_MixAndNormalize"]()
    chain, mix = result(mix_node.mix(sample(monkeypatch, "a ball bounces"), 0.0))
    chain, mix = result(mix_node.mix(sample(monkeypatch, "a beep", method="auto",
                                            negative_audio=mix), 0.0, chain))
    moved = []
    monkeypatch.setattr(host, "models_loaded", lambda *a, **k: moved.append(a))
    graph = {"7": {"class_type": "NAGFoley_NAGSampler", "_meta": {"title": "Rain layer"}}}
    with pytest.raises(ConfigError, match=r"^Step 3: Rain layer: the prompt is empty"):
        nodes()["NAGFoley_NAGSampler"]().sample(model, features, "  ", negative_audio=mix,
                                                graph=graph, node_id="7")
    graph["7"]["_meta"]["title"] = "Step 3: NAG Sampler"
    with pytest.raises(ConfigError, match=r"^Step 3: NAG Sampler: the prompt is empty"):
        nodes()["NAGFoley_NAGSampler"]().sample(model, features, "", negative_audio=mix,
                                                graph=graph, node_id="7")
    assert moved == []


def test_the_seed_control_is_set_to_fixed_by_the_web_extension():
    init = (ROOT / "__init__.py").read_text()
    assert 'WEB_DIRECTORY = "./web"' in init
    js = (ROOT / "web" / "nag_foley.js").read_text()
    assert 'control.value = "fixed"' in js and "NAGSampler" in js


# ----------------------------------------------------------------------------- takes and batches
def test_an_audio_batch_where_one_track_is_meant_is_refused(monkeypatch):
    from nag_core.errors import MediaError
    two = {"waveform": 0.1 * torch.randn(2, 1, 8000), "sample_rate": 16000}
    with pytest.raises(MediaError, match="holds 2 takes .* pick one with Select Take"):
        nodes()["NAGFoley_MixAndNormalize"]().mix(two, 0.0)
    model, _, _, features = loaded(monkeypatch)
    with pytest.raises(MediaError, match="^Step 2: NAG Sampler .*negative_audio holds 2 takes"):
        nodes()["NAGFoley_NAGSampler"]().sample(model, features, "rain", steps=2,
                                                negative_audio=two)


def test_select_take_picks_one_take_with_its_seed():
    from nag_core.errors import ConfigError
    waves = torch.stack([torch.full((1, 100), float(i)) for i in range(3)])
    takes = {"waveform": waves, "sample_rate": 16000, "nag_foley_prompt": "rain",
             "nag_foley_seeds": (5, 6, 7)}
    node = nodes()["NAGFoley_SelectTake"]()
    picked = node.select(takes, 2)[0]
    assert picked["waveform"].shape == (1, 1, 100) and picked["waveform"].unique().item() == 1.0
    assert picked["nag_foley_seeds"] == (6,) and picked["nag_foley_prompt"] == "rain"
    assert takes["waveform"].shape[0] == 3  # the input is untouched
    with pytest.raises(ConfigError, match="take 4 does not exist: the sampler made 3 takes"):
        node.select(takes, 4)


def test_a_normalized_mix_is_marked_not_inferred_from_its_prompts(monkeypatch):
    """MixAndNormalize's mix is used as given; an AUDIO that merely carries prompts (e.g. edited
    by another pack) is loudness-normalised like any other negative."""
    sampler_node = submodule("sampler_node")
    a = {"waveform": 0.01 * torch.randn(1, 1, 16000), "sample_rate": 16000}
    mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(a, 0.0))[1]
    assert mix["nag_foley_normalized"] is True
    as_given = sampler_node.conditioning_mix(mix)
    assert torch.equal(as_given.wave, mix["waveform"][0])
    quiet = dict(mix, waveform=mix["waveform"] * 0.1)
    del quiet["nag_foley_normalized"]
    renormalized = sampler_node.conditioning_mix(quiet)
    torch.testing.assert_close(renormalized.wave, mix["waveform"][0], atol=1e-4, rtol=1e-3)
    assert not torch.equal(renormalized.wave, quiet["waveform"][0])


# ----------------------------------------------------------------------------- previews
def test_sampler_mix_and_stems_show_players_for_what_they_made(monkeypatch):
    from nag_core.media import read_audio
    root = use_workspace(monkeypatch)
    model, _, _, features = loaded(monkeypatch)
    out = nodes()["NAGFoley_NAGSampler"]().sample(model, features, "rain", steps=2, seed=4)
    track = out["result"][0]
    entries = out["ui"]["audio"]
    assert len(entries) == track["waveform"].shape[0] == 1
    assert entries[0]["type"] == "temp"
    heard, rate = read_audio(root / "temp" / entries[0]["filename"], mono=False)
    assert rate == 16000 and heard.shape[-1] == track["waveform"].shape[-1]
    mixed = nodes()["NAGFoley_MixAndNormalize"]().mix(track, 0.0)
    assert len(mixed["ui"]["audio"]) == 1
    assert (root / "temp" / mixed["ui"]["audio"][0]["filename"]).is_file()


# ----------------------------------------------------------------------------- weights
def test_an_empty_models_folder_says_which_files_go_where(monkeypatch, tmp_path):
    use_workspace(monkeypatch)
    empty = tmp_path / "mmaudio"
    empty.mkdir()
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(empty))
    loader = nodes()["NAGFoley_MMAudioLoader"]
    message = loader.VALIDATE_INPUTS(**MODEL_FILES)
    assert isinstance(message, str) and str(empty) in message
    from nag_core.weights import NETWORK_FILES
    assert f"network 'mmaudio_small_16k.pth' (601 MB, {NETWORK_FILES['small_16k'].url})" in message
    for name in MODEL_FILES.values():
        assert repr(name) in message
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(use_workspace(monkeypatch) / "models" /
                                                  "mmaudio"))
    assert loader.VALIDATE_INPUTS(**MODEL_FILES) is True


def test_the_loader_says_when_it_loaded_the_smoke_set(monkeypatch, caplog):
    use_workspace(monkeypatch)
    with caplog.at_level("WARNING", logger="nag_foley"):
        out = nodes()["NAGFoley_MMAudioLoader"]().load(**MODEL_FILES)
    assert out["result"][0].smoke is True
    assert any("smoke-test models" in line for line in out["ui"]["text"])
    assert any("smoke-test models" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- the host
def test_host_module_lookup_reports_a_broken_host_instead_of_hiding_it(monkeypatch, caplog):
    host = submodule("host")
    import importlib

    def broken(name):
        if name == "comfy.nag_broken":
            raise RuntimeError("Torch not compiled with CUDA enabled")
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib, "import_module", broken)
    with caplog.at_level("WARNING", logger="nag_foley"):
        assert host._module("comfy.nag_absent") is None
        assert not caplog.records  # simply not inside ComfyUI: silent
        assert host._module("comfy.nag_broken") is None
    assert "comfy.nag_broken" in caplog.text and "RuntimeError" in caplog.text


class FakeLoaded:
    def __init__(self, patcher):
        self.model = patcher

    def model_unload(self):
        self.model.unloaded += 1
        self.model.model.inner.to(self.model.offload_device)
        return True


def fake_model_management(log, vram="NORMAL_VRAM"):
    """ComfyUI's ModelPatcher / load_models_gpu / current_loaded_models, with the real
    signatures and what our code relies on: the patcher holds the module as .model, loading puts
    it on load_device and into current_loaded_models once, unloading puts it back."""
    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            self.unloaded = 0
            log.append(("patcher", type(model).__name__))

    loaded_models = []

    def load_models_gpu(models, memory_required=0, force_patch_weights=False,
                        minimum_memory_required=None, force_full_load=False):
        log.append(("load", len(models), force_full_load))
        for p in models:
            if not any(m.model is p for m in loaded_models):
                p.model.inner.to(p.load_device)
                loaded_models.insert(0, FakeLoaded(p))

    mm = types.SimpleNamespace(
        load_models_gpu=load_models_gpu, current_loaded_models=loaded_models,
        vram_state=types.SimpleNamespace(name=vram),
        get_torch_device=lambda: torch.device("cpu"),
        unet_offload_device=lambda: torch.device("cpu"),
        intermediate_device=lambda: torch.device("cpu"),
        soft_empty_cache=lambda: None, free_memory=lambda n, d: None,
        throw_exception_if_processing_interrupted=lambda: None)
    return mm, types.SimpleNamespace(ModelPatcher=ModelPatcher)


def test_comfyui_manages_the_model_memory(monkeypatch):
    """Inside ComfyUI each module gets one ModelPatcher, every node loads through
    load_models_gpu (full load), and an unload (as /free does) is followed by a reload."""
    model, controlnet, _, _ = loaded(monkeypatch)
    log = []
    mm, mp = fake_model_management(log)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", mp)
    for m in (model.model, controlnet):
        m.__dict__.pop("_nagfoley_patcher", None)
    first = sample(monkeypatch, steps=2, seed=3)
    assert log == [("patcher", "NAGFoleyMMAudioModel"), ("load", 1, True)]
    assert [type(m.model.model).__name__ for m in mm.current_loaded_models] == [
        "NAGFoleyMMAudioModel"]
    mix = result(nodes()["NAGFoley_MixAndNormalize"]().mix(first, 0.0))[1]
    log.clear()
    sample(monkeypatch, "rain", method="nag", negative_audio=mix, controlnet=controlnet, steps=2)
    assert log == [("patcher", "NAGFoleyNAGControlNet"), ("load", 2, True)]
    assert len(mm.current_loaded_models) == 2
    # /free: ComfyUI unloads everything; the next node loads again through load_models_gpu
    for loaded_model in list(mm.current_loaded_models):
        loaded_model.model_unload()
    mm.current_loaded_models.clear()
    log.clear()
    again = sample(monkeypatch, steps=2, seed=3)
    assert log == [("load", 1, True)] and len(mm.current_loaded_models) == 1
    assert torch.equal(again["waveform"], first["waveform"])
    for m in (model.model, controlnet):
        m.__dict__.pop("_nagfoley_patcher", None)


def test_low_vram_gives_the_model_back_after_each_node(monkeypatch):
    model, _, _, _ = loaded(monkeypatch)
    log = []
    mm, mp = fake_model_management(log, vram="LOW_VRAM")
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", mp)
    model.model.__dict__.pop("_nagfoley_patcher", None)
    sample(monkeypatch, steps=2)
    patcher = model.model.__dict__.pop("_nagfoley_patcher")
    assert patcher.unloaded == 1 and mm.current_loaded_models == []


def test_cancel_stops_encode_video_between_blocks(monkeypatch):
    model, _, clip, _ = loaded(monkeypatch)
    host = submodule("host")
    calls = []

    class Interrupted(Exception):
        pass

    def cancel_on_third_block():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()

    mm = types.SimpleNamespace(throw_exception_if_processing_interrupted=cancel_on_third_block,
                               get_torch_device=lambda: torch.device("cpu"),
                               unet_offload_device=lambda: torch.device("cpu"),
                               intermediate_device=lambda: torch.device("cpu"),
                               soft_empty_cache=lambda: None, free_memory=lambda n, d: None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    with pytest.raises(Interrupted):
        nodes()["NAGFoley_EncodeVideo"]().encode(model, clip)
    assert len(calls) == 3
    # the hooks are gone afterwards: encoding again without ComfyUI checks nothing
    monkeypatch.delitem(sys.modules, "comfy.model_management")
    calls.clear()
    nodes()["NAGFoley_EncodeVideo"]().encode(model, clip)
    assert calls == [] and host._module("comfy.model_management") is None


def test_takes_are_one_batched_run_each_equal_to_its_single_seed(monkeypatch):
    """takes = 3: an AUDIO batch of 3 with a player each; take i is the single run with
    seed + i; Select Take hands one of them on."""
    from nag_core.pipeline import generate_track
    import nag_core.pipeline as pipeline
    model, _, _, features = loaded(monkeypatch)
    calls = []
    sampler_node = submodule("sampler_node")
    monkeypatch.setattr(sampler_node, "generate_track",
                        lambda *a, **k: calls.append(a[2].takes) or generate_track(*a, **k))
    out = nodes()["NAGFoley_NAGSampler"]().sample(model, features, "rain", steps=2, seed=20,
                                                  takes=3)
    batch = out["result"][0]
    assert calls == [3] and batch["waveform"].shape[0] == 3 and len(out["ui"]["audio"]) == 3
    assert batch["nag_foley_seeds"] == (20, 21, 22)
    single = sample(monkeypatch, "rain", method="auto", steps=2, seed=21)
    picked = nodes()["NAGFoley_SelectTake"]().select(batch, 2)[0]
    torch.testing.assert_close(picked["waveform"], single["waveform"], atol=1e-5, rtol=0)
    assert pipeline.StepSettings  # the API the node builds on
