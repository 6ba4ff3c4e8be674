"""lorarun's Hub publishing (runner/publish/hub.py) through the real huggingface_hub client against the loopback
fake of the Hub's upload API: the LoRA goes by LFS because the fake answers as a plain LFS repository does (see
tests/fakes/hub_server.py for what each huggingface_hub version asks before it picks Xet), the card as a regular
file, in one commit to a private repo; a wrong token is one line before anything is created."""

from __future__ import annotations

import pytest
from fakes.hub_server import USER, VALID_TOKEN, FakeHub, point_the_client_at

from lorarun.runner.publish.hub import HubTokenError, PublishedFile, publish

CARD = "---\nlicense: other\ntags: [lora]\n---\n# e2e\n"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored `hf auth login` token
        point_the_client_at(fake, monkeypatch)
        yield fake


def _files(tmp_path):
    lora = tmp_path / "e2e_lora.safetensors"
    lora.write_bytes(bytes(range(256)) * 64)
    card = tmp_path / "README.md"
    card.write_text(CARD, encoding="utf-8")
    return [PublishedFile("e2e_lora.safetensors", lora), PublishedFile("README.md", card)]


def test_the_lora_goes_by_lfs_to_a_plain_lfs_repo_in_one_private_commit(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    result = publish(f"{USER}/e2e", _files(tmp_path), private=True, message="lorarun: e2e")
    repo = hub.repos[f"{USER}/e2e"]
    assert repo.private and len(repo.commits) == 1 and result.files == ("e2e_lora.safetensors", "README.md")
    assert repo.files["e2e_lora.safetensors"] == (tmp_path / "e2e_lora.safetensors").read_bytes()
    assert repo.files["README.md"].decode() == CARD
    # LFS: the batch call, then the bytes PUT to the href it gave; never the Xet token endpoint.
    assert hub.requests_to("POST", f"/{USER}/e2e.git/info/lfs/objects/batch") and hub.requests_to("PUT", "/lfs-upload/")
    assert not any("xet" in r.path for r in hub.requests)
    assert all(offer[0] == "basic" for offer in hub.transfers_offered)


def test_a_wrong_token_is_one_line_and_nothing_is_created(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongToken_0000000000000000")
    with pytest.raises(HubTokenError) as refused:
        publish(f"{USER}/e2e", _files(tmp_path), private=True, message="lorarun: e2e")
    assert str(refused.value) == (
        f"the Hugging Face Hub refused the token from HF_TOKEN (HTTP 401) for {USER}/e2e; make a write token at "
        "https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"
    )
    assert not hub.repos and not hub.requests_to("POST", "/api/repos/create")
