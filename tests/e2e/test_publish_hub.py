"""`output.hub` and `lorarun publish` against a loopback fake of the Hub's upload API (HF_ENDPOINT), after a whole
fake-provider job with a real sshd instance: a wrong token is one line with exit 2 before anything is rented or
uploaded; a good one publishes the verified LoRA, its grid, samples and a model card, privately by default; the
token is on no artefact, no provider request and not on the instance."""

from __future__ import annotations

import os

import pytest
from fakes.hub_server import USER, VALID_TOKEN, FakeHub, point_the_client_at
from support.cloud import tiny_job, with_sample

from lorarun.provider_adapters.user_files import lorarun_home
from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SAMPLE = "sample:\n  prompts: [mychar smiling]\n  steps: 2\n  grid_strengths: [0.0, 1.0]\n  grid_seeds: [1]\n"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored `hf auth login` token
        point_the_client_at(fake, monkeypatch)  # HF_ENDPOINT, offline lifted; LFS, not Xet (fakes/hub_server.py)
        yield fake


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_publish_after_a_job_and_by_command(vast_cloud, hub, tmp_path, capsys, monkeypatch):
    job = tiny_job(tmp_path, "vastai", epochs=1)
    with_sample(job, SAMPLE)
    text = job.read_text(encoding="utf-8")
    job.write_text(text.replace("  name: e2e_lora\n", f"  name: e2e_lora\n  hub: {USER}/e2e-lora\n"), encoding="utf-8")

    # A wrong token: one line, exit 2, nothing rented.
    monkeypatch.setenv("HF_TOKEN", "hf_wrongToken_0000000000000000")
    assert main(["submit", str(job), "--yes"]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [
        f"error: the Hugging Face Hub refused the token from HF_TOKEN (HTTP 401) for {USER}/e2e-lora; make a write "
        "token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"
    ], err
    assert "Traceback" not in err and not vast_cloud.fake.requests_to("PUT", "/api/v0/asks")
    assert not hub.repos

    # The right token: the job runs and publishes itself.
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    assert main(["submit", str(job), "--yes"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"published e2e to {hub.url}/{USER}/e2e-lora" in err
    repo = hub.repos[f"{USER}/e2e-lora"]
    out = tmp_path / "out"
    assert repo.private
    assert repo.files["e2e_lora.safetensors"] == (out / "e2e_lora.safetensors").read_bytes()
    assert repo.files["e2e_lora_grid.png"] == (out / "e2e_lora_grid.png").read_bytes()
    assert repo.files["samples/e2e_lora_e000001_00.png"] == (out / "samples" / "e2e_lora_e000001_00.png").read_bytes()
    card = repo.files["README.md"].decode()
    assert "instance_prompt: mychar" in card and "widget:" in card and "- text: mychar smiling" in card
    assert "<lora:e2e_lora:0.8>" in card and "models/loras" in card and "load_lora_weights" in card
    assert "![grid](e2e_lora_grid.png)" in card and "| network | LoRA, dim 4, alpha 2 |" in card
    assert len(repo.commits) == 1 and repo.commits[0]["summary"].startswith("lorarun: e2e (job ")
    # The LoRA went by LFS (batch + PUT + verify), the card as a regular file in the commit.
    assert hub.requests_to("POST", f"/{USER}/e2e-lora.git/info/lfs/objects/batch")
    assert hub.requests_to("PUT", "/lfs-upload/")

    state = next(s for s in JobStore().all() if s.phase == "done")
    # `lorarun publish`: a wrong token is one line and exit 2; the right one publishes to another repo, public.
    monkeypatch.setenv("HF_TOKEN", "hf_wrongToken_0000000000000000")
    assert main(["publish", state.job_id, "--repo", f"{USER}/second", "--public"]) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "refused the token from HF_TOKEN (HTTP 401)" in err
    assert "Traceback" not in err and f"{USER}/second" not in hub.repos
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    assert main(["publish", state.job_id, "--repo", f"{USER}/second", "--public"]) == 0
    assert not hub.repos[f"{USER}/second"].private
    assert set(hub.repos[f"{USER}/second"].files) == set(repo.files)
    assert main(["publish", state.job_id, "--repo", "other-org/x"]) == 2  # a namespace the token cannot write
    assert _error_lines(capsys.readouterr().err) == [
        "error: the Hugging Face Hub refused to write to other-org/x (HTTP 403): the token needs write access to that "
        "namespace; make a write token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"
    ]

    # The token is nowhere but this process's environment (and the Authorization header of the Hub's requests): not
    # in a provider request, on the instance, in the job store, the output folder or any file published.
    secret = VALID_TOKEN.encode()
    assert all(secret not in r.raw for r in vast_cloud.fake.requests)
    assert all(secret not in data for r in hub.repos.values() for data in r.files.values())
    assert all(b"hf_wrongToken" not in r.raw for r in vast_cloud.fake.requests)
    for root in (vast_cloud.host.root, lorarun_home(), out):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                assert secret not in path.read_bytes(), path
    assert os.environ["HF_TOKEN"] == VALID_TOKEN
