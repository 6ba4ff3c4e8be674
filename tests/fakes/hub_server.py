"""A loopback fake of the Hugging Face Hub's upload API, as huggingface_hub calls it (hf_api.py whoami /
create_repo / create_commit, _commit_api.py _fetch_upload_modes / _send_commit, lfs.py post_lfs_batch_info /
lfs_upload). Point huggingface_hub at it with HF_ENDPOINT.

Modelled:
- `GET /api/whoami-v2` → 200 {"type": "user", "name", "auth": {"accessToken": {"role"}}}; a bad token → 401
  {"error": "Invalid credentials in Authorization header"} (what hf_api._inner_whoami turns into "Invalid user
  token");
- `POST /api/validate-yaml` {"content", "repoType"} (create_commit sends README.md's header first) → 200
  {"errors": [], "warnings": []}, or 400 with the errors;
- `POST /api/repos/create` {"name", "organization", "visibility" (2.x) or "private" (0.3x)} → 200 {"url"}; 409 when it exists (create_repo's
  exist_ok swallows 409); another namespace → 403;
- `POST /api/models/{repo}/preupload/{rev}` {"files": [{"path", "sample", "size"}]} → {"files": [{"path",
  "uploadMode": "lfs"|"regular", "shouldIgnore", "oid"}]}: binary files (.safetensors, .png) go as LFS;
- `POST /{repo}.git/info/lfs/objects/batch` {"operation": "upload", "transfers", "objects": [{"oid", "size"}],
  "hash_algo": "sha256"} → {"transfer": "basic", "objects": [{"oid", "size", "actions": {"upload": {"href"},
  "verify": {"href"}}}]}; an object already stored gets no actions (the client then skips it);
- `PUT <href>`: the bytes, checked against the oid (sha256); `POST <verify href>` {"oid", "size"};
- `POST /api/models/{repo}/commit/{rev}` (application/x-ndjson: header, file (base64), lfsFile (oid)) →
  {"commitOid", "commitUrl"}; an lfsFile never uploaded → 422; 404 with X-Error-Code RepoNotFound for no repo.
- `GET /api/models/{repo}[/revision/{rev}]?expand=xetEnabled` → {"id", "private", "sha", "xetEnabled": false}.

Xet or LFS. The fake is a plain LFS repository, as the Hub serves one whose storage is not Xet, and says so at every
point where a huggingface_hub version decides (read from each version's source):
- 0.30-0.35 (0.35.3 read): after preupload, `HfApi.preupload_lfs_files` asks `repo_info(expand="xetEnabled")`
  and takes Xet only when `xetEnabled` is true — here it is false;
- 1.x (1.3.0 read): `_commit_api._upload_files` offers transfers ["basic", "multipart", "xet"] to the LFS batch
  call when hf_xet is installed and goes to Xet only when the answer's `transfer` is "xet" — here the answer is
  "basic" whatever is offered (`transfers_offered` records the offer);
- 2.x (2.4.0, the version this suite installs) no longer asks the server: `_commit_api._upload_files` uploads
  through Xet whenever `utils._runtime.is_xet_available()` (hf_xet importable, a hard dependency on x86_64/arm64,
  and HF_HUB_DISABLE_XET unset), offering the batch only ["basic", "multipart"] on its fallback. No answer can
  steer it, so for 2.x the tests set HF_HUB_DISABLE_XET, the client's own switch, to take this LFS path. Xet's own
  protocol (xet-write-token, the CAS, xorbs and shards) is not modelled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field

from fakes._server import FakeAPI, Reply, Request

VALID_TOKEN = "hf_fakeWriteToken0123456789abcdefgh"
USER = "tester"
LFS_SUFFIXES = (".safetensors", ".png", ".jpg", ".bin", ".ckpt")


@dataclass
class FakeRepo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)


class FakeHub(FakeAPI):
    def __init__(self) -> None:
        super().__init__()
        self.repos: dict[str, FakeRepo] = {}
        self.lfs: dict[str, bytes] = {}  # oid → bytes
        self.validated: list[dict] = []  # model-card YAML headers that passed /api/validate-yaml
        self.transfers_offered: list[list[str]] = []  # each LFS batch call's `transfers` (a 1.x client offers xet)

    def default_error(self, status: int) -> Reply:
        return Reply(status, {"error": f"injected {status}"})

    def _authorized(self, req: Request) -> bool:
        return req.token() == VALID_TOKEN

    def route(self, req: Request) -> Reply:
        path = req.path
        if path.startswith("/lfs-upload/") and req.method == "PUT":  # a presigned URL: no Authorization needed
            return self._lfs_put(path.rsplit("/", 1)[1], req.raw)
        if not self._authorized(req):
            return Reply(401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/whoami-v2" and req.method == "GET":
            return Reply(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})
        if path == "/api/validate-yaml" and req.method == "POST":
            return self._validate_yaml(req.json())
        if path == "/api/repos/create" and req.method == "POST":
            return self._create(req.json())
        if req.method == "GET" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)):
            return self._repo_info(m[1])
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path):
            return self._preupload(m[1], req.json())
        if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            return self._batch(m[1], req.json())
        if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/verify", path):
            body = req.json()
            ok = body.get("oid") in self.lfs and len(self.lfs[body["oid"]]) == body.get("size")
            return Reply(200 if ok else 404, {} if ok else {"error": "Object not found"})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path):
            return self._commit(m[1], req)
        return Reply(404, {"error": f"no route {req.method} {path}"})

    def _create(self, body: dict) -> Reply:
        namespace = body.get("organization") or USER
        if namespace != USER:
            return Reply(
                403, {"error": f'You don\'t have the rights to create a model under the namespace "{namespace}"'}
            )
        repo_id = f"{namespace}/{body['name']}"
        if repo_id in self.repos:
            return Reply(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
        # 2.x sends "visibility"; 0.3x send "private": true|false (hf_api.create_repo); the Hub takes either.
        private = body["private"] if "private" in body else body.get("visibility", "public") == "private"
        self.repos[repo_id] = FakeRepo(repo_id, private=bool(private))
        return Reply(
            200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()}
        )

    def _validate_yaml(self, body: dict) -> Reply:
        """hf_api._validate_yaml: the README's YAML header; 400 {"errors": [{"message"}]} when it is wrong."""
        import yaml

        content = body.get("content", "")
        header = content.split("---\n")[1] if content.startswith("---\n") and content.count("---\n") >= 2 else ""
        try:
            meta = yaml.safe_load(header) or {}
        except yaml.YAMLError as exc:
            return Reply(400, {"errors": [{"message": f"YAML: {exc}"}], "warnings": []})
        errors = [
            {"message": f'"widget[{i}]" must have text and output.url'}
            for i, w in enumerate(meta.get("widget", []))
            if not isinstance(w, dict) or "text" not in w or "url" not in (w.get("output") or {})
        ]
        if errors:
            return Reply(400, {"errors": errors, "warnings": []})
        self.validated.append(meta)
        return Reply(200, {"errors": [], "warnings": []})

    def _missing(self, repo_id: str) -> Reply | None:
        if repo_id not in self.repos:
            return Reply(404, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        return None

    def _preupload(self, repo_id: str, body: dict) -> Reply:
        if (missing := self._missing(repo_id)) is not None:
            return missing
        files = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000 else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in body["files"]
        ]
        return Reply(200, {"files": files, "commitOid": "0" * 40})

    def _repo_info(self, repo_id: str) -> Reply:
        """hf_api.model_info (repo_info): a plain LFS repository says `xetEnabled: false` (0.3x clients read it)."""
        if (missing := self._missing(repo_id)) is not None:
            return missing
        repo = self.repos[repo_id]
        sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
        return Reply(200, {"id": repo_id, "private": repo.private, "sha": sha, "xetEnabled": False})

    def _batch(self, repo_id: str, body: dict) -> Reply:
        if (missing := self._missing(repo_id)) is not None:
            return missing
        assert body["operation"] == "upload" and body.get("hash_algo") == "sha256" and "basic" in body["transfers"]
        self.transfers_offered.append(list(body["transfers"]))
        # "basic" even when "xet" is offered: the answer for a repository whose storage is LFS (1.x reads it).
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(entry)
        return Reply(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, data: bytes) -> Reply:
        if hashlib.sha256(data).hexdigest() != oid:
            return Reply(400, "sha256 mismatch", content_type="text/plain")
        self.lfs[oid] = data
        return Reply(200, None)

    def _commit(self, repo_id: str, req: Request) -> Reply:
        if (missing := self._missing(repo_id)) is not None:
            return missing
        if not req.headers.get("content-type", "").startswith("application/x-ndjson"):
            return Reply(400, {"error": "expected application/x-ndjson"})
        lines = [json.loads(line) for line in req.raw.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return Reply(400, {"error": "the first line must be the header"})
        repo = self.repos[repo_id]
        staged: dict[str, bytes] = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return Reply(422, {"error": f"LFS file {value['path']} was not uploaded"})
                staged[value["path"]] = self.lfs[value["oid"]]
        repo.files.update(staged)
        oid = hashlib.sha1(req.raw).hexdigest()
        repo.commits.append({"summary": lines[0]["value"]["summary"], "oid": oid, "files": sorted(staged)})
        return Reply(200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}"})


def point_the_client_at(fake: FakeHub, monkeypatch) -> None:
    """huggingface_hub in this process talks to `fake`: HF_ENDPOINT (read by lorarun at each call) and the client's
    ENDPOINT constant (0.3x read it at import, and CommitInfo parses the commit URL against it); the suite's
    HF_HUB_OFFLINE lifted for this loopback server. huggingface_hub 2.x takes Xet without asking the server (see
    the module's docstring): its own HF_HUB_DISABLE_XET sends it down the LFS path this fake models. Older clients
    ask, and the fake's answers send them to LFS by themselves, so they are left as they are."""
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if int(huggingface_hub.__version__.split(".")[0]) >= 2:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
