"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): md5 checks, resume
with Range after an interrupted transfer, servers that ignore Range, offline mode, and the
models-folder resolution order."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from nag_core import download as dl
from nag_core.errors import WeightsError
from nag_core.weights import RemoteFile

HF_PATH = "/hkchengrex/MMAudio/resolve/main/weights/"
GH_PATH = "/hkchengrex/MMAudio/releases/download/v0.1/"
BODY = bytes(range(256)) * 40  # 10240 bytes
MAX_REQUESTS = 20


class _Server:
    """Serves ``files`` (url path -> bytes). ``cut_once``: paths whose first response stops
    half-way through the body. ``ignore_range``: paths always answered 200 with the whole body.
    ``bad_range``: paths answered 206 from byte 0 whatever Range asked.
    Records every request's path and Range header; stops itself after MAX_REQUESTS."""

    def __init__(self, files, cut_once=(), ignore_range=(), bad_range=()):
        self.files, self.cut = dict(files), set(cut_once)
        self.bad_range = set(bad_range)
        self.ignore_range = set(ignore_range)
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                first = 0
                rng = self.headers.get("Range")
                if rng and self.path not in server.ignore_range:
                    first = int(rng.split("=")[1].split("-")[0])
                    if self.path in server.bad_range:
                        first = 0  # a broken server: 206, but from the start
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[first:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        for _ in range(MAX_REQUESTS):  # bounded: the thread ends even if a test forgets to stop it
            if self.stopped:
                break
            self.httpd.handle_request()

    def __enter__(self):
        self.stopped = False
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped = True
        self.httpd.server_close()


@pytest.fixture
def endpoints(monkeypatch):
    def point_at(server):
        monkeypatch.setenv("NAGFOLEY_HF_ENDPOINT", server.url)
        monkeypatch.setenv("NAGFOLEY_GITHUB_ENDPOINT", server.url)
    for var in ("NAGFOLEY_OFFLINE", "HF_HUB_OFFLINE", "NAGFOLEY_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    return point_at


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _hf(name, md5):
    return RemoteFile(name, f"{dl.HF}{HF_PATH}{name}", md5)


def _gh(name, md5):
    return RemoteFile(name, f"{dl.GITHUB}{GH_PATH}{name}", md5)


def test_good_file_from_hub_layout(tmp_path, endpoints):
    with _Server({HF_PATH + "good.pth": BODY}) as srv:
        endpoints(srv)
        path = dl.download_file(_hf("good.pth", _md5(BODY)), tmp_path, progress=False)
    assert path == tmp_path / "good.pth" and path.read_bytes() == BODY
    assert not (tmp_path / "good.pth.partial").exists()
    assert srv.requests == [(HF_PATH + "good.pth", None)]


def test_github_layout_and_nested_folder(tmp_path, endpoints):
    remote = RemoteFile("sub/dir/v1-16.pth", f"{dl.GITHUB}{GH_PATH}v1-16.pth", _md5(BODY))
    with _Server({GH_PATH + "v1-16.pth": BODY}) as srv:
        endpoints(srv)
        path = dl.download_file(remote, tmp_path, progress=False)
    assert path.read_bytes() == BODY and path.parent == tmp_path / "sub" / "dir"


def test_wrong_md5_deletes_everything(tmp_path, endpoints):
    with _Server({HF_PATH + "bad.pth": BODY}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="md5") as e:
            dl.download_file(_hf("bad.pth", "0" * 32), tmp_path, progress=False)
    assert "deleted" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_resumes_with_range(tmp_path, endpoints):
    with _Server({GH_PATH + "cut.pth": BODY}, cut_once={GH_PATH + "cut.pth"}) as srv:
        endpoints(srv)
        path = dl.download_file(_gh("cut.pth", _md5(BODY)), tmp_path, progress=False,
                                retry_wait=0)
    assert path.read_bytes() == BODY
    assert len(srv.requests) == 2
    assert srv.requests[0][1] is None
    assert srv.requests[1][1] == f"bytes={len(BODY) // 2}-"  # resumed from the partial


def test_partial_left_by_an_earlier_run_is_resumed(tmp_path, endpoints):
    (tmp_path / "old.pth.partial").write_bytes(BODY[:1000])
    with _Server({HF_PATH + "old.pth": BODY}) as srv:
        endpoints(srv)
        dl.download_file(_hf("old.pth", _md5(BODY)), tmp_path, progress=False)
    assert (tmp_path / "old.pth").read_bytes() == BODY
    assert srv.requests == [(HF_PATH + "old.pth", "bytes=1000-")]


def test_server_ignoring_range_restarts(tmp_path, endpoints):
    (tmp_path / "norange.pth.partial").write_bytes(b"x" * 1000)  # not even a prefix
    with _Server({HF_PATH + "norange.pth": BODY}, ignore_range={HF_PATH + "norange.pth"}) as srv:
        endpoints(srv)
        path = dl.download_file(_hf("norange.pth", _md5(BODY)), tmp_path, progress=False)
    assert path.read_bytes() == BODY


def test_http_404_is_a_clear_error(tmp_path, endpoints):
    with _Server({}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="HTTP 404.*yourself to"):
            dl.download_file(_hf("nothere.pth", None), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_makes_no_request_and_lists_missing_files(tmp_path, endpoints, monkeypatch):
    with _Server({}) as srv:
        endpoints(srv)
        monkeypatch.setenv("NAGFOLEY_OFFLINE", "1")
        with pytest.raises(WeightsError) as e:
            dl.ensure_model_files("small_16k", tmp_path)
    msg = str(e.value)
    assert srv.requests == []
    assert "offline" in msg
    for name in ("mmaudio_small_16k.pth", "v1-16.pth", "best_netG.pt",
                 "synchformer_state_dict.pth", "open_clip_pytorch_model.bin"):
        assert name in msg
    assert str(tmp_path) in msg


@pytest.mark.parametrize("env", ["NAGFOLEY_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_environment(monkeypatch, env):
    monkeypatch.delenv("NAGFOLEY_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not dl.is_offline()
    monkeypatch.setenv(env, "1")
    assert dl.is_offline() and not dl.is_offline(False)


def test_models_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAGFOLEY_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if dl.find_comfyui_root(Path(dl.__file__).parent) is None:  # not installed inside ComfyUI
        assert dl.resolve_models_dir() == tmp_path / "xdg" / "nag-foley" / "models"
    comfy = tmp_path / "ComfyUI"
    for d in ("comfy", "models", "custom_nodes/pack/sub"):
        (comfy / d).mkdir(parents=True)
    (comfy / "main.py").write_text("")
    monkeypatch.chdir(comfy / "custom_nodes" / "pack" / "sub")
    assert dl.resolve_models_dir() == comfy / "models" / "mmaudio"
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(tmp_path / "env"))
    assert dl.resolve_models_dir() == tmp_path / "env"
    assert dl.resolve_models_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_endpoint_override_only_replaces_the_host(monkeypatch):
    monkeypatch.setenv("NAGFOLEY_HF_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.delenv("NAGFOLEY_GITHUB_ENDPOINT", raising=False)
    assert dl.resolve_url(f"{dl.HF}{HF_PATH}x.pth") == f"http://127.0.0.1:9{HF_PATH}x.pth"
    gh = f"{dl.GITHUB}{GH_PATH}x.pth"
    assert dl.resolve_url(gh) == gh


def test_blocked_download_lists_every_missing_file(tmp_path, endpoints):
    with _Server({}) as srv:  # every file 404: like a proxy that blocks the hub
        endpoints(srv)
        with pytest.raises(WeightsError) as e:
            dl.ensure_model_files("small_16k", tmp_path, offline=False, progress=False)
    msg = str(e.value)
    assert "HTTP 404" in msg and len(srv.requests) == 1
    for name in ("mmaudio_small_16k.pth", "v1-16.pth", "best_netG.pt",
                 "synchformer_state_dict.pth", "open_clip_pytorch_model.bin"):
        assert name in msg


def test_resume_at_the_wrong_offset_starts_over(tmp_path, endpoints):
    """A server answering 206 from another byte than asked: the partial is not trusted."""
    (tmp_path / "odd.pth.partial").write_bytes(BODY[:1000])
    with _Server({HF_PATH + "odd.pth": BODY}, bad_range={HF_PATH + "odd.pth"}) as srv:
        endpoints(srv)
        path = dl.download_file(_hf("odd.pth", _md5(BODY)), tmp_path, progress=False,
                                retry_wait=0)
    assert path.read_bytes() == BODY
    assert [r[1] for r in srv.requests] == ["bytes=1000-", None]


def test_damaged_partial_fails_the_md5_and_is_removed(tmp_path, endpoints):
    (tmp_path / "junk.pth.partial").write_bytes(b"y" * 1000)  # not a prefix of the file
    with _Server({HF_PATH + "junk.pth": BODY}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="md5"):
            dl.download_file(_hf("junk.pth", _md5(BODY)), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # the next run starts clean
