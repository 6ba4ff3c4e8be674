"""Tell a webhook how a job goes: started, each phase, each checkpoint home (with its grid image), failure, the
end with its cost. `notify: {webhook: URL}` in the job file; Discord's payload for Discord URLs, plain JSON
elsewhere.

Rules this module keeps:
- a webhook never slows or fails the job: posts go out from one worker thread (so they stay in order), with a
  short timeout; a failure is said once, in one line naming only the host (a Discord URL carries its token);
- no secret in a payload: payloads are built from the job's public facts only, and every string is scrubbed of
  the values of the environment's keys and tokens before it leaves (an error message may quote one).

Discord's webhook API (https://discord.com/developers/docs/resources/webhook#execute-webhook): JSON `content`
(≤ 2000 characters) and `embeds`; a file goes as multipart/form-data with the JSON in `payload_json` and the
file in `files[0]`, which an embed shows through `attachment://<name>`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from lorarun.runner.console import err_console, money
from lorarun.runner.job.hosted_spec import NotifyConfig

POST_TIMEOUT = 10.0  # seconds per post: a slow webhook must not hold the final flush for long
FLUSH_TIMEOUT = 30.0  # at the end of the job: how long the last events may take to go out
IMAGE_LIMIT = 8 * 1024 * 1024  # Discord's attachment limit for a webhook without boosts (8 MiB)
SECRET_NAME_ENDINGS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASS")
# The controller's phases with words a person reads in a chat channel.
PHASE_WORDS = {
    "provision": "renting a machine",
    "wait": "waiting for the machine to boot",
    "upload": "uploading the dataset",
    "run": "starting the trainer",
    "monitor": "training",
    "finish": "bringing the outputs home",
    "teardown": "destroying the instance",
}


def environment_secrets(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Values of variables named like credentials (VAST_API_KEY, RUNPOD_API_KEY, HF_TOKEN …), longest first so a
    secret containing another is replaced whole."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if k.upper().endswith(SECRET_NAME_ENDINGS) and len(v) >= 8}
    return tuple(sorted(found, key=len, reverse=True))


def scrub(value, secrets: tuple[str, ...]):
    """`value` with every secret replaced by `***`, through dicts and lists."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes


@dataclass(frozen=True)
class Post:
    payload: dict  # plain-JSON event (the Discord shape is made from it when posting)
    attachment: Attachment | None = None


class Webhook:
    """One webhook URL and its worker thread. `send()` never blocks on the network and never raises."""

    def __init__(self, config: NotifyConfig, *, secrets: tuple[str, ...] = (), session: requests.Session | None = None):
        self.url = config.webhook or ""
        self.discord = config.discord
        self.secrets = tuple(s for s in (*secrets, self.url) if s)
        self.session = session or requests.Session()
        self.failures = 0
        self._queue: queue.Queue[Post | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="lorarun-notify", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "the webhook"

    def send(self, post: Post) -> None:
        self._queue.put(Post(scrub(post.payload, self.secrets), post.attachment))

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Let the queued events go out (bounded), then stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (post := self._queue.get()) is not None:
            try:
                response = self._post(post)
                if response.status_code == 429:  # Discord's rate limit: wait as told once, then retry once
                    time.sleep(min(float(_retry_after(response)), 5.0))
                    response = self._post(post)
                if response.status_code >= 400:
                    self._failed(f"HTTP {response.status_code}")
            except requests.RequestException as exc:
                self._failed(type(exc).__name__)

    def _post(self, post: Post) -> requests.Response:
        body = discord_payload(post.payload, post.attachment) if self.discord else post.payload
        if post.attachment is None:
            return self.session.post(self.url, json=body, timeout=POST_TIMEOUT)
        if self.discord:
            files = {"files[0]": (post.attachment.name, post.attachment.data, "image/png")}
            return self.session.post(
                self.url, data={"payload_json": json.dumps(body)}, files=files, timeout=POST_TIMEOUT
            )
        body = dict(body, image_base64=base64.b64encode(post.attachment.data).decode("ascii"))
        return self.session.post(self.url, json=body, timeout=POST_TIMEOUT)

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.failures == 1:  # once: a dead webhook must not flood the terminal
            err_console.print(
                f"[yellow]notify: the webhook at {self.host} did not take an event ({why}); the job goes on[/]",
                highlight=False,
            )


def _retry_after(response: requests.Response) -> float:
    try:
        return float(response.json().get("retry_after", 1.0))
    except (ValueError, AttributeError):
        return 1.0


def discord_payload(event: dict, attachment: Attachment | None) -> dict:
    """The plain event in Discord's shape: one line of `content`, details as embed fields."""
    kind = event["event"]
    title = {
        "started": "started",
        "phase": PHASE_WORDS.get(event.get("phase", ""), event.get("phase", "")),
        "checkpoint": f"checkpoint home: {event.get('file', '')}",
        "finished": "finished",
        "stopped": "stopped",
        "failed": "failed",
    }.get(kind, kind)
    content = f"**{event['job']}** ({event['job_id']}): {title}"
    if event.get("message"):
        content += f" — {event['message']}"
    if event.get("cost") is not None:
        content += f" (cost {money(event['cost'])})"
    embed_fields = [
        {"name": k.replace("_", " "), "value": str(v)[:1024], "inline": True}
        for k, v in event.items()
        if k in ("provider", "gpu", "predicted_cost", "cost", "sha256", "size_bytes", "hub_url") and v is not None
    ]
    payload: dict = {"username": "lorarun", "content": content[:2000], "allowed_mentions": {"parse": []}}
    if embed_fields or attachment:
        embed: dict = {"title": f"{event['job']}: {title}"[:256], "fields": embed_fields[:25]}
        if attachment:
            embed["image"] = {"url": f"attachment://{attachment.name}"}
        payload["embeds"] = [embed]
    return payload


def _epoch_of(rel: str, lora_name: str) -> str | None:
    """`name-000002.safetensors` → "000002" (an epoch checkpoint, as the engine names them); else None."""
    match = re.fullmatch(rf"{re.escape(lora_name)}-(\d{{6}})\.safetensors", Path(rel).name)
    return match[1] if match else None


def checkpoint_picture(out: Path, rel: str, lora_name: str) -> Path | None:
    """The picture that shows a checkpoint: its grid (the final LoRA's), else the first sample rendered at its
    epoch (`samples/<name>_e000002_00.png`, image/engine/sample.py), when home."""
    grid = out / f"{Path(rel).stem}_grid.png"
    if grid.is_file():
        return grid
    epoch = _epoch_of(rel, lora_name)
    sample = out / "samples" / f"{lora_name}_e{epoch}_00.png" if epoch else None
    return sample if sample is not None and sample.is_file() else None


def samples_expected(rel: str, lora_name: str, sample) -> bool:
    """Does the engine render samples after saving this epoch checkpoint (image/engine/train.py)?"""
    epoch = _epoch_of(rel, lora_name)
    every = getattr(sample, "every_n_epochs", None)
    return bool(epoch and every and getattr(sample, "prompts", ()) and int(epoch) % every == 0)


class JobNotifications:
    """The pipeline's one handle: events for each job of a batch, checkpoints announced once each."""

    def __init__(self, webhooks: dict[str, Webhook], names: dict[str, str], spent: Callable[[], float]):
        self.webhooks = webhooks  # job_id → webhook (jobs without `notify` have none)
        self.names = names
        self.spent = spent
        self._seq = 0
        self._announced: dict[str, set[str]] = {job_id: set() for job_id in webhooks}

    @classmethod
    def for_runs(cls, runs, spent: Callable[[], float]) -> JobNotifications:
        secrets = environment_secrets()
        webhooks = {
            r.state.job_id: Webhook(r.job.spec.notify, secrets=secrets) for r in runs if r.job.spec.notify.webhook
        }
        return cls(webhooks, {r.state.job_id: r.state.name for r in runs}, spent)

    def _send(self, job_id: str, kind: str, attachment: Attachment | None = None, **fields) -> None:
        hook = self.webhooks.get(job_id)
        if hook is None:
            return
        self._seq += 1
        payload = {
            "source": "lorarun",
            "event": kind,
            "seq": self._seq,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "job": self.names.get(job_id, job_id),
            "job_id": job_id,
            **{k: v for k, v in fields.items() if v is not None},
        }
        hook.send(Post(payload, attachment))

    def phase(self, run, phase: str, message: str, *, provider: str = "", gpu: str = "") -> None:
        """Every phase the job's state enters (the pipeline's `_advance`)."""
        job_id = run.state.job_id
        if phase == "provision":
            self._send(job_id, "started", provider=provider, gpu=gpu or None, predicted_cost=run.predicted_cost)
        if phase == "done":
            self._send(job_id, "finished", message=message or None, cost=round(self.spent(), 4))
        elif phase in ("stopped", "failed"):  # the end of a job stopped on purpose, or of one that failed: why
            self._send(job_id, phase, message=message or None, cost=round(self.spent(), 4))
        else:
            self._send(job_id, "phase", phase=phase, message=message or None)

    def outputs_home(self, run, pulled: dict[str, str], *, final: bool = False) -> None:
        """Each `.safetensors` that came home since the last call, once, with its picture: the strength × seed grid
        beside the final LoRA, an epoch checkpoint's first sample (`sample.every_n_epochs`). The final LoRA waits
        for `final` (after the last pull): its grid is drawn after it is saved; a checkpoint whose samples are
        still being rendered or pulled waits for them (or for `final`), and the ones after it wait too, in order."""
        job_id = run.state.job_id
        if job_id not in self.webhooks:
            return
        spec = run.job.spec
        out = Path(spec.output_dir)
        last = f"{spec.output.name}.safetensors"
        announced = self._announced[job_id]
        for rel, sha in sorted(pulled.items()):
            if not rel.endswith(".safetensors") or rel in announced or not (out / rel).is_file():
                continue
            if rel == last and not final:
                continue
            picture = checkpoint_picture(out, rel, spec.output.name)
            if picture is None and not final and samples_expected(rel, spec.output.name, spec.sample):
                break  # the engine renders them right after the save: announce the checkpoint with them
            announced.add(rel)
            attachment = None
            if picture is not None and picture.stat().st_size <= IMAGE_LIMIT:
                attachment = Attachment(picture.name, picture.read_bytes())
            self._send(
                job_id,
                "checkpoint",
                attachment,
                file=rel,
                size_bytes=(out / rel).stat().st_size,
                sha256=sha,
                image=attachment.name if attachment else None,  # the picture posted with it (plain JSON: base64)
                grid=attachment.name if attachment and attachment.name.endswith("_grid.png") else None,
            )

    def hub_published(self, run, url: str) -> None:
        self._send(run.state.job_id, "published", hub_url=url)

    def close(self) -> None:
        for hook in self.webhooks.values():
            hook.close()
