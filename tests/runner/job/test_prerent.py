"""Problems found before paying: settings the chosen machine cannot honour, hub ids that do not exist or are not
reachable, checked at `validate` against the provider the job will use."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from helpers_dataset import make_dataset, write_job

from lorarun.runner.cli.app import main
from lorarun.runner.errors import InvalidJob, SpecError
from lorarun.runner.job.hub_check import check_hub_model
from lorarun.runner.job.prerent import Machine, machine_problems
from lorarun.runner.job.validate import validate_job
from tests.image.test_checkpoint_probe import SD1, write_safetensors
from tests.runner.job.test_kohya_toml import GUIDE_TOML


def _guide_job(tmp_path, provider_section: str = "") -> object:
    make_dataset(tmp_path / "img", {"10_mychar": 3}, size=(512, 768))
    write_safetensors(tmp_path / "v1-5-pruned.safetensors", SD1)
    job = tmp_path / "guide.toml"
    job.write_text(GUIDE_TOML + provider_section, encoding="utf-8")
    return job


def test_the_guides_toml_on_local_cpu_fails_at_validate_with_both_fixes(tmp_path, capsys):
    """AdamW8bit and fp16 cannot run on this CPU-only machine: both are said at validate, one line each."""
    job = _guide_job(tmp_path, '\n[lorarun]\nprovider = "local"\n')
    with pytest.raises(InvalidJob) as info:
        validate_job(job)
    problems = info.value.problems
    assert any("training.optimizer_type: AdamW8bit needs a CUDA GPU" in p and "use AdamW" in p for p in problems)
    assert any("training.mixed_precision: fp16 needs a CUDA GPU" in p and "fp32" in p for p in problems)
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 2


def test_the_same_toml_is_fine_for_a_rented_gpu(tmp_path):
    job = _guide_job(tmp_path, '\n[lorarun]\nprovider = "vastai"\n')
    assert validate_job(job).spec.training.optimizer_type == "AdamW8bit"


def test_machine_rules():
    from dataclasses import replace

    from lorarun.image.engine_config import TrainingConfig
    from lorarun.runner.job.spec import JobSpec

    job = JobSpec(
        name="x",
        source="/nonexistent/job.yaml",
        training=replace(TrainingConfig(), optimizer_type="AdamW8bit", mixed_precision="bf16"),
    )
    cpu = Machine("this machine's CPU (provider local)", cuda=False, bitsandbytes=True)
    gpu_no_bnb = Machine("this machine's RTX 4090 (provider local)", cuda=True, bitsandbytes=False)
    unknown = Machine("the ssh host", cuda=None, bitsandbytes=None)
    assert len(machine_problems(job, cpu)) == 2  # unreadable source counts as "set by the user"
    assert ["bitsandbytes package" in p for p in machine_problems(job, gpu_no_bnb)] == [True]
    assert machine_problems(job, unknown) == []


def test_default_bf16_is_not_blamed_on_the_user(tmp_path):
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    job.write_text(job.read_text().replace('  mixed_precision: "no"\n', ""))
    assert validate_job(job).spec.training.mixed_precision == "bf16"  # the engine notes fp32 on CPU


class _Hub(http.server.BaseHTTPRequestHandler):
    """The hub's `GET /api/models/{repo}` as huggingface_hub's model_info reads it: 200 with `siblings`, 401 for
    an unknown repo asked anonymously (the hub hides whether a private repo exists)."""

    repos = {
        "org/diffusers-model": ["model_index.json", "unet/config.json"],
        "org/single-file": ["model.safetensors", "README.md"],
    }
    seen: list[str] = []

    def do_GET(self):
        type(self).seen.append(self.path)
        repo = self.path.removeprefix("/api/models/")
        if repo in self.repos:
            body = json.dumps({"id": repo, "siblings": [{"rfilename": f} for f in self.repos[repo]]}).encode()
            self.send_response(200)
        else:
            body = b'{"error":"Repository not found"}'
            self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    server.shutdown()


def test_hub_ids_against_the_hubs_file_list(hub, tmp_path):
    env = {**hub, "HF_HUB_CACHE": str(tmp_path / "cache")}
    assert check_hub_model("org/diffusers-model", needed_here=True, env=env).ok
    missing = check_hub_model("org/misspeled", needed_here=False, env=env)
    assert not missing.ok and "does not exist on the Hugging Face hub" in missing.message
    single = check_hub_model("org/single-file", needed_here=False, env=env)
    assert not single.ok and "model.safetensors" in single.message and "not a diffusers model" in single.message
    assert "/api/models/org/misspeled" in _Hub.seen


def test_hub_ids_offline_use_the_local_cache(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    miss = check_hub_model("org/model", needed_here=True, env=env)
    assert not miss.ok and "not in the local Hugging Face cache" in miss.message and "HF_HUB_OFFLINE" in miss.message
    remote = check_hub_model("org/model", needed_here=False, env=env)
    assert remote.ok and "the instance will download it" in remote.message
    snap = tmp_path / "hf" / "hub" / "models--org--model" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    assert check_hub_model("org/model", needed_here=True, env=env).ok


def test_an_unreachable_hub_falls_back_to_the_cache(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_CACHE": str(tmp_path)}
    miss = check_hub_model("org/model", needed_here=True, env=env)
    assert not miss.ok and "did not answer" in miss.message


def test_validate_refuses_an_uncached_hub_id_offline_for_a_local_job(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    job.write_text(
        job.read_text().replace("builtin:tiny-sd15", "runwayml/stable-diffusion-v1-5")
        + "resources:\n  provider: local\n"
    )
    with pytest.raises(SpecError, match="model.base: runwayml/stable-diffusion-v1-5 is not in the local Hugging Face"):
        validate_job(job)
    job.write_text(job.read_text().replace("provider: local", "provider: vastai"))
    assert any("will download it" in n for n in validate_job(job).notes)
