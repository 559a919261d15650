"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): md5 / sha256 / size /
content-type / structure checks before a file gets its name, resume with Range and If-Range
after an interrupted transfer, servers that ignore Range, trickling servers, local write errors,
offline mode, and the models-folder resolution order."""

import errno
import hashlib
import http.server
import io
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from nag_core import download as dl
from nag_core.errors import WeightsError
from nag_core.weights import RemoteFile

HF_PATH = "/hkchengrex/MMAudio/resolve/main/weights/"
GH_PATH = "/hkchengrex/MMAudio/releases/download/v0.1/"
MAX_REQUESTS = 20


def _checkpoint_bytes(seed: int) -> bytes:
    """A real (zip-format) PyTorch checkpoint of about 10 kB: the downloads are verified."""
    buf = io.BytesIO()
    torch.save({"w": torch.randn(2500, generator=torch.Generator().manual_seed(seed))}, buf)
    return buf.getvalue()


BODY = _checkpoint_bytes(0)
OTHER = _checkpoint_bytes(1)  # same size, other content: "the file changed on the server"
assert len(OTHER) == len(BODY) and OTHER != BODY


class _Server:
    """Serves ``files`` (url path -> bytes). ``cut_once``: paths whose first response stops
    half-way through the body. ``ignore_range``: paths always answered 200 with the whole body.
    ``bad_range``: paths answered 206 from byte 0 whatever Range asked. ``headers``: extra
    headers per path (``{"ETag": ...}``; ``Content-Type`` replaces application/octet-stream).
    ``no_length``: paths sent without Content-Length (the body ends when the connection closes).
    ``etags``: path -> the ETag the server states; an If-Range that differs gets the whole body
    (as HTTP requires) unless the path is in ``ignore_if_range``. ``trickle``: paths sent one
    byte every ``trickle_s`` seconds. ``redirect``: path -> headers of a 302 to ``path + "@cdn"``.
    Records every request's path, Range and If-Range; stops itself after MAX_REQUESTS."""

    def __init__(self, files, cut_once=(), ignore_range=(), bad_range=(), headers=None,
                 no_length=(), etags=None, ignore_if_range=(), trickle=(), trickle_s=0.05,
                 redirect=None):
        self.files, self.cut = dict(files), set(cut_once)
        self.bad_range = set(bad_range)
        self.ignore_range = set(ignore_range)
        self.headers, self.no_length = dict(headers or {}), set(no_length)
        self.etags, self.ignore_if_range = dict(etags or {}), set(ignore_if_range)
        self.trickle, self.trickle_s = set(trickle), trickle_s
        self.redirect = dict(redirect or {})
        self.requests = []
        self.full_requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                server.requests.append((path, self.headers.get("Range")))
                server.full_requests.append((path, self.headers.get("Range"),
                                             self.headers.get("If-Range")))
                if path in server.redirect:
                    self.send_response(302)
                    self.send_header("Location", path + "@cdn")
                    for k, v in server.redirect[path].items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                key = path[:-4] if path.endswith("@cdn") else path
                body = server.files.get(key)
                if body is None:
                    self.send_error(404)
                    return
                first = 0
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                etag = server.etags.get(key)
                stale = (if_range is not None and etag is not None and if_range != etag
                         and key not in server.ignore_if_range)
                if rng and key not in server.ignore_range and not stale:
                    first = int(rng.split("=")[1].split("-")[0])
                    if key in server.bad_range:
                        first = 0  # a broken server: 206, but from the start
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[first:]
                extra = dict(server.headers.get(key, {}))
                self.send_header("Content-Type", extra.pop("Content-Type",
                                                           "application/octet-stream"))
                if etag is not None:
                    self.send_header("ETag", etag)
                for k, v in extra.items():
                    self.send_header(k, v)
                if key not in server.no_length:
                    self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if key in server.cut:
                    server.cut.discard(key)
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if key in server.trickle:
                    for i in range(len(part)):
                        try:
                            self.wfile.write(part[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return  # the client gave up
                        time.sleep(server.trickle_s)
                    return
                self.wfile.write(part)
                if key in server.no_length:
                    self.close_connection = True

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pth"]  # no partial, no state
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


def test_damaged_partial_fails_the_checks_and_is_removed(tmp_path, endpoints):
    (tmp_path / "junk.pth.partial").write_bytes(b"y" * 1000)  # not a prefix of the file
    with _Server({HF_PATH + "junk.pth": BODY}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="damaged: it is neither a zip"):
            dl.download_file(_hf("junk.pth", _md5(BODY)), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # the next run starts clean



# --------------------------------------------------------------------------- verification
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("case", ["html_page", "html_without_type", "empty", "cut_no_length"])
def test_a_body_that_is_not_the_file_never_gets_its_name(tmp_path, endpoints, case):
    """No md5 is known (like CLIP, BigVGAN-v2, the vocabulary): the other checks must hold."""
    page = b"<!DOCTYPE html><html><body>Rate limited. Try later.</body></html>"
    files, kw = {HF_PATH + "clip.bin": BODY}, {}
    if case == "html_page":
        files[HF_PATH + "clip.bin"] = page
        kw["headers"] = {HF_PATH + "clip.bin": {"Content-Type": "text/html; charset=utf-8"}}
    elif case == "html_without_type":
        files[HF_PATH + "clip.bin"] = b"\n  " + page
    elif case == "empty":
        files[HF_PATH + "clip.bin"] = b""
    else:  # the connection closes half way and no Content-Length said how long the file is
        kw = {"no_length": {HF_PATH + "clip.bin"}, "cut_once": {HF_PATH + "clip.bin"}}
    with _Server(files, **kw) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError) as e:
            dl.download_file(_hf("clip.bin", None), tmp_path, progress=False, retry_wait=0)
    msg = str(e.value)
    expect = {"html_page": "web page", "html_without_type": "web page", "empty": "empty",
              "cut_no_length": "cut-off or damaged zip"}[case]
    assert expect in msg and "clip.bin" in msg
    assert _names(tmp_path) == []  # neither the real name nor a partial to resume from
    with _Server({HF_PATH + "clip.bin": BODY}) as srv:  # the next run fetches it afresh
        endpoints(srv)
        assert dl.download_file(_hf("clip.bin", None), tmp_path, progress=False).read_bytes() \
            == BODY


def test_the_hubs_sha256_is_checked(tmp_path, endpoints):
    path = HF_PATH + "gen.pt"
    with _Server({path: BODY}, etags={path: f'"{_sha(OTHER)}"'}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="sha256"):
            dl.download_file(_hf("gen.pt", None), tmp_path, progress=False)
    assert _names(tmp_path) == []
    with _Server({path: BODY}, etags={path: f'"{_sha(BODY)}"'}) as srv:
        endpoints(srv)
        assert dl.download_file(_hf("gen.pt", None), tmp_path, progress=False).read_bytes() == BODY


def test_the_sha256_on_the_hubs_redirect_is_checked(tmp_path, endpoints):
    """The hub answers an LFS file with a redirect to its CDN carrying X-Linked-Etag."""
    path = HF_PATH + "gen.pt"
    redirect = {path: {"X-Linked-Etag": f'"{_sha(OTHER)}"', "X-Linked-Size": str(len(BODY))}}
    with _Server({path: BODY}, redirect=redirect) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="sha256"):
            dl.download_file(_hf("gen.pt", None), tmp_path, progress=False)
    assert srv.requests[1][0] == path + "@cdn"
    assert _names(tmp_path) == []


def test_a_64_digit_etag_from_another_host_is_only_a_validator(tmp_path, endpoints):
    path = GH_PATH + "v.pth"
    with _Server({path: BODY}, etags={path: f'"{_sha(OTHER)}"'}) as srv:
        endpoints(srv)
        assert dl.download_file(_gh("v.pth", None), tmp_path, progress=False).read_bytes() == BODY


def test_a_resume_from_changed_content_starts_over(tmp_path, endpoints):
    """The first run got half of the old file; the server now has another file of the same
    size. If-Range carries the old ETag, so the server sends the whole new file."""
    path = HF_PATH + "net.pth"
    with _Server({path: BODY}, cut_once={path}, etags={path: '"v1"'}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="interrupted"):
            dl.download_file(_hf("net.pth", None), tmp_path, progress=False, retries=0)
    assert (tmp_path / "net.pth.partial").read_bytes() == BODY[: len(BODY) // 2]
    with _Server({path: OTHER}, etags={path: '"v2"'}) as srv:
        endpoints(srv)
        got = dl.download_file(_hf("net.pth", None), tmp_path, progress=False)
    assert srv.full_requests == [(path, f"bytes={len(BODY) // 2}-", '"v1"')]
    assert got.read_bytes() == OTHER
    assert _names(tmp_path) == ["net.pth"]


def test_a_resume_the_server_splices_anyway_is_caught_by_the_sha256(tmp_path, endpoints):
    """A server that ignores If-Range: the sha256 it states changed, so the splice is refused
    before a byte is appended and the file is fetched whole."""
    path = HF_PATH + "net.pth"
    with _Server({path: BODY}, cut_once={path}, etags={path: f'"{_sha(BODY)}"'}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="interrupted"):
            dl.download_file(_hf("net.pth", None), tmp_path, progress=False, retries=0)
    with _Server({path: OTHER}, etags={path: f'"{_sha(OTHER)}"'},
                 ignore_if_range={path}) as srv:
        endpoints(srv)
        got = dl.download_file(_hf("net.pth", None), tmp_path, progress=False, retry_wait=0)
    assert [r[1] for r in srv.requests] == [f"bytes={len(BODY) // 2}-", None]
    assert got.read_bytes() == OTHER


def test_a_damaged_file_already_in_place_is_set_aside_and_fetched_again(tmp_path, endpoints):
    page = b"<html><body>502 Bad Gateway</body></html>"
    (tmp_path / "open_clip.bin").write_bytes(page)  # what an earlier version let through
    with _Server({HF_PATH + "open_clip.bin": BODY}) as srv:
        endpoints(srv)
        got = dl.download_file(_hf("open_clip.bin", None), tmp_path, progress=False)
    assert got.read_bytes() == BODY
    assert (tmp_path / "open_clip.bin.damaged").read_bytes() == page  # kept, not deleted
    good = dict(srv.requests)
    with _Server({}) as srv:  # a good file in place: no request at all
        endpoints(srv)
        dl.download_file(_hf("open_clip.bin", None), tmp_path, progress=False)
    assert srv.requests == [] and good


def test_structural_checks_of_gzip_and_json(tmp_path, endpoints):
    import gzip
    vocab = gzip.compress(b"#version: 0.2\na b\n" * 200)
    with _Server({"/v.txt.gz": vocab[:-30], "/config.json": b"[1, 2]"}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="cut off"):
            dl.download_file(RemoteFile("v.txt.gz", f"{dl.GITHUB}/v.txt.gz"), tmp_path,
                             progress=False)
        with pytest.raises(WeightsError, match="JSON list"):
            dl.download_file(RemoteFile("config.json", f"{dl.GITHUB}/config.json"), tmp_path,
                             progress=False)
    assert _names(tmp_path) == []


def test_a_trickling_server_ends_with_a_clear_message(tmp_path, endpoints):
    path = HF_PATH + "slow.pth"
    limits = dl.Limits(timeout=5, min_rate=1e6, window=0.2)
    with _Server({path: BODY}, trickle={path}, trickle_s=0.02) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError) as e:
            dl.download_file(_hf("slow.pth", None), tmp_path, progress=False, retries=1,
                             retry_wait=0, limits=limits)
    assert "bytes/s, below the minimum" in str(e.value) and "resume" in str(e.value)
    assert not (tmp_path / "slow.pth").exists()


def test_an_overall_deadline_ends_a_slow_download(tmp_path, endpoints):
    path = HF_PATH + "slow.pth"
    limits = dl.Limits(timeout=5, deadline=0.3, min_rate=0, window=3600)
    with _Server({path: BODY}, trickle={path}, trickle_s=0.02) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="did not finish within"):
            dl.download_file(_hf("slow.pth", None), tmp_path, progress=False, limits=limits)
    assert not (tmp_path / "slow.pth").exists()


@pytest.mark.parametrize("err,expect", [(errno.ENOSPC, "the disk is full"),
                                        (errno.EACCES, "may not write there")])
def test_a_local_write_error_names_the_local_cause(tmp_path, endpoints, monkeypatch, err, expect):
    class Refusing(io.BytesIO):
        def write(self, data):
            raise OSError(err, os.strerror(err))

    monkeypatch.setattr(dl, "open", lambda *a, **k: Refusing(), raising=False)
    with _Server({HF_PATH + "big.pth": BODY}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError) as e:
            dl.download_file(_hf("big.pth", None), tmp_path, progress=False)
    msg = str(e.value)
    assert expect in msg and os.strerror(err) in msg and "internet" not in msg
    assert not (tmp_path / "big.pth").exists()


def test_a_folder_where_the_file_belongs_is_named_before_any_download(tmp_path, endpoints):
    (tmp_path / "net.pth").mkdir()
    with _Server({HF_PATH + "net.pth": BODY}) as srv:
        endpoints(srv)
        with pytest.raises(WeightsError, match="net.pth is a directory, expected a file; remove "
                                               "or rename it"):
            dl.download_file(_hf("net.pth", None), tmp_path, progress=False)
    assert srv.requests == []


# --------------------------------------------------------------------------- smoke-test sets
def test_download_replaces_a_smoke_set_instead_of_calling_it_complete(tmp_path, endpoints,
                                                                      monkeypatch):
    import gzip
    from dataclasses import replace

    from nag_core.smoke import MARKER, smoke_files, write_smoke_models
    from nag_core.weights import required_files

    written = write_smoke_models(tmp_path)
    assert set(written) == smoke_files(tmp_path) and len(written) >= 6
    user_file = tmp_path / "my_notes.txt"
    user_file.write_text("mine")
    # The real files, as a server would give them (no md5: these bodies are not the release's)
    remotes = [replace(r, md5=None) for r in required_files("small_16k")]
    monkeypatch.setattr(dl, "required_files", lambda variant: remotes)
    bodies = {}
    for i, r in enumerate(remotes + [dl.VOCAB_FILE]):
        url_path = r.url.split("://", 1)[1].split("/", 1)[1]
        bodies["/" + url_path] = (gzip.compress(b"#version: 0.2\na b\n")
                                  if r.relpath.endswith(".gz") else _checkpoint_bytes(10 + i))
    with _Server(bodies) as srv:
        endpoints(srv)
        files = dl.ensure_model_files("small_16k", tmp_path, offline=False, progress=False,
                                      replace_smoke=True)
    assert len(srv.requests) == len(bodies)  # every smoke file was fetched, none kept
    for path in written:
        assert path.read_bytes() == bodies["/" + next(
            (r.url.split("://", 1)[1].split("/", 1)[1] for r in remotes + [dl.VOCAB_FILE]
             if tmp_path / r.relpath == path))]
    assert smoke_files(tmp_path) == set() and not (tmp_path / MARKER).exists()
    assert user_file.read_text() == "mine"  # a file the marker does not list is never touched
    assert files.network == tmp_path / "mmaudio_small_16k.pth"


def test_without_replace_smoke_a_smoke_set_is_left_alone(tmp_path, endpoints):
    from nag_core.smoke import smoke_files, write_smoke_models
    written = write_smoke_models(tmp_path)
    with _Server({}) as srv:
        endpoints(srv)
        dl.ensure_model_files("small_16k", tmp_path, offline=False, progress=False)
    assert srv.requests == [] and smoke_files(tmp_path) == set(written)


def test_a_smoke_file_replaced_by_the_user_is_no_longer_smoke(tmp_path):
    from nag_core.smoke import is_smoke_file, smoke_files, write_smoke_models
    written = write_smoke_models(tmp_path)
    net = tmp_path / "mmaudio_small_16k.pth"
    assert is_smoke_file(net)
    net.write_bytes(_checkpoint_bytes(5))  # the user put the real one there
    assert not is_smoke_file(net) and net not in smoke_files(tmp_path)
    assert len(smoke_files(tmp_path)) == len(written) - 1
