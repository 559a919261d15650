"""Check the pack in a running ComfyUI: every shipped workflow queued as shipped, and in the
real frontend. See docs/COMFYUI.md for bringing up a server to check against.

    python workflows/check_in_comfyui.py api --url http://127.0.0.1:8188 [--log server.log]
    python workflows/check_in_comfyui.py ui  --url http://127.0.0.1:8188 --shots DIR

``api`` (standard library only) lists the pack's nodes from /object_info, queues each file of
workflows/api through POST /prompt, waits for /history, checks the status and that every file an
output node reports can be fetched from /view, queues the 5-step chain again (everything must
come from the cache), frees the models with POST /free and queues it with a new seed at step 3
(only step 3 onwards must run). With ``--log`` it also checks ComfyUI's log for the pack's models
being loaded by ComfyUI's model management, and loaded again after /free.

``ui`` (needs ``pip install playwright`` and a Chromium) opens the frontend, loads each UI file of
workflows/ as a user dropping it on the canvas would, queues it, waits for the queue to empty and
saves a screenshot per workflow into DIR. Look at the screenshots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "NAGFoley_"
CHAIN = "nag_foley_5_step_chain"


def call(url: str, path: str, body=None, timeout: float = 60.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}")
    return json.loads(raw) if raw else None


def queue(url: str, prompt: dict, wait_s: float) -> dict:
    """Queue ``prompt`` and return its /history entry once it has finished."""
    reply = call(url, "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    prompt_id = reply["prompt_id"]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        history = call(url, f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("status_str") in ("success", "error")):
            return entry
        time.sleep(1.0)
    raise SystemExit(f"prompt {prompt_id} did not finish within {wait_s:.0f} s")


def messages(entry: dict, kind: str) -> list:
    return [m[1] for m in entry.get("status", {}).get("messages", []) if m[0] == kind]


def check_outputs(url: str, name: str, prompt: dict, entry: dict) -> int:
    """Every file an output node reported can be fetched; returns how many were checked."""
    checked = 0
    for node_id, out in entry.get("outputs", {}).items():
        for key in ("audio", "images"):
            for item in out.get(key, []):
                query = urllib.parse.urlencode({"filename": item["filename"],
                                                "subfolder": item.get("subfolder", ""),
                                                "type": item.get("type", "output")})
                with urllib.request.urlopen(f"{url.rstrip('/')}/view?{query}",
                                            timeout=60) as r:
                    if r.status != 200 or not r.read(16):
                        raise SystemExit(f"{name}: node {node_id} reported {item} but /view "
                                         "returned nothing")
                checked += 1
    savers = [k for k, v in prompt.items() if v["class_type"] in (
        f"{PREFIX}SaveStems", f"{PREFIX}SaveVideoWithAudio")]
    missing = [k for k in savers if not entry.get("outputs", {}).get(k)]
    if missing:
        raise SystemExit(f"{name}: output nodes {missing} reported no files")
    return checked


def run_api(args) -> None:
    url = args.url
    info = call(url, "/object_info")
    ours = {k: v for k, v in info.items() if k.startswith(PREFIX)}
    print(f"{len(ours)} NAG Foley nodes: " + ", ".join(v["display_name"] for v in ours.values()))
    bad = [v["display_name"] for v in ours.values() if not v["display_name"].endswith(
        "(NAG Foley)")]
    if not ours or bad:
        raise SystemExit(f"nodes missing or badly named: {bad or 'none registered'}")
    files = sorted((HERE / "api").glob("*.json"))
    if not files:
        raise SystemExit(f"no API workflows in {HERE / 'api'}")
    for path in files:
        prompt = json.loads(path.read_text())
        start = time.monotonic()
        entry = queue(url, prompt, args.wait)
        status = entry["status"]["status_str"]
        if status != "success":
            raise SystemExit(f"{path.name}: {status}: {messages(entry, 'execution_error')}")
        n = check_outputs(url, path.name, prompt, entry)
        print(f"{path.name}: success in {time.monotonic() - start:.0f} s, {n} files served")

    chain = json.loads((HERE / "api" / f"{CHAIN}.json").read_text())
    entry = queue(url, chain, args.wait)
    cached = set(sum((m.get("nodes", []) for m in messages(entry, "execution_cached")), []))
    if cached != set(chain):
        raise SystemExit(f"re-queued chain re-ran {sorted(set(chain) - cached)}")
    print(f"{CHAIN}: queued again, all {len(chain)} nodes from the cache")

    log_mark = _log_size(args.log)
    call(url, "/free", {"unload_models": True, "free_memory": False})
    samplers = [k for k, v in chain.items() if v["class_type"] == f"{PREFIX}NAGSampler"]
    third = samplers[2]
    chain[third]["inputs"]["seed"] += 1000
    entry = queue(url, chain, args.wait)
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"after /free: {messages(entry, 'execution_error')}")
    cached = set(sum((m.get("nodes", []) for m in messages(entry, "execution_cached")), []))
    rerun = [k for k in samplers if k not in cached]
    if rerun != samplers[2:]:
        raise SystemExit(f"a new seed at step 3 re-ran samplers {rerun}, expected "
                         f"{samplers[2:]}")
    print(f"after /free, new seed at step 3: samplers {rerun} re-ran, steps 1-2 cached")
    if args.log:
        new = Path(args.log).read_text(errors="replace")[log_mark:]
        if "Requested to load NAGFoleyMMAudioModel" not in new:
            raise SystemExit("after /free the model was not loaded again through ComfyUI's "
                             "model management (no 'Requested to load NAGFoleyMMAudioModel')")
        print("ComfyUI's log: 'Requested to load NAGFoleyMMAudioModel' again after /free")


def _log_size(log) -> int:
    return len(Path(log).read_text(errors="replace")) if log else 0


def run_ui(args) -> None:
    from playwright.sync_api import sync_playwright
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    files = sorted(HERE.glob("*.json"))
    if not files:
        raise SystemExit(f"no UI workflows in {HERE}")
    # A first visit opens the template browser over the canvas: mark the tour as done.
    call(args.url, "/settings/Comfy.TutorialCompleted", True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1900, "height": 1000})
        page.goto(args.url, wait_until="networkidle")
        page.wait_for_function("window.app && window.app.graph", timeout=120_000)
        for path in files:
            workflow = json.loads(path.read_text())
            # what dropping the file on the canvas does
            page.keyboard.press("Escape")  # any dialog still open
            page.evaluate("wf => window.app.loadGraphData(wf, true, true, 'nag')", workflow)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / f"{path.stem}_loaded.png"))
            page.evaluate("() => window.app.queuePrompt(0, 1)")
            deadline = time.monotonic() + args.wait
            while time.monotonic() < deadline:
                page.wait_for_timeout(2000)
                queue_state = call(args.url, "/queue")
                if not queue_state["queue_running"] and not queue_state["queue_pending"]:
                    break
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / f"{path.stem}_done.png"))
            history = call(args.url, "/history?max_items=1")
            status = next(iter(history.values()))["status"]["status_str"] if history else "none"
            print(f"{path.name}: queued from the frontend: {status}")
        browser.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("api", "ui"):
        p = sub.add_parser(name)
        p.add_argument("--url", default="http://127.0.0.1:8188")
        p.add_argument("--wait", type=float, default=1800.0, help="seconds per workflow")
    sub.choices["api"].add_argument("--log", help="ComfyUI's log file, to check memory use")
    sub.choices["ui"].add_argument("--shots", required=True, help="folder for screenshots")
    sub.choices["ui"].add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    (run_api if args.what == "api" else run_ui)(args)


if __name__ == "__main__":
    sys.exit(main())
