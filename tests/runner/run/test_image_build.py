"""`lorarun image` without a Docker engine: naming and tagging, the one-line errors that need no engine (and the one
for no engine, through the real Docker SDK against a socket nobody serves), the start-up timing file, the stock
path's wheel. The builds themselves run in tests/container/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

pytest.importorskip("docker")

from support.paths import REPO

from lorarun.runner.cli.app import main
from lorarun.runner.price import startup_timing
from lorarun.runner.run import image_build, stock


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ghcr.io/you/engine:1.2", ("ghcr.io/you/engine", "1.2")),
        ("127.0.0.1:5000/you/engine", ("127.0.0.1:5000/you/engine", None)),
        ("127.0.0.1:5000/you/engine:t", ("127.0.0.1:5000/you/engine", "t")),
        ("engine", ("engine", None)),
    ],
)
def test_split_name(name, expected):
    assert image_build.split_name(name) == expected


def test_tags_carry_version_and_content_hash():
    v = image_build.version()
    assert image_build.resolve_tag(None, None, "abc") == f"lorarun/engine:{v}-abc"
    assert image_build.resolve_tag("ghcr.io/you/engine", None, "abc") == f"ghcr.io/you/engine:{v}-abc"
    assert image_build.resolve_tag("ghcr.io/you/engine:mine", None, "abc") == "ghcr.io/you/engine:mine"
    # The configured image names the repository; its tag is replaced by what is being built.
    assert image_build.resolve_tag(None, "ghcr.io/you/engine:old", "abc") == f"ghcr.io/you/engine:{v}-abc"


def test_content_hash_follows_the_context_and_the_base(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "__pycache__", "*.egg-info"))
    first = image_build.content_hash(root, "base:1")
    assert image_build.content_hash(root, "base:1") == first
    assert image_build.content_hash(root, "base:2") != first
    (root / "runner" / "job" / "spec.py").write_text(
        (root / "runner" / "job" / "spec.py").read_text() + "\n# changed\n"
    )
    assert image_build.content_hash(root, "base:1") != first
    (root / "jobs").mkdir(exist_ok=True)
    second = image_build.content_hash(root, "base:1")
    (root / "jobs" / "new.yaml").write_text("not in the image")  # outside the context: same image
    assert image_build.content_hash(root, "base:1") == second


def test_a_failed_step_is_named():
    stream = [
        {"stream": "Step 1/11 : ARG BASE_IMAGE=x\n"},
        {"stream": "Step 6/11 : RUN apt-get update\n"},
        {"stream": " ---> Running in 123\n"},
        {
            "errorDetail": {
                "code": 100,
                "message": "The command '/bin/sh -c apt-get update' returned a non-zero code: 100",
            },
            "error": "The command '/bin/sh -c apt-get update' returned a non-zero code: 100",
        },
    ]
    with pytest.raises(image_build.BuildFailed) as err:
        image_build._follow_build(iter(stream), lambda line: None)
    assert str(err.value) == "docker build failed at Step 6/11 : RUN apt-get update: exit code 100"
    stream = [
        {"stream": "Step 11/13 : RUN pip install /src\n"},
        {"stream": "  NameError: name 'x' is not defined\n"},
        {"stream": "note: This error originates from a subprocess\n"},
        {"stream": "[end of output]\n"},
        {"error": "The command '/bin/sh -c pip install /src' returned a non-zero code: 1"},
    ]
    with pytest.raises(image_build.BuildFailed) as err:
        image_build._follow_build(iter(stream), lambda line: None)
    assert str(err.value) == (
        "docker build failed at Step 11/13 : RUN pip install /src: exit code 1 (NameError: name 'x' is not defined)"
    )


def test_push_errors_are_told_apart():
    denied = image_build._push_error("ghcr.io/you/e:1", "denied: permission_denied: write_package")
    assert isinstance(denied, image_build.PushDenied) and "docker login ghcr.io" in str(denied)
    other = image_build._push_error("ghcr.io/you/e:1", "dial tcp: lookup ghcr.io: no such host")
    assert type(other) is image_build.ImageError


def test_no_docker_engine_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert main(["image", "build"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Docker engine answers at unix:///nonexistent/docker.sock") and "\n" not in err


def test_push_needs_a_registry_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # never reached
    monkeypatch.delenv("LORARUN_IMAGE", raising=False)
    assert main(["image", "build", "--push"]) == 2
    assert "nowhere to push" in capsys.readouterr().err
    assert main(["image", "build", "--push", "--tag", "engine:1"]) == 2
    assert "name a registry or account" in capsys.readouterr().err


def test_show_without_an_engine_says_what_it_could_not_check(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("LORARUN_IMAGE", "ghcr.io/you/engine:1")
    assert main(["image", "show"]) == 0
    out = capsys.readouterr().out
    assert "ghcr.io/you/engine:1" in out and "LORARUN_IMAGE" in out and "unknown" in out


def test_job_image_wins_over_the_configured_one(monkeypatch):
    monkeypatch.setenv("LORARUN_IMAGE", "ghcr.io/you/engine:1")
    assert image_build.image_for_job("ghcr.io/job/own:2") == ("ghcr.io/job/own:2", "job file")
    from lorarun.runner.job.spec import DEFAULT_IMAGE

    assert image_build.image_for_job(DEFAULT_IMAGE) == ("ghcr.io/you/engine:1", "LORARUN_IMAGE")
    monkeypatch.delenv("LORARUN_IMAGE")
    assert image_build.image_for_job(DEFAULT_IMAGE) == (DEFAULT_IMAGE, "default")


def test_the_user_config_image_is_used_when_the_job_and_environment_are_silent(monkeypatch):
    from lorarun.runner.job import user_config
    from lorarun.runner.job.spec import DEFAULT_IMAGE

    monkeypatch.delenv("LORARUN_IMAGE", raising=False)
    user_config.set_value("image", "ghcr.io/me/lorarun-engine:0.2.0")
    name, source = image_build.image_for_job(DEFAULT_IMAGE)
    assert name == "ghcr.io/me/lorarun-engine:0.2.0" and source.startswith("user config")
    monkeypatch.setenv("LORARUN_IMAGE", "ghcr.io/you/engine:1")  # the environment wins over the config file
    assert image_build.image_for_job(DEFAULT_IMAGE) == ("ghcr.io/you/engine:1", "LORARUN_IMAGE")


def test_startup_timings_from_the_events_file():
    text = (
        "\n".join(
            json.dumps(e)
            for e in [
                {"event": "container_started", "time": 100.0},
                {"event": "sshd_up", "time": 101.5},
                {"event": "engine_importable", "time": 109.25},
            ]
        )
        + '\n{"event": "tru'
    )
    assert startup_timing.timings(startup_timing.parse(text)) == {
        "startup_sshd_up": 1.5,
        "startup_engine_importable": 9.25,
    }
    assert startup_timing.timings({}) == {}


def test_stock_wheel_installs_and_imports(tmp_path):
    wheel = stock.build_wheel(tmp_path / "w")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lorarun/runner/run/pipeline.py" in names and "lorarun/image/engine/train.py" in names
    assert any(n.startswith("lorarun/image/assets/") for n in names)
    assert not [n for n in names if "__pycache__" in n]
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    # -S: without site-packages, so the editable install of this checkout cannot answer instead of the wheel.
    out = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import lorarun.runner.run.stock as s, lorarun.image.engine_config; print(s.__file__)",
        ],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(target))
    assert (target / "bin" / "lorarun-engine").exists()


def test_stock_install_script_is_posix_sh():
    script = stock.install_command("/root/lorarun/j1/lorarun-0.1.0-py3-none-any.whl", "/root/lorarun/.pip-cache")
    sh = shutil.which("dash") or "sh"
    assert subprocess.run([sh, "-n", "-c", script]).returncode == 0
    assert "'/root/lorarun/j1/lorarun-0.1.0-py3-none-any.whl[engine]'" in script
    assert script.rstrip().endswith("echo /usr/local/bin/lorarun-python")


def test_stock_adds_install_time_to_the_estimate():
    from lorarun.runner.price.estimate import Phases

    base = dict(boot=60, image_pull=30, model_download=10, upload=5, prepare=20, train=100, sampling=0, download=5)
    assert Phases(**base, install=stock.INSTALL_SECONDS).total == Phases(**base).total + stock.INSTALL_SECONDS
    assert stock.is_stock("stock") and stock.is_stock(" Stock ") and not stock.is_stock("ghcr.io/x/y:1")


def test_private_image_login_comes_from_dockers_config_and_reaches_vast(tmp_path, monkeypatch):
    import base64 as b64

    from lorarun.provider_adapters.base import InstanceSpec, Offer
    from lorarun.provider_adapters.vastai.adapter import build_create_body

    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"ghcr.io": {"auth": b64.b64encode(b"me:ghp_token123").decode()}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    login = image_build.registry_login("ghcr.io/me/lorarun-engine:0.1.0-abc")
    assert (login.registry, login.username, login.password) == ("ghcr.io", "me", "ghp_token123")
    assert image_build.registry_login("docker.io/someone/public:1") is None  # no login for that registry
    spec = InstanceSpec(
        label="lorarun-j",
        image="ghcr.io/me/lorarun-engine:0.1.0-abc",
        disk_gb=20,
        ssh_public_key="ssh-ed25519 AAAA",
        registry_login=login,
    )
    assert "ghp_token123" not in repr(spec)  # never in a log line
    offer = Offer(provider="vastai", id="1001", gpu_name="RTX 4090", gpu_count=1, vram_gb=24, price_per_hour=0.4)
    body = build_create_body(offer, spec)
    assert body["image_login"] == "-u me -p ghp_token123 ghcr.io"
    assert "ghp_token123" not in json.dumps(body["env"])  # the registry token is for Vast's pull, not the instance
