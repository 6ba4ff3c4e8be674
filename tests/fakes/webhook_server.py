"""A webhook receiver on 127.0.0.1 that records what lorarun posts: plain JSON, or Discord's execute-webhook shape
(JSON, or multipart/form-data with `payload_json` and `files[0]`; Discord answers 204 without `?wait=true`:
https://discord.com/developers/docs/resources/webhook#execute-webhook)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from fakes._server import FakeAPI, Reply, Request


@dataclass(frozen=True)
class Received:
    payload: dict
    files: dict[str, tuple[str, bytes]]  # form field → (file name, bytes)
    raw: bytes


def parse_post(req: Request) -> Received:
    ctype = req.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.raw)
        payload, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True)
            if name == "payload_json":
                payload = json.loads(data)
            else:
                files[name] = (part.get_filename(), data)
        return Received(payload, files, req.raw)
    return Received(json.loads(req.raw), {}, req.raw)


class FakeWebhook(FakeAPI):
    def __init__(self, status: int = 204):
        super().__init__()
        self.status = status
        self.received: list[Received] = []

    def route(self, req: Request) -> Reply:
        if req.method != "POST":
            return Reply(405, {"message": "405: Method Not Allowed", "code": 0})
        self.received.append(parse_post(req))
        return Reply(self.status, None if self.status == 204 else {"ok": self.status < 400})
