"""Helpers for the node tests: the pack imported the way ComfyUI imports it, a tiny model set and
demo video in temporary ComfyUI-like folders (the models folder holds only the MMAudio smoke set,
as a fresh install with the released weights holds only MMAudio's files: no ControlNet), the
frontend's conversion of a UI workflow to the API format, and a miniature executor with
ComfyUI's caching rule (a node's cache key is its class, IS_CHANGED, constant inputs and its
ancestors' keys)."""

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
CONTROLNET_FILE = "nag_controlnet_small_16k.safetensors"  # only in controlnet_models()
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
    """A ComfyUI-like tree: models/mmaudio (the 16k smoke set and nothing else), input/ (demo
    video), output/ and temp/. Made once per test process."""
    root = Path(tempfile.mkdtemp(prefix="nagfoley_nodes_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    from nag_core.smoke import write_smoke_models
    write_smoke_models(root / "models" / "mmaudio")
    for folder in ("input", "output", "temp"):
        (root / folder).mkdir()
    write_demo_video(root / "input" / DEMO_VIDEO)
    return root


@functools.lru_cache(maxsize=None)
def controlnet_models() -> Path:
    """A second models folder: the smoke set plus a ControlNet, for the tests of the optional
    ControlNet path (the workspace's own folder never holds one)."""
    folder = Path(tempfile.mkdtemp(prefix="nagfoley_cn_")) / "mmaudio"
    atexit.register(shutil.rmtree, folder.parent, ignore_errors=True)
    from nag_core.smoke import write_smoke_models
    write_smoke_models(folder)
    write_controlnet(folder / CONTROLNET_FILE, folder)
    return folder


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
    monkeypatch.setenv("NAGFOLEY_TEMP_DIR", str(root / "temp"))
    return root


def result(value) -> tuple:
    """A node's outputs, whether it returned a tuple or ``{"ui": ..., "result": ...}``."""
    return tuple(value["result"]) if isinstance(value, dict) else tuple(value)


MODEL_FILES = dict(network="mmaudio_small_16k.pth", vae="v1-16.pth", vocoder="best_netG.pt",
                   synchformer="synchformer_state_dict.pth",
                   clip="apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin")


@functools.lru_cache(maxsize=None)
def _loaded():
    from nag_core.controlnet import load_controlnet
    nodes = load_pack().NODE_CLASS_MAPPINGS
    model = result(nodes["NAGFoley_MMAudioLoader"]().load(**MODEL_FILES, precision="auto"))[0]
    controlnet = load_controlnet(controlnet_models() / CONTROLNET_FILE, model.model.network,
                                 base_variant=model.model.variant)
    clip = result(nodes["NAGFoley_LoadVideo"]().load(DEMO_VIDEO, 0.0, DEMO_SECONDS))[0]
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
        self.ui: dict = {}  # node id -> the ui part of its last output

    def _key(self, prompt, nid, memo):
        if nid in memo:
            return memo[nid]
        node = prompt[nid]
        cls = self.mappings[node["class_type"]]
        consts = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        linked = {k: (self._key(prompt, v[0], memo), v[1])
                  for k, v in node["inputs"].items() if isinstance(v, list)}
        changed = None
        if hasattr(cls, "IS_CHANGED"):  # ComfyUI passes the hidden inputs to IS_CHANGED too
            changed = cls.IS_CHANGED(**consts, **{k: None for k in linked},
                                     **self._hidden(cls, prompt, nid))
        # ComfyUI adds the node id to the key of a node with a hidden UNIQUE_ID
        own = nid if "UNIQUE_ID" in cls.INPUT_TYPES().get("hidden", {}).values() else None
        key = repr((node["class_type"], changed, own, sorted(consts.items()),
                    sorted(linked.items())))
        memo[nid] = key
        return key

    @staticmethod
    def _hidden(cls, prompt, nid) -> dict:
        """The hidden inputs ComfyUI fills in: the API prompt and the node's id."""
        values = {"PROMPT": prompt, "UNIQUE_ID": nid}
        return {name: values[kind] for name, kind in cls.INPUT_TYPES().get("hidden", {}).items()
                if kind in values}

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
                kwargs.update(self._hidden(cls, prompt, nid))
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
                if isinstance(out, dict):
                    self.ui[nid] = out.get("ui")
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


FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
MUTED, BYPASSED = 2, 4


def widget_slots(cls) -> list:
    """Input name (or None for a position the frontend adds and never sends) per entry of a
    node's widgets_values: the widgets in INPUT_TYPES order, a seed control after an INT named
    seed/noise_seed or with control_after_generate, an upload button after the required inputs
    of a node with a media-upload combo."""
    out, upload = [], False
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            opts = s[1] if len(s) > 1 else {}
            if opts.get("forceInput") or not (isinstance(s[0], list) or s[0] in WIDGET_KINDS):
                continue
            out.append(name)
            if s[0] == "INT" and (opts.get("control_after_generate")
                                  or (name in ("seed", "noise_seed")
                                      and opts.get("control_after_generate") is not False)):
                out.append(None)
            upload |= section == "required" and any(opts.get(k) for k in UPLOAD_KEYS)
        if section == "required" and upload:
            out.append(None)
    return out


def ui_to_api(workflow: dict, mappings: dict) -> dict:
    """The API prompt the frontend queues for a UI workflow (its graphToPrompt): frontend-only
    and muted nodes dropped, widgets_values mapped to input names by position, links become
    [source id, output slot]. Bypassed nodes pass each input through to the output of the same
    type; a bypassed node here is an error, because no shipped workflow should hold one."""
    links = {l[0]: l for l in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == MUTED:
            continue
        if node.get("mode", 0) == BYPASSED:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed")
        cls = mappings[node["type"]]
        slots = widget_slots(cls)
        values = node.get("widgets_values", [])
        if len(values) != len(slots):
            raise ValueError(f"{node['type']}: {len(values)} widget values for "
                             f"{len(slots)} widget positions")
        inputs = {name: v for name, v in zip(slots, values) if name is not None}
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            _, src, slot, *_ = links[socket["link"]]
            inputs[socket["name"]] = [str(src), slot]
        # _meta.title is the node's title: its display name unless renamed on the canvas
        title = node.get("title") or getattr(cls, "DISPLAY_NAME", node["type"])
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": title}}
    return api


def shipped_workflows() -> dict:
    """name -> (UI workflow, API workflow), exactly as in workflows/ and workflows/api."""
    import json
    folder = ROOT / "workflows"
    out = {}
    for path in sorted(folder.glob("*.json")):
        api = folder / "api" / path.name
        out[path.stem] = (json.loads(path.read_text()), json.loads(api.read_text()))
    if not out:
        raise FileNotFoundError(f"no workflows in {folder}")
    return out


def api_workflow(name: str, steps: int = 2) -> dict:
    """A shipped API workflow with fewer Euler steps (for tests that edit and re-run it)."""
    prompt = copy.deepcopy(shipped_workflows()[name][1])
    for node in prompt.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = steps
    return prompt
