"""The example workflows: consistent with the node definitions, up to date with their builder,
and runnable exactly as shipped on a models folder that holds only the MMAudio files (no
ControlNet): the UI files converted by the frontend's rules and the API files, through a
miniature executor with ComfyUI's caching rule."""

from __future__ import annotations

import functools
import json
import sys

import pytest

from nodes_support import (DEMO_VIDEO, ROOT, MiniComfy, api_workflow, load_pack,
                           shipped_workflows, ui_to_api, use_workspace)

WORKFLOW_DIR = ROOT / "workflows"
UI_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
# Core / frontend nodes the workflows rely on, with their widget counts in the UI format.
CORE_WIDGETS = {"PreviewAudio": 0, "Note": 1}
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


@functools.lru_cache(maxsize=None)
def executor() -> MiniComfy:
    """One executor for the workflow runs, so the model loader's output is cached between them
    (as it is in a ComfyUI session)."""
    return MiniComfy(load_pack().NODE_CLASS_MAPPINGS)


def builder():
    sys.path.insert(0, str(WORKFLOW_DIR))
    import build_workflows
    return build_workflows


def expected_widgets(cls) -> list:
    """(name, spec) per widget position, hidden positions as (marker, None), from INPUT_TYPES."""
    out, upload = [], False
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            if isinstance(s[0], list) or s[0] in WIDGET_KINDS:
                out.append((name, s))
                if name == "seed":
                    out.append(("<seed control>", None))
                upload |= section == "required" and bool(s[1].get("video_upload"))
        if section == "required" and upload:
            out.append(("<upload>", None))
    return out


def test_there_are_three_ui_workflows_and_their_api_twins():
    names = {p.stem for p in UI_FILES}
    assert names == {"nag_foley_5_step_chain", "nag_foley_single_step",
                     "nag_foley_method_comparison"}
    for n in names:
        assert (WORKFLOW_DIR / "api" / f"{n}.json").is_file()


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_matches_the_node_definitions(path):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4
    mappings = load_pack().NODE_CLASS_MAPPINGS
    by_id = {n["id"]: n for n in wf["nodes"]}
    for node in wf["nodes"]:
        t, values = node["type"], node["widgets_values"]
        if t in CORE_WIDGETS:
            assert len(values) == CORE_WIDGETS[t], t
            continue
        assert t in mappings, f"{path.name}: unknown node {t}"
        slots = expected_widgets(mappings[t])
        assert len(values) == len(slots), f"{t}: {values} vs {[s[0] for s in slots]}"
        for (name, spec), value in zip(slots, values):
            if spec is None:
                assert value in (("fixed", "increment", "decrement", "randomize")
                                 if name == "<seed control>" else ("image",))
            elif isinstance(spec[0], list):
                if spec[0]:  # static option lists; file combos are checked by running below
                    assert value in spec[0], f"{t}.{name} = {value!r}"
                else:
                    assert isinstance(value, str) and value
            elif spec[0] in ("INT", "FLOAT"):
                assert spec[1]["min"] <= value <= spec[1]["max"], f"{t}.{name}"
            elif spec[0] == "BOOLEAN":
                assert isinstance(value, bool)
            else:
                assert isinstance(value, str)
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        assert link_id in by_id[src]["outputs"][src_slot]["links"]
        target = by_id[dst]["inputs"][dst_slot]
        assert target["link"] == link_id and target["type"] == kind
        assert by_id[src]["outputs"][src_slot]["type"] == kind
    assert wf["last_link_id"] == max(l[0] for l in wf["links"])
    assert wf["last_node_id"] == max(by_id)


def test_workflows_are_up_to_date_with_the_builder(tmp_path):
    written = builder().build_all(tmp_path, thumbnails=False)
    assert written
    for p in written:
        committed = WORKFLOW_DIR / p.relative_to(tmp_path)
        assert json.loads(p.read_text()) == json.loads(committed.read_text()), (
            f"{committed.name} is stale: run python workflows/build_workflows.py")


def test_workflows_need_no_controlnet_and_name_their_model_files():
    """Nothing ships a ControlNet: no workflow selects one, every sampler runs 'auto', and each
    file the loader selects is listed in properties.models for the missing-models dialog."""
    from nag_core.weights import classify
    mappings = load_pack().NODE_CLASS_MAPPINGS
    assert UI_FILES
    for path in UI_FILES:
        nodes = json.loads(path.read_text())["nodes"]
        types = [n["type"] for n in nodes]
        assert "NAGFoley_NAGControlNetLoader" not in types, path.name
        samplers = [n for n in nodes if n["type"] == "NAGFoley_NAGSampler"]
        assert samplers, path.name
        for n in nodes:
            if n["type"] in CORE_WIDGETS:
                continue
            slots = [name for name, _ in expected_widgets(mappings[n["type"]])]
            values = dict(zip(slots, n["widgets_values"]))
            assert not any(isinstance(v, str) and classify(v) == "controlnet"
                           for v in values.values()), f"{path.name}: {n['type']} {values}"
            if n["type"] == "NAGFoley_LoadVideo":
                assert values["video"] == DEMO_VIDEO
            if n["type"] == "NAGFoley_NAGSampler" and "negative_audio" in {
                    i["name"] for i in n["inputs"] if i["link"] is not None}:
                assert values["method"] in ("auto", "independent", "negative_prompt",
                                            "text_nag"), f"{path.name}: {values['method']}"
            if n["type"] == "NAGFoley_MMAudioLoader":
                files = {values[k] for k in ("network", "vae", "vocoder", "synchformer", "clip")}
                models = n["properties"]["models"]
                assert {m["name"] for m in models} == files
                for m in models:
                    assert m["directory"] == "mmaudio" and m["url"].startswith("https://")
                    assert m["url"].rsplit("/", 1)[-1] == m["name"].rsplit("/", 1)[-1]


def test_frontend_conversion_of_each_ui_workflow_equals_its_api_file():
    mappings = load_pack().NODE_CLASS_MAPPINGS
    shipped = shipped_workflows()
    assert set(shipped) == {p.stem for p in UI_FILES}
    for name, (ui, api) in shipped.items():
        assert ui_to_api(ui, mappings) == api, name


@pytest.mark.parametrize("name", sorted(p.stem for p in UI_FILES))
def test_each_shipped_workflow_runs_as_shipped_without_a_controlnet(monkeypatch, name):
    """The file as shipped (its UI form converted as the frontend converts it), its 25 Euler
    steps included, on models/mmaudio holding only the smoke set: every output node writes its
    files and every sampler runs."""
    from nag_core.weights import classify
    root = use_workspace(monkeypatch)
    models = root / "models" / "mmaudio"
    weights = [p for p in models.rglob("*") if p.is_file() and classify(p.name)]
    assert weights and not [p for p in weights if classify(p.name) == "controlnet"]
    mappings = load_pack().NODE_CLASS_MAPPINGS
    ui, api = shipped_workflows()[name]
    prompt = ui_to_api(ui, mappings)
    assert prompt == api
    exe = MiniComfy(mappings)  # a fresh session: every node runs
    before = {p for p in (root / "output").rglob("*") if p.is_file()}
    results = exe.run(prompt)
    samplers = [k for k, v in prompt.items() if v["class_type"] == "NAGFoley_NAGSampler"]
    assert samplers and all(k in results for k in samplers)
    outputs = [k for k, v in prompt.items() if getattr(mappings[v["class_type"]], "OUTPUT_NODE",
                                                       False)]
    assert outputs
    written = {p for p in (root / "output").rglob("*") if p.is_file()} - before
    for k in outputs:
        entries = exe.ui[k].get("audio") or exe.ui[k].get("images")
        assert entries, (name, k)
        for e in entries:
            assert e["type"] == "output"
            assert (root / "output" / e["subfolder"] / e["filename"]) in written


# Measured in a real ComfyUI 0.3.64 (frontend 1.27.10): the frontend grows a 320-wide LoadVideo
# to 462 to fit its preview of the square demo video; other nodes keep their declared sizes.
LOAD_VIDEO_MIN_HEIGHT = 462
TITLE_HEIGHT = 30  # LiteGraph draws the title above pos


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_nodes_do_not_overlap_in_the_frontend(path):
    """A node drawn over another hides its title and widgets when the template is opened."""
    boxes = []
    for n in json.loads(path.read_text())["nodes"]:
        (x, y), (w, h) = n["pos"], n["size"]
        if n["type"] == "NAGFoley_LoadVideo":
            h = max(h, LOAD_VIDEO_MIN_HEIGHT)
        boxes.append((n.get("title", n["type"]), x, y - TITLE_HEIGHT, x + w, y + h))
    overlaps = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
    assert not overlaps, f"{path.name}: overlapping nodes {overlaps}"


def count_video_encodings(monkeypatch) -> list:
    """A list that gets one entry per MMAudioModel.encode_video call."""
    from nag_core.model import MMAudioModel
    calls = []
    real = MMAudioModel.encode_video
    monkeypatch.setattr(MMAudioModel, "encode_video",
                        lambda self, clip: calls.append(1) or real(self, clip))
    return calls


def test_five_step_chain_runs_and_encodes_the_video_once(monkeypatch):
    use_workspace(monkeypatch)
    calls = count_video_encodings(monkeypatch)
    exe = executor()
    prompt = api_workflow("nag_foley_5_step_chain")
    for node in prompt.values():  # a short clip: this test runs the chain three times
        if node["class_type"] == "NAGFoley_LoadVideo":
            node["inputs"]["duration"] = 1.0
    types = {k: v["class_type"] for k, v in prompt.items()}
    results = exe.run(prompt)
    samplers = [k for k, t in types.items() if t == "NAGFoley_NAGSampler"]
    assert len(samplers) == 5 and len(calls) == 1
    assert all(results[k][0]["sample_rate"] == 16000 for k in samplers)

    # Redo step 3: only step 3 onwards (and the savers) run again; the video is not re-encoded.
    exe.executed.clear()
    third = samplers[2]
    prompt[third]["inputs"]["prompt"] = "thunder"
    exe.run(prompt)
    rerun = {types[k] for k in exe.executed}
    assert len(calls) == 1
    assert "NAGFoley_EncodeVideo" not in rerun and "NAGFoley_MMAudioLoader" not in rerun
    assert [k for k in exe.executed if types[k] == "NAGFoley_NAGSampler"] == samplers[2:]

    # Same prompt again: nothing runs (the cache holds every output).
    exe.executed.clear()
    exe.run(prompt)
    assert exe.executed == []


def test_comparison_and_single_step_workflows_run(monkeypatch):
    use_workspace(monkeypatch)
    calls = count_video_encodings(monkeypatch)
    exe = executor()
    prompt = api_workflow("nag_foley_method_comparison")
    for node in prompt.values():  # another clip than the chain test's: encoded afresh here
        if node["class_type"] == "NAGFoley_LoadVideo":
            node["inputs"]["duration"] = 1.25
    results = exe.run(prompt)
    samplers = {v["inputs"]["method"]: results[k][0] for k, v in prompt.items()
                if v["class_type"] == "NAGFoley_NAGSampler" and "negative_audio" in v["inputs"]}
    assert set(samplers) == set(builder().comparison_methods()) and len(samplers) >= 2
    assert len(calls) == 1  # every sampler shares one encoding
    waves = [a["waveform"] for a in samplers.values()]
    assert all(not a.equal(b) for i, a in enumerate(waves) for b in waves[i + 1:])
