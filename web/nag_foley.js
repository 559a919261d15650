// NAG Foley's web extension (loaded by ComfyUI's frontend from WEB_DIRECTORY).
//  * an audio player per entry of a node's ui "audio" output (sampler takes, mixes, stems):
//    the core player serves only core node types and shows only the first entry;
//  * a note on a node from its ui "text" output (the loader says when it loaded the smoke set,
//    a video node why its clip is shorter than asked); an empty one clears it;
//  * the seed control of a sampler added from the node library starts at "fixed", so queueing a
//    chain again re-runs only what changed (a loaded workflow keeps the value saved in it).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "NAGFoley_";
const PLAYERS = "nagfoley_players";
const NOTE = "nagfoley_note";

function viewURL(entry) {
  const params = new URLSearchParams({
    filename: entry.filename, subfolder: entry.subfolder || "", type: entry.type || "output",
  });
  return api.apiURL(`/view?${params.toString()}`);
}

function domWidget(node, name, element) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    // serialize: false keeps it out of widgets_values and out of the prompt sent to /prompt
    // (an extra input key would change the node's cache key).
    widget = node.addDOMWidget(name, name, element, { serialize: false, hideOnZoom: false });
    widget.serialize = false;
  }
  return widget;
}

function showPlayers(node, entries) {
  const box = document.createElement("div");
  box.style.display = "flex";
  box.style.flexDirection = "column";
  box.style.gap = "2px";
  const widget = domWidget(node, PLAYERS, box);
  const root = widget.element;
  root.replaceChildren();
  entries.forEach((entry, i) => {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.style.width = "100%";
    audio.style.height = "28px";
    audio.title = entries.length > 1 ? `${i + 1}: ${entry.filename}` : entry.filename;
    audio.src = viewURL(entry);
    root.appendChild(audio);
  });
  node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas(true, true);
}

function showNote(node, lines) {
  // an empty note clears the one an earlier run left; it adds no widget to a node without one
  if (!lines.length && !node.widgets?.find((w) => w.name === NOTE)) return;
  const div = document.createElement("div");
  div.style.fontSize = "11px";
  div.style.whiteSpace = "pre-wrap";
  const widget = domWidget(node, NOTE, div);
  widget.element.textContent = lines.join("\n");
  const loud = (l) => l.includes("smoke-test") || l.startsWith("warning: ");
  widget.element.style.color = lines.some(loud) ? "#e0a040" : "";
  node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "NAGFoley.Nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith(PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.audio?.length) showPlayers(this, message.audio);
      if (Array.isArray(message?.text)) showNote(this, message.text);
    };
  },
  nodeCreated(node) {
    if (node.comfyClass !== `${PREFIX}NAGSampler`) return;
    const control = node.widgets?.find((w) => w.name === "control_after_generate");
    if (control) control.value = "fixed";
  },
});
