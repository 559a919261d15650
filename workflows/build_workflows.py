"""Build the example workflows from the node definitions, so they never drift from the pack.

    python workflows/build_workflows.py          # rewrite workflows/*.json, api/*.json, *.jpg

Each workflow is described once (nodes, widget values by name, links by output name). The widget
order of the UI format comes from the nodes' INPUT_TYPES, with the positions the frontend adds:
the control-after-generate value after an INT named ``seed`` and the ``upload`` value after the
required inputs of a node with a media-upload combo. UI files (``workflows/*.json``, what
drag-and-drop and the template browser load) and API files (``workflows/api/*.json``, what
``POST /prompt`` takes; a subfolder so the template browser does not list them) are written.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACK_NAME = "nag_foley_pack_build"

DEMO_VIDEO = "nag_foley_demo.mp4"
MODELS_DIRECTORY = "mmaudio"  # ComfyUI's models/<directory> the loader reads
SEED_CONTROL = "fixed"  # the hidden control_after_generate position (kept fixed: reproducible)
UPLOAD_VALUE = "image"  # what the frontend stores for the upload button position

# Core nodes the workflows use: sockets in order, widget names in order, outputs. (None today:
# the pack's own nodes show their audio.)
CORE_NODES: dict = {}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # never sent to the backend
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


def load_pack(name: str = PACK_NAME):
    """Import the repository folder as a package, the way ComfyUI imports a custom node pack."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- node layouts
def is_widget(spec) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def layout(class_type: str, mappings: dict) -> dict:
    """Sockets, widget slots (name or a hidden-position marker) and outputs of a node type."""
    if class_type in CORE_NODES:
        core = CORE_NODES[class_type]
        return {"inputs": list(core["inputs"]), "widgets": list(core["widgets"]),
                "outputs": list(core["outputs"])}
    if class_type in FRONTEND_ONLY:
        return {"inputs": [], "widgets": ["text"], "outputs": []}
    cls = mappings[class_type]
    spec = cls.INPUT_TYPES()
    inputs, widgets = [], []
    has_upload = False
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            if is_widget(s):
                widgets.append(name)
                opts = s[1] if len(s) > 1 else {}
                if s[0] == "INT" and (opts.get("control_after_generate")
                                      or (name in ("seed", "noise_seed")
                                          and opts.get("control_after_generate") is not False)):
                    widgets.append("#control_after_generate")
                if section == "required" and any(opts.get(k) for k in UPLOAD_KEYS):
                    has_upload = True
            else:
                inputs.append((name, s[0]))
        if section == "required" and has_upload:
            widgets.append("#upload")
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"inputs": inputs, "widgets": widgets, "outputs": list(zip(names, cls.RETURN_TYPES))}


def widget_defaults(class_type: str, mappings: dict) -> dict:
    if class_type not in mappings:
        return {}
    out = {}
    spec = mappings[class_type].INPUT_TYPES()
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            if is_widget(s):
                opts = s[1] if len(s) > 1 else {}
                if "default" in opts:
                    out[name] = opts["default"]
                elif isinstance(s[0], list) and s[0]:
                    out[name] = s[0][0]
                elif s[0] == "STRING":
                    out[name] = ""
    return out


# ------------------------------------------------------------------------------- the graphs
MODEL_WIDGETS = {"network": "mmaudio_small_16k.pth", "vae": "v1-16.pth", "vocoder": "best_netG.pt",
                 "synchformer": "synchformer_state_dict.pth",
                 "clip": "apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin",
                 "precision": "auto", "offload": False}
CHAIN_PROMPTS = ["a ball bounces on a wooden floor", "an electronic beep",
                 "rain falling on a roof", "wind blowing through trees", "birds singing"]

SETUP = (
    "1. Put nag_foley_demo.mp4 into ComfyUI/input (make it with `python -m nag_core demo`, or "
    "upload your own video in Load Video).\n"
    "2. Put the MMAudio files into ComfyUI/models/mmaudio (`python -m nag_core download` "
    "fetches them; the missing-models dialog lists each file and its source).\n")
CONTROLNET_TIP = (
    "A trained NAG ControlNet is optional: add a NAG ControlNet Loader (NAG Foley), connect it "
    "to the samplers' controlnet input, and method 'auto' runs NAG.")
NOTE_CHAIN = (
    "NAG Foley: a 5-step Foley chain.\n\n" + SETUP +
    "3. Queue. Each step generates one sound while avoiding the mix of the steps before it "
    "(the mix output of each Mix And Normalize goes to the next sampler's negative_audio).\n\n"
    "Redo a step: change its prompt or seed and queue again; ComfyUI re-runs only that step and "
    "the ones after it. The video is encoded once for the whole chain.\n\n" + CONTROLNET_TIP)
NOTE_SINGLE = (
    "NAG Foley: iterate on one sound.\n\n" + SETUP +
    "Load the earlier mix (a mix file written by Save Stems) with the core Load Audio node and "
    "connect it to negative_audio, or leave negative_audio empty for a first step. Change the "
    "prompt/seed/beta and queue: the video features are cached, only the sampler re-runs. The "
    "sampler makes 3 takes (seeds 1001-1003) in one run: listen, then choose one in Choose a "
    "take; changing the choice re-runs only what comes after.\n\n"
    + CONTROLNET_TIP)
NOTE_COMPARE = (
    "NAG Foley: step 2 made several ways.\n\n" + SETUP +
    "Step 1 makes one sound; step 2 asks for a second sound from the same seed in each way "
    "that needs no trained weights: independent (ignores step 1), negative prompt (step 1's "
    "prompt as CFG negative text) and the others in the method list. Listen to the mixes side "
    "by side.\n\n" + CONTROLNET_TIP + " (then add a row with method nag).")


def node(key, type_, pos, widgets=None, links=None, title=None, size=None, models=None):
    return {"key": key, "type": type_, "pos": pos, "widgets": widgets or {},
            "links": links or {}, "title": title, "size": size, "models": models}


def model_metadata(widgets: dict) -> list[dict]:
    """The frontend's missing-models dialog reads ``properties.models`` (name = the widget value,
    url, directory = the models/ sub-folder) for each file a node selects."""
    from nag_core.weights import CLIP_FILE, NETWORK_FILES, SYNCHFORMER_FILE, VAE_FILES, VOCODER_FILES
    official = {f.relpath: f for f in [*NETWORK_FILES.values(), *VAE_FILES.values(),
                                       *VOCODER_FILES.values(), SYNCHFORMER_FILE, CLIP_FILE]}
    return [{"name": v, "url": official[v].url, "directory": MODELS_DIRECTORY}
            for v in widgets.values() if isinstance(v, str) and v in official]


LOAD_VIDEO_HEIGHT = 480


def _front(note_text):
    return [
        node("note", "Note", [-420, -260], {"text": note_text}, size=[400, 260]),
        # The frontend adds a video preview under LoadVideo's widgets and grows the node to fit
        # it (a 320-wide node with the square demo video became 462 tall in ComfyUI 0.3.64 /
        # frontend 1.27.10), so its declared size leaves room for that and the loader below
        # starts after it.
        node("video", "NAGFoley_LoadVideo", [-420, 40],
             {"video": DEMO_VIDEO, "start_time": 0.0, "duration": 8.0},
             size=[320, LOAD_VIDEO_HEIGHT]),
        node("model", "NAGFoley_MMAudioLoader", [-420, 600], MODEL_WIDGETS, size=[400, 250],
             models=model_metadata(MODEL_WIDGETS)),
        node("encode", "NAGFoley_EncodeVideo", [20, 40],
             links={"model": ("model", "model"), "video": ("video", "video")}, size=[260, 60]),
    ]


def chain_workflow():
    nodes = _front(NOTE_CHAIN)
    prev_mix = prev_chain = None
    for k, prompt in enumerate(CHAIN_PROMPTS, start=1):
        x = 320 + (k - 1) * 380
        links = {"model": ("model", "model"), "features": ("encode", "features")}
        if k > 1:
            links.update(negative_audio=(prev_mix, "mix"))
        nodes.append(node(f"s{k}", "NAGFoley_NAGSampler", [x, 100],
                          {"prompt": prompt, "method": "auto", "seed": 1000 + k},
                          links, title=f"Step {k}: NAG Sampler", size=[340, 330]))
        mix_links = {"track": (f"s{k}", "track")}
        if prev_chain:
            mix_links["chain"] = (prev_chain, "chain")
        nodes.append(node(f"m{k}", "NAGFoley_MixAndNormalize", [x, 480], {"gain_db": 0.0},
                          mix_links, title=f"Step {k}: mix", size=[300, 100]))
        prev_mix, prev_chain = f"m{k}", f"m{k}"
    end_x = 320 + len(CHAIN_PROMPTS) * 380
    nodes.append(node("stems", "NAGFoley_SaveStems", [end_x, 100], {},
                      {"chain": (prev_chain, "chain")}, size=[320, 140]))
    nodes.append(node("save_video", "NAGFoley_SaveVideoWithAudio", [end_x, 300], {},
                      {"video": ("video", "video"), "audio": (prev_mix, "mix")}, size=[320, 300]))
    return nodes


def single_workflow():
    nodes = _front(NOTE_SINGLE)
    nodes.append(node("s1", "NAGFoley_NAGSampler", [400, 100],
                      {"prompt": CHAIN_PROMPTS[0], "method": "auto", "seed": 1001, "takes": 3},
                      {"model": ("model", "model"), "features": ("encode", "features")},
                      size=[340, 360]))
    nodes.append(node("pick", "NAGFoley_SelectTake", [780, 100], {"take": 1},
                      {"takes": ("s1", "track")}, title="Choose a take", size=[300, 100]))
    nodes.append(node("m1", "NAGFoley_MixAndNormalize", [780, 260], {"gain_db": 0.0},
                      {"track": ("pick", "track")}, size=[300, 100]))
    nodes.append(node("stems", "NAGFoley_SaveStems", [1120, 260], {"filename_prefix":
                                                                  "nag_foley/single"},
                      {"chain": ("m1", "chain")}, size=[320, 140]))
    return nodes


def comparison_methods() -> list[str]:
    """Every method of the sampler's list that runs without trained weights (nag needs a
    ControlNet, which nothing ships), in the list's order."""
    from nag_core.pipeline import METHODS
    return [m for m in METHODS if m != "nag"]


def comparison_workflow():
    nodes = _front(NOTE_COMPARE)
    base = {"model": ("model", "model"), "features": ("encode", "features")}
    nodes.append(node("s1", "NAGFoley_NAGSampler", [320, 100],
                      {"prompt": CHAIN_PROMPTS[0], "seed": 1001}, base,
                      title="Step 1 (shared)", size=[340, 330]))
    nodes.append(node("m1", "NAGFoley_MixAndNormalize", [320, 480], {}, {"track": ("s1", "track")},
                      title="Step 1 mix", size=[300, 100]))
    for row, method in enumerate(comparison_methods()):
        y = 100 + row * 420
        links = dict(base, negative_audio=("m1", "mix"))
        nodes.append(node(f"s_{method}", "NAGFoley_NAGSampler", [720, y],
                          {"prompt": CHAIN_PROMPTS[1], "method": method, "seed": 1002}, links,
                          title=f"Step 2: {method}", size=[340, 330]))
        nodes.append(node(f"m_{method}", "NAGFoley_MixAndNormalize", [1100, y], {},
                          {"track": (f"s_{method}", "track"), "chain": ("m1", "chain")},
                          title=f"Mix: {method}", size=[300, 100]))
        nodes.append(node(f"save_{method}", "NAGFoley_SaveStems", [1440, y],
                          {"filename_prefix": f"nag_foley/compare_{method}"},
                          {"chain": (f"m_{method}", "chain")}, size=[320, 140]))
    return nodes


WORKFLOWS = {
    "nag_foley_5_step_chain": chain_workflow,
    "nag_foley_single_step": single_workflow,
    "nag_foley_method_comparison": comparison_workflow,
}


# ------------------------------------------------------------------------------- serialisation
def to_ui(nodes: list[dict], mappings: dict) -> dict:
    ids = {n["key"]: i + 1 for i, n in enumerate(nodes)}
    lays = {n["key"]: layout(n["type"], mappings) for n in nodes}
    links, out_links = [], {}
    for n in nodes:
        for in_name, (src, out_name) in n["links"].items():
            src_outs = [o[0] for o in lays[src]["outputs"]]
            in_names = [i[0] for i in lays[n["key"]]["inputs"]]
            if out_name not in src_outs or in_name not in in_names:
                raise ValueError(f"bad link {src}.{out_name} -> {n['key']}.{in_name}")
            slot = src_outs.index(out_name)
            link_id = len(links) + 1
            links.append([link_id, ids[src], slot, ids[n["key"]], in_names.index(in_name),
                          lays[src]["outputs"][slot][1]])
            out_links.setdefault((src, slot), []).append(link_id)
    incoming = {(l[3], l[4]): l[0] for l in links}
    ui_nodes = []
    for order, n in enumerate(nodes):
        lay, nid = lays[n["key"]], ids[n["key"]]
        values = dict(widget_defaults(n["type"], mappings), **n["widgets"])
        unknown = set(n["widgets"]) - {w for w in lay["widgets"] if not w.startswith("#")}
        if unknown:
            raise ValueError(f"{n['type']} has no widgets {sorted(unknown)}")
        widgets = []
        for w in lay["widgets"]:
            widgets.append(SEED_CONTROL if w == "#control_after_generate" else
                           UPLOAD_VALUE if w == "#upload" else values[w])
        ui = {
            "id": nid, "type": n["type"], "pos": n["pos"], "size": n["size"] or [300, 120],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": t, "link": incoming.get((nid, i))}
                       for i, (name, t) in enumerate(lay["inputs"])],
            "outputs": [{"name": name, "type": t, "links": out_links.get((n["key"], i), []),
                         "slot_index": i} for i, (name, t) in enumerate(lay["outputs"])],
            "properties": dict({"Node name for S&R": n["type"]},
                               **({"models": n["models"]} if n["models"] else {})),
            "widgets_values": widgets,
        }
        if n["title"]:
            ui["title"] = n["title"]
        ui_nodes.append(ui)
    return {"id": "00000000-0000-4000-8000-000000000000", "revision": 0,
            "last_node_id": len(nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7,
                                                                         "offset": [500, 350]}},
            "version": 0.4}


def to_api(nodes: list[dict], mappings: dict) -> dict:
    ids = {n["key"]: str(i + 1) for i, n in enumerate(nodes)}
    api = {}
    for n in nodes:
        if n["type"] in FRONTEND_ONLY:
            continue
        lay = layout(n["type"], mappings)
        values = dict(widget_defaults(n["type"], mappings), **n["widgets"])
        inputs = {w: values[w] for w in lay["widgets"] if not w.startswith("#")}
        outs = {k: [o[0] for o in layout(m["type"], mappings)["outputs"]]
                for k, m in ((m["key"], m) for m in nodes)}
        for in_name, (src, out_name) in n["links"].items():
            inputs[in_name] = [ids[src], outs[src].index(out_name)]
        # The frontend's _meta.title is the node's title: the display name unless renamed.
        title = n["title"] or getattr(mappings.get(n["type"]), "DISPLAY_NAME", n["type"])
        api[ids[n["key"]]] = {"class_type": n["type"], "inputs": inputs,
                              "_meta": {"title": title}}
    return api


def build_all(out_dir: Path = HERE, thumbnails: bool = True) -> list[Path]:
    mappings = load_pack().NODE_CLASS_MAPPINGS
    written = []
    (out_dir / "api").mkdir(parents=True, exist_ok=True)
    for name, make in WORKFLOWS.items():
        nodes = make()
        ui = to_ui(nodes, mappings)
        for path, data in ((out_dir / f"{name}.json", ui),
                           (out_dir / "api" / f"{name}.json", to_api(nodes, mappings))):
            path.write_text(json.dumps(data, indent=2) + "\n")
            written.append(path)
        if thumbnails:
            from thumbnails import write_thumbnail
            path = write_thumbnail(ui, out_dir / f"{name}.jpg")
            if path is not None:
                written.append(path)
    return written


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    for p in build_all():
        print(p.relative_to(ROOT))
