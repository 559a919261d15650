"""Helpers for the node tests: the pack imported the way ComfyUI imports it, a tiny model set and
demo video in temporary ComfyUI-like folders, and a miniature executor with ComfyUI's caching
rule (a node's cache key is its class, IS_CHANGED, constant inputs and its ancestors' keys)."""

from __future__ import annotations

import atexit
import copy
import functools
import importlib.util
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "nag_foley_pack_under_test"
CONTROLNET_FILE = "nag_controlnet_small_16k.safetensors"
DEMO_VIDEO = "nag_foley_demo.mp4"
DEMO_SECONDS = 2.0


def load_pack(name: str = PACK):
    """Import the repository folder as a package under ``name`` (as ComfyUI does)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def submodule(name: str):
    load_pack()
    return sys.modules[f"{PACK}.nodes.{name}"]


@functools.lru_cache(maxsize=None)
def workspace() -> Path:
    """A ComfyUI-like tree: models/mmaudio (16k smoke set + a ControlNet), input/ (demo video)
    and output/. Made once per test process."""
    root = Path(tempfile.mkdtemp(prefix="nagfoley_nodes_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    from nag_core.smoke import write_smoke_models
    models = root / "models" / "mmaudio"
    write_smoke_models(models)
    write_controlnet(models / CONTROLNET_FILE, models)
    (root / "input").mkdir()
    (root / "output").mkdir()
    write_demo_video(root / "input" / DEMO_VIDEO)
    return root


def write_demo_video(path: Path, seconds: float = DEMO_SECONDS) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from media_samples import make_video
    times = [Fraction(i, 25) for i in range(int(seconds * 25) + 3)]
    return make_video(path, times, 64, 48)


def write_controlnet(path: Path, models: Path, network=None) -> Path:
    """A ControlNet with all parameters re-drawn (so it really changes the NAG branch)."""
    from nag_core.controlnet import NAGControlNet, save_controlnet
    from nag_core.mmaudio.network import randomize_parameters_
    if network is None:
        from nag_core.mmaudio.network_loading import load_network
        network, _ = load_network(models / "mmaudio_small_16k.pth")
    cn = NAGControlNet.from_base(network)
    randomize_parameters_(cn, seed=7)
    save_controlnet(cn, path)
    return path


def use_workspace(monkeypatch) -> Path:
    """Point the host fallbacks at the workspace (no ComfyUI here)."""
    root = workspace()
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(root / "models" / "mmaudio"))
    monkeypatch.setenv("NAGFOLEY_INPUT_DIR", str(root / "input"))
    monkeypatch.setenv("NAGFOLEY_OUTPUT_DIR", str(root / "output"))
    return root


MODEL_FILES = dict(network="mmaudio_small_16k.pth", vae="v1-16.pth", vocoder="best_netG.pt",
                   synchformer="synchformer_state_dict.pth",
                   clip="apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin")


@functools.lru_cache(maxsize=None)
def _loaded():
    nodes = load_pack().NODE_CLASS_MAPPINGS
    model = nodes["NAGFoley_MMAudioLoader"]().load(**MODEL_FILES, precision="auto")[0]
    controlnet = nodes["NAGFoley_NAGControlNetLoader"]().load(model, CONTROLNET_FILE)[0]
    clip = nodes["NAGFoley_LoadVideo"]().load(DEMO_VIDEO, 0.0, DEMO_SECONDS)[0]
    features = nodes["NAGFoley_EncodeVideo"]().encode(model, clip)[0]
    return model, controlnet, clip, features


def loaded(monkeypatch):
    """(FoleyModel, ControlNet, VideoClip, VideoFeatures) made by the nodes, cached."""
    use_workspace(monkeypatch)
    return _loaded()


# ----------------------------------------------------------------------------- mini executor
class MiniComfy:
    """Runs API-format prompts like ComfyUI's executor: each node once per prompt, outputs cached
    across prompts under ComfyUI's cache key, output nodes and their ancestors only."""

    def __init__(self, mappings: dict):
        self.mappings = mappings
        self.cache: dict = {}
        self.executed: list = []  # node ids run (not served from the cache), in order

    def _key(self, prompt, nid, memo):
        if nid in memo:
            return memo[nid]
        node = prompt[nid]
        cls = self.mappings[node["class_type"]]
        consts = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        linked = {k: (self._key(prompt, v[0], memo), v[1])
                  for k, v in node["inputs"].items() if isinstance(v, list)}
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            changed = cls.IS_CHANGED(**consts, **{k: None for k in linked})
        key = repr((node["class_type"], changed, sorted(consts.items()), sorted(linked.items())))
        memo[nid] = key
        return key

    def run(self, prompt: dict) -> dict:
        import torch
        with torch.inference_mode():  # ComfyUI runs every prompt under inference mode
            return self._run(prompt)

    def _run(self, prompt: dict) -> dict:
        memo, results = {}, {}

        def value(nid):
            if nid in results:
                return results[nid]
            key = self._key(prompt, nid, memo)
            if key not in self.cache:
                node = prompt[nid]
                kwargs = {k: (value(v[0])[v[1]] if isinstance(v, list) else v)
                          for k, v in node["inputs"].items()}
                cls = self.mappings[node["class_type"]]
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
                if isinstance(out, dict):
                    out = out.get("result", ())
                self.cache[key] = tuple(out)
                self.executed.append(nid)
            results[nid] = self.cache[key]
            return results[nid]

        for nid, node in prompt.items():
            cls = self.mappings.get(node["class_type"])
            if cls is not None and getattr(cls, "OUTPUT_NODE", False):
                value(nid)
        return results


def api_workflow(name: str, steps: int = 2) -> dict:
    """An API workflow from workflows/api with fewer Euler steps (fast on the tiny models) and
    core preview nodes removed (not part of the pack)."""
    import json
    prompt = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    prompt = {k: v for k, v in prompt.items() if v["class_type"].startswith("NAGFoley_")}
    for node in prompt.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = steps
    return copy.deepcopy(prompt)
