"""The job file's sections for the hosted-trainer conveniences (issue 20): `notify:` and `output.hub`.

Kept apart from spec.py so the big spec module only names them; each checks its own values, one line per problem.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from lorarun.image.schema import ConfigError

NOTIFY_FORMATS = ("auto", "discord", "json")
# Hugging Face repo ids: `namespace/name`, letters, digits, `-`, `_`, `.`; at most 96 characters
# (huggingface_hub.utils._validators.validate_repo_id).
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}$")


@dataclass(frozen=True)
class NotifyConfig:
    webhook: str | None = None  # Discord webhook URL, or any URL taking a JSON POST
    format: str = "auto"  # auto: Discord's shape for discord.com / discordapp.com URLs, plain JSON otherwise

    def validate(self, where: str = "notify") -> None:
        if self.format not in NOTIFY_FORMATS:
            raise ConfigError(f"{where}.format: unknown format {self.format!r}; use one of {', '.join(NOTIFY_FORMATS)}")
        if self.webhook is None:
            return
        parts = urllib.parse.urlsplit(self.webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}.webhook: expected an http(s) URL, e.g. https://discord.com/api/webhooks/…")

    @property
    def discord(self) -> bool:
        if self.format != "auto":
            return self.format == "discord"
        host = urllib.parse.urlsplit(self.webhook or "").hostname or ""
        return host in ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")


def hub_repo_problem(repo_id: str | None, where: str = "output.hub") -> str | None:
    if repo_id is None:
        return None
    if not HUB_REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id or repo_id.endswith((".git", ".")):
        return f"{where}: {repo_id!r} is not a Hugging Face repo id; use your-name/your-lora"
    return None


# A kohya TOML's `[lorarun]` keys for these features (kohya has none): key → (job section, field).
LORARUN_HOSTED_KEYS: dict[str, tuple[str, str]] = {
    "captions": ("dataset", "captions"),
    "caption_model": ("dataset", "caption_model"),
    "caption_trigger": ("dataset", "caption_trigger"),
    "caption_overwrite": ("dataset", "caption_overwrite"),
    "hub": ("output", "hub"),
    "hub_private": ("output", "hub_private"),
    "notify_webhook": ("notify", "webhook"),
    "notify_format": ("notify", "format"),
}
