"""Error messages that say where in the graph they come from: the node's title and, for the
nodes of a chain, the step ("Step 3: NAG Sampler (NAG Foley): the prompt is empty ..."), and
the notes a node shows on the canvas (its ``ui.text``, drawn by the pack's web extension).

A node declares the hidden inputs of :data:`HIDDEN`; ComfyUI then passes the API prompt (whose
``_meta.title`` is the title the user sees on the canvas) and the node's id."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from nag_core.errors import NAGFoleyError

HIDDEN = {"graph": "PROMPT", "node_id": "UNIQUE_ID"}


def node_title(graph, node_id, fallback: str) -> str:
    """The title of node ``node_id`` in the API prompt ``graph``, else ``fallback``."""
    if isinstance(graph, dict) and node_id is not None:
        meta = (graph.get(str(node_id)) or {}).get("_meta") or {}
        title = meta.get("title")
        if isinstance(title, str) and title.strip():
            return title.strip()
    return fallback


def where(title: str, step: Optional[int] = None) -> str:
    """"Step k: title", or the title alone when it already names the step or there is none."""
    if step is None or title.lower().startswith(f"step {step}"):
        return title
    return f"Step {step}: {title}"


@contextlib.contextmanager
def reported_as(label: str) -> Iterator[None]:
    """Re-raise the pack's own errors with ``label`` in front (same error class, no chained
    traceback: the message is the whole story)."""
    try:
        yield
    except NAGFoleyError as e:
        raise type(e)(f"{label}: {e}") from None


WARNING = "warning: "  # a note line the web extension shows in orange


def clip_output(clip) -> dict:
    """A video node's return: the clip and its effective duration, and as the node's note the
    clip's MediaWarning (a source shorter than asked, or damaged part-way), so the user sees on
    the canvas why the clip is shorter. No warning sends an empty note, which clears the note an
    earlier run of the node left."""
    note = [WARNING + clip.warning] if clip.warning else []
    return {"ui": {"text": note}, "result": (clip, float(clip.duration))}
