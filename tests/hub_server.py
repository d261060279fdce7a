"""A local stand-in for the Hugging Face Hub (and ModelScope) download routes, for end-to-end download tests.

It speaks the part of the Hub protocol that `huggingface_hub` uses to download a model, as read from its source
(hf_api.py `model_info` and `list_repo_tree`, file_download.py `get_hf_file_metadata` and `http_get`):

- `GET /api/models/{repo}[/revision/{rev}]`: repository info, JSON with `sha` (the commit) and `siblings`
  (with `size`, `blobId` and `lfs` when asked `?blobs=True`);
- `GET /api/models/{repo}/tree/{rev}`: the file listing snapshot_download works from;
- `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit` and `ETag` (the git blob id) on every file; a
  weights file is stored in LFS, so it answers `302` to another host (the CDN, here `localhost` instead of
  `127.0.0.1`) with `X-Linked-Etag` (its sha256) and `X-Linked-Size`, as huggingface.co does;
- errors as the Hub sends them: `404` with `X-Error-Code: RepoNotFound`, `RevisionNotFound` or `EntryNotFound`;
  `401` (no token) or `403` (a token without access) with `X-Error-Code: GatedRepo` for a gated repository.

And the part of ModelScope's API that `modelscope.snapshot_download` uses (modelscope_hub `_legacy_api.py`):
`GET /api/v1/models/{repo}/repo/files?Revision=...` (the listing, with each file's Sha256) and
`GET /api/v1/models/{repo}/repo?Revision=...&FilePath=...` (a file).

`mode` makes requests fail the way a broken server or network does: "500" answers 500 Internal Server Error;
"hang" accepts the connection, reads the request and never answers (until the server stops); "stall" answers
the repository info and then hangs like "hang" (a mirror whose file storage has gone silent).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
API_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
API_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")
MS_FILES = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo/files$")
MS_FILE = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo$")


def git_blob_id(content: bytes) -> str:
    """The id git gives a file's content: what the Hub sends as the ETag of a file kept in git."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> file name -> content
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    gated: bool = False

    def commit_of(self, revision: str) -> str | None:
        """A branch, a tag, a full commit sha or its first 7+ characters, as the Hub accepts them."""
        if revision in self.refs:
            return self.refs[revision]
        matches = [sha for sha in self.commits if len(revision) >= 7 and sha.startswith(revision)]
        return matches[0] if len(matches) == 1 else None


class HubServer:
    """A Hub on 127.0.0.1 with a free port, served by threads; `url` is what HF_ENDPOINT is set to.

    `requests` records every (method, path) received, so a test can tell a download from a cache hit."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []
        self.answers: list[tuple[str, int]] = []  # (path, status) of every response sent
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, the "CDN"
        self.shas: dict[str, str] = {}  # the commits a test made, by the names it gave them
        self._release = threading.Event()  # set at stop: hanging requests end
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_commit(self, repo_id: str, directory: Path, refs: tuple[str, ...] = ("main",),
                   gated: bool = False) -> str:
        """Commit the files of `directory` to `repo_id` and point `refs` at the commit; returns its sha."""
        files = {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir()) if path.is_file()}
        repo = self.repos.setdefault(repo_id, Repo())
        repo.gated = repo.gated or gated
        digest = hashlib.sha1(repo_id.encode())
        for name, content in files.items():
            digest.update(name.encode() + b"\0" + git_blob_id(content).encode())
        digest.update(str(len(repo.commits)).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        for ref in refs:
            repo.refs[ref] = sha
        for name, content in files.items():
            if name.endswith(LFS_SUFFIXES):
                self.blobs[hashlib.sha256(content).hexdigest()] = content
        return sha

    def hub_requests(self) -> list[tuple[str, str]]:
        """Requests to the Hub's routes (not counting ModelScope's)."""
        return [(method, path) for method, path in self.requests if not path.startswith("/api/v1/")]


def file_entry(name: str, content: bytes) -> dict:
    """A file as the Hub lists it: git blob id and size, and the LFS pointer's sha256 for a weights file."""
    entry = {"type": "file", "path": name, "size": len(content), "oid": git_blob_id(content)}
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        server_state = hub

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    server_state: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the test output stays readable; `requests` records what came in

    def send_response(self, code, message=None):
        self.server_state.answers.append((self.path, code))
        super().send_response(code, message)

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    # -- dispatch ---------------------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        hub = self.server_state
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        hub.requests.append((method, self.path))
        if hub.mode == "hang" or hub.mode == "stall" and not API_INFO.match(path):
            hub._release.wait()  # the connection stays open and silent
            self.close_connection = True
            return
        if hub.mode == "500":
            return self._error(500, None, "Internal Error")
        for pattern, handler in ((API_TREE, self._tree), (API_INFO, self._info), (RESOLVE, self._resolve),
                                 (CDN, self._cdn), (MS_FILES, self._ms_files), (MS_FILE, self._ms_file)):
            match = pattern.match(path)
            if match:
                return handler(method, query, **match.groupdict())
        self._error(404, None, "Not Found")

    # -- Hugging Face Hub routes ------------------------------------------------------------------------------

    def _commit(self, repo_id: str, revision: str | None) -> tuple[Repo, str, dict[str, bytes]] | None:
        """The repository, commit and files of a request, or None once the error has been sent."""
        repo = self.server_state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        sha = repo.commit_of(revision or "main")
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + str(revision))
            return None
        return repo, sha, repo.commits[sha]

    def _info(self, method, query, repo, rev=None):
        found = self._commit(repo, rev)
        if found is None:
            return
        state, sha, files = found
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for name, content in files.items():
            entry = file_entry(name, content)
            sibling = {"rfilename": name}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
            siblings.append(sibling)
        self._json(method, {"_id": sha[:24], "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha,
                            "private": False, "gated": "manual" if state.gated else False, "disabled": False,
                            "downloads": 0, "likes": 0, "tags": ["bert"], "library_name": "transformers",
                            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                            "siblings": siblings})

    def _tree(self, method, query, repo, rev, path=None):
        found = self._commit(repo, rev)
        if found is None:
            return
        _, _, files = found
        self._json(method, [file_entry(name, content) for name, content in files.items()])

    def _resolve(self, method, query, repo, rev, path):
        found = self._commit(repo, rev)
        if found is None:
            return
        state, sha, files = found
        if state.gated:
            has_token = "authorization" in {key.lower() for key in self.headers}
            status = 403 if has_token else 401
            return self._error(status, "GatedRepo", f"Access to model {repo} is restricted.", commit=sha)
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", commit=sha)
        content = files[path]
        entry = file_entry(path, content)
        if "lfs" in entry:  # to the CDN: another host, so the client stops here and reads the linked headers
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server_state.port}/cdn/{entry['lfs']['oid']}")
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{entry["oid"]}"')
            self.send_header("X-Linked-Etag", f'"{entry["lfs"]["oid"]}"')
            self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._bytes(method, content, {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'})

    def _cdn(self, method, query, sha256):
        content = self.server_state.blobs.get(sha256)
        if content is None:
            return self._error(404, None, "NoSuchKey")
        self._bytes(method, content, {"ETag": f'"{sha256}"'})

    # -- ModelScope routes ------------------------------------------------------------------------------------

    def _ms_commit(self, repo_id: str, query) -> dict[str, bytes] | None:
        repo = self.server_state.repos.get(repo_id)
        sha = repo.commit_of(query.get("Revision", ["master"])[0]) if repo else None
        if sha is None:
            body = {"Code": 10010205001, "Message": f"model {repo_id} not found", "Success": False}
            self._json("GET", body, status=404)
            return None
        return repo.commits[sha]

    def _ms_files(self, method, query, repo):
        files = self._ms_commit(repo, query)
        if files is None:
            return
        listing = [{"Name": name, "Path": name, "Type": "blob", "Size": len(content),
                    "Sha256": hashlib.sha256(content).hexdigest()} for name, content in files.items()]
        self._json(method, {"Code": 200, "Data": {"Files": listing}, "Message": "success", "Success": True})

    def _ms_file(self, method, query, repo):
        files = self._ms_commit(repo, query)
        if files is None:
            return
        name = query.get("FilePath", [""])[0]
        if name not in files:
            return self._json(method, {"Code": 404, "Message": f"{name} not found", "Success": False}, status=404)
        self._bytes(method, files[name], {})

    # -- responses --------------------------------------------------------------------------------------------

    def _bytes(self, method: str, content: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(content)

    def _json(self, method: str, document, status: int = 200) -> None:
        self._bytes(method, json.dumps(document).encode(), {"Content-Type": "application/json"}, status)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        body = json.dumps({"error": message}).encode()
        self._bytes(self.command, body, {**headers, "Content-Type": "application/json"}, status)
