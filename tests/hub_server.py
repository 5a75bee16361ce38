"""A mock Hugging Face Hub on 127.0.0.1 that huggingface_hub's own client talks to.

It serves the endpoints that huggingface_hub 2.4 calls in `snapshot_download`,
`hf_hub_download`, `HfApi.resolve_revision`, `create_repo`, `create_branch` and
`upload_folder`:

    GET  /api/models/{repo}[/revision/{rev}]      repo info with the commit sha
    GET  /api/models/{repo}/tree/{rev}             recursive file listing
    HEAD /{repo}/resolve/{rev}/{path}              X-Repo-Commit, ETag, Content-Length
    GET  /{repo}/resolve/{rev}/{path}              file bytes
    POST /api/repos/create                         409 when the repo exists
    POST /api/validate-yaml                        parses the README front matter
    POST /api/models/{repo}/preupload/{rev}        every file is uploaded as "regular"
    POST /api/models/{repo}/commit/{rev}           ndjson commit, base64 file contents
    POST /api/models/{repo}/branch/{branch}        409 when the branch exists

Errors carry the status codes and X-Error-Code headers that
`huggingface_hub.utils.hf_raise_for_status` maps to RepositoryNotFoundError
(RepoNotFound), RevisionNotFoundError (RevisionNotFound), GatedRepoError
(GatedRepo) and RemoteEntryNotFoundError (EntryNotFound). As on the real Hub, a
private repo looks missing to anyone but its owner, and an unauthenticated
request for a missing repo gets 401, not 404.

`hub_endpoint` is a pytest fixture: it points huggingface_hub.constants at the
server, turns offline mode off for the test, and restores both afterwards. All
state is in memory, and `loopback_only` makes any non-loopback connection fail.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
REPO = r"(?P<repo>[^/]+/[^/]+)"
INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


def git_blob_sha(content: bytes) -> str:
    """The git object id of a file, which the Hub uses as the ETag of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """Read every file under `folder`, keyed by its '/'-separated relative path."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


@dataclass
class MockRepo:
    owner: str
    private: bool = False
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # users who accepted a gated repo's conditions
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files


class HubError(Exception):
    """An HTTP error response of the mock Hub."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None, commit: str | None = None,
                 **body: str):
        super().__init__(status, code, message)
        self.status, self.code, self.message, self.commit = status, code, message, commit
        self.body = {"error": message or code, **body}


class MockHub:
    """In-memory repos plus the HTTP server that exposes them."""

    def __init__(self) -> None:
        self.repos: dict[str, MockRepo] = {}
        self.tokens: dict[str, str] = {}  # token -> user name
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "MockHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # Repository state, also used by tests to seed repos.

    def add_user(self, name: str, token: str) -> None:
        self.tokens[token] = name

    def create_repo(self, repo_id: str, owner: str | None = None, private: bool = False, gated: bool = False) -> str:
        """Create a repo whose main branch has one initial commit, and return that commit's sha."""
        with self._lock:
            self.repos[repo_id] = MockRepo(owner=owner or repo_id.split("/")[0], private=private, gated=gated)
        return self.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                           message="initial commit", replace=True)

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", message: str = "update",
               replace: bool = False, deleted: tuple[str, ...] = ()) -> str:
        """Commit `files` on `branch` (on top of its head unless `replace`); return the new sha."""
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo.refs.get(branch)
            tree = {} if replace or parent is None else dict(repo.commits[parent])
            for path in deleted:
                tree.pop(path, None)
            tree.update(files)
            self._counter += 1
            digest = hashlib.sha1(f"{repo_id}\n{parent}\n{message}\n{self._counter}".encode())
            for path in sorted(tree):
                digest.update(f"{path}:{git_blob_sha(tree[path])}\n".encode())
            sha = digest.hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            return sha

    def tag(self, repo_id: str, tag: str, sha: str) -> None:
        self.repos[repo_id].refs[tag] = sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs.get(revision, revision)]

    # Request handling.

    def user_of(self, authorization: str | None) -> str | None:
        """Return the user a bearer token belongs to, None without a token; raise for an unknown token."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, message=INVALID_TOKEN_MESSAGE)
        return self.tokens[token]

    def readable_repo(self, repo_id: str, user: str | None) -> MockRepo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            # The Hub does not reveal private repos: they look missing. Anonymous requests get 401.
            raise HubError(404 if user else 401, "RepoNotFound", "Repository not found")
        return repo

    def writable_repo(self, repo_id: str, user: str | None) -> MockRepo:
        if user is None:
            raise HubError(401, message="You must be authenticated to write")
        repo = self.readable_repo(repo_id, user)
        if repo.owner != user:
            raise HubError(403, message=f"You don't have the rights to write to {repo_id}")
        return repo

    def resolve(self, repo: MockRepo, revision: str) -> str:
        revision = unquote(revision)
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


def _handler_for(hub: MockHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((method, path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            try:
                user = hub.user_of(self.headers.get("Authorization"))
                for route_method, pattern, handler in ROUTES:
                    match = re.fullmatch(pattern, path)
                    if match and route_method == method:
                        status, headers, payload = handler(hub, user, body, **match.groupdict())
                        break
                else:
                    raise HubError(404, message=f"no mock route for {method} {path}")
            except HubError as err:
                headers = {}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.message:
                    headers["X-Error-Message"] = err.message
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
                status, payload = err.status, json.dumps(err.body).encode()
            self._respond(method, status, headers, payload)

        def _respond(self, method: str, status: int, headers: dict[str, str], payload: bytes | dict | list) -> None:
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode()
                headers.setdefault("Content-Type", "application/json")
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

    return Handler


# Route handlers: (hub, user, body, **path groups) -> (status, headers, payload).


def repo_info(hub: MockHub, user, body, repo: str, revision: str = "main"):
    found = hub.readable_repo(repo, user)
    sha = hub.resolve(found, revision or "main")
    siblings = [{"rfilename": path} for path in sorted(found.commits[sha])]
    return 200, {}, {"id": repo, "sha": sha, "private": found.private, "gated": found.gated, "siblings": siblings}


def repo_tree(hub: MockHub, user, body, repo: str, revision: str, path: str | None = None):
    found = hub.readable_repo(repo, user)
    files = found.commits[hub.resolve(found, revision)]
    prefix = f"{path}/" if path else ""
    entries = [
        {"type": "file", "path": name, "size": len(content), "oid": git_blob_sha(content)}
        for name, content in sorted(files.items())
        if name.startswith(prefix)
    ]
    return 200, {}, entries


def resolve_file(hub: MockHub, user, body, repo: str, revision: str, path: str):
    found = hub.readable_repo(repo, user)
    sha = hub.resolve(found, revision)
    if found.gated and user not in found.granted:
        raise HubError(403 if user else 401, "GatedRepo", f"Access to model {repo} is restricted")
    content = found.commits[sha].get(unquote(path))
    if content is None:
        raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}", commit=sha)
    return 200, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"'}, content


def create_repo(hub: MockHub, user, body):
    request = json.loads(body)
    if user is None:
        raise HubError(401, message="You must be authenticated to create a repo")
    namespace = request.get("organization") or user
    if namespace != user:
        raise HubError(403, message=f"You don't have the rights to create a repo under {namespace}")
    repo_id = f"{namespace}/{request['name']}"
    if repo_id in hub.repos:  # the Hub's 409 body also gives the url, which create_repo(exist_ok=True) reads
        raise HubError(409, message="You already created this model repo", url=f"{hub.url}/{repo_id}")
    hub.create_repo(repo_id, owner=user, private=request.get("visibility") == "private" or bool(request.get("private")))
    return 200, {}, {"url": f"{hub.url}/{repo_id}", "name": repo_id}


def validate_yaml(hub: MockHub, user, body):
    content = json.loads(body)["content"]
    match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
    if match is None:
        return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return 400, {}, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}
    if not isinstance(metadata, dict):
        return 400, {}, {"errors": [{"message": "the YAML metadata is not a mapping"}], "warnings": []}
    return 200, {}, {"errors": [], "warnings": []}


def preupload(hub: MockHub, user, body, repo: str, revision: str):
    found = hub.writable_repo(repo, user)
    existing = found.commits[hub.resolve(found, revision)]
    files = [
        {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
         "oid": git_blob_sha(existing[item["path"]]) if item["path"] in existing else None}
        for item in json.loads(body)["files"]
    ]
    return 200, {}, {"files": files}


def commit(hub: MockHub, user, body, repo: str, revision: str):
    hub.writable_repo(repo, user)
    branch = unquote(revision)
    hub.resolve(hub.repos[repo], branch)  # the branch must exist
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    header = next(line["value"] for line in lines if line["key"] == "header")
    files, deleted = {}, []
    for line in lines:
        if line["key"] == "file":
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        elif line["key"] == "deletedFile":
            deleted.append(line["value"]["path"])
        elif line["key"] != "header":
            raise HubError(400, message=f"the mock Hub does not support {line['key']!r} commit operations")
    sha = hub.commit(repo, files, branch=branch, message=header["summary"], deleted=tuple(deleted))
    return 200, {}, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo}/commit/{sha}"}


def create_branch(hub: MockHub, user, body, repo: str, branch: str):
    found = hub.writable_repo(repo, user)
    branch = unquote(branch)
    if branch in found.refs:
        raise HubError(409, message=f"Reference {branch} already exists")
    start = json.loads(body or b"{}").get("startingPoint") or "main"
    found.refs[branch] = hub.resolve(found, start)
    return 200, {}, {}


ROUTES = [
    ("GET", rf"/api/models/{REPO}", repo_info),
    ("GET", rf"/api/models/{REPO}/revision/(?P<revision>[^/]+)", repo_info),
    ("GET", rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", repo_tree),
    ("HEAD", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", resolve_file),
    ("GET", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", resolve_file),
    ("POST", r"/api/repos/create", create_repo),
    ("POST", r"/api/validate-yaml", validate_yaml),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)", preupload),
    ("POST", rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)", commit),
    ("POST", rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)", create_branch),
]


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch):
    """Make name lookups and TCP connections to anything but loopback raise, so no test can reach a network."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
            raise OSError(f"test guard: lookup of non-loopback host {host!r} blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"test guard: connection to non-loopback address {address!r} blocked")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def hub_endpoint(monkeypatch, loopback_only):
    """Start a MockHub and point huggingface_hub at it, with offline mode off, for one test.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, into
    huggingface_hub.constants, and its functions read them from there on each
    call. So the test patches those constants; setting the environment
    variables after import would change nothing. monkeypatch restores them,
    which turns offline mode back on for the next test.
    """
    from huggingface_hub import constants, hf_api

    hub = MockHub().start()
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    # Shared HfApi instances keep the endpoint they were built with: huggingface_hub's module-level
    # one, and transformers' (built on first use, so it may hold the endpoint of an earlier test).
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    if "transformers.utils.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield hub
    finally:
        hub.stop()
