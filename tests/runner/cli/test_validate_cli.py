"""Bad input: exit code 2, one line naming the file/field, no traceback — before any provider is contacted."""

from __future__ import annotations

import http.server
import threading

import pytest
from helpers_dataset import make_dataset, make_image, write_job

from lorarun.runner.cli.app import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_prints_a_kohya_style_summary(tmp_path, capsys):
    make_dataset(tmp_path / "data", {"10_mychar": 4, "2_style": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    code, out, err = run_cli(capsys, "validate", str(job))
    assert code == 0, err
    assert "10_mychar" in out and "2_style" in out
    assert "training images 44" in out  # 4×10 + 2×2
    assert "total steps" in out and "ok" in out


def _bad_inputs(tmp_path):
    cases = {}
    ds = make_dataset(tmp_path / "corrupt", {"10_x": 2})
    (ds / "10_x" / "bad.png").write_bytes(b"not an image")
    cases["corrupt"] = (write_job(tmp_path / "corrupt.yaml", "corrupt"), "bad.png")
    make_dataset(tmp_path / "noprefix", {"mychar": 2})
    cases["noprefix"] = (write_job(tmp_path / "noprefix.yaml", "noprefix"), "repeat prefix")
    (tmp_path / "empty" / "10_x").mkdir(parents=True)
    cases["empty"] = (write_job(tmp_path / "empty.yaml", "empty"), "no training images")
    ds = make_dataset(tmp_path / "latin", {"10_x": 1})
    (ds / "10_x" / "img_000.txt").write_bytes(b"caf\xe9")
    cases["latin"] = (write_job(tmp_path / "latin.yaml", "latin"), "not UTF-8")
    make_dataset(tmp_path / "ok", {"10_x": 1})
    cases["spec"] = (write_job(tmp_path / "spec.yaml", "ok", extra="  network_dimm: 4"), "did you mean 'network_dim'")
    cases["batch"] = (write_job(tmp_path / "batch.yaml", "ok", extra="  batch_size: 64"), "batch_size 64 is larger")
    bad_model = write_job(tmp_path / "model.yaml", "ok")
    bad_model.write_text(bad_model.read_text().replace("builtin:tiny-sd15", "./missing.safetensors"))
    cases["model"] = (bad_model, "missing.safetensors does not exist")
    return cases


@pytest.mark.parametrize("case", ["corrupt", "noprefix", "empty", "latin", "spec", "batch", "model"])
@pytest.mark.parametrize("command", ["validate", "submit"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case, command):
    job, expected = _bad_inputs(tmp_path)[case]
    args = [command, str(job)] + (["--yes"] if command == "submit" else [])
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err + out
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(500)
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, *args):
        pass


def test_submit_rejects_bad_dataset_before_contacting_the_provider(tmp_path, capsys, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("VAST_URL", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("VAST_API_KEY", "k" * 32)
        ds = make_dataset(tmp_path / "data", {"10_x": 2})
        make_image(ds / "10_x" / "zz.png").write_bytes(b"\x89PNG broken")
        job = write_job(tmp_path / "job.yaml", "data")
        code, _, err = run_cli(capsys, "submit", str(job), "--provider", "vastai", "--yes")
        assert code == 2 and "zz.png" in err
        assert _CountingHandler.hits == 0
    finally:
        server.shutdown()


def test_debug_flag_shows_a_traceback(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("training:\n  epochs: zero\n")
    code, _, err = run_cli(capsys, "--debug", "validate", str(job))
    assert code == 2 and "Traceback" in err


def test_usage_errors_are_click_style_and_exit_2(capsys):
    assert main(["submit"]) == 2
    assert "Missing argument" in capsys.readouterr().err
    assert main(["validate", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main([]) == 0  # bare `lorarun` prints the help
    assert "submit" in capsys.readouterr().out


def test_validate_prints_every_dataset_problem_one_line_each(tmp_path, capsys):
    ds = make_dataset(tmp_path / "data", {"10_x": 3})
    (ds / "10_x" / "img_000.png").write_bytes(b"not an image")
    (ds / "10_x" / "img_001.png").write_bytes(b"also not")
    (ds / "10_x" / "img_002.txt").write_bytes(b"caf\xe9")
    job = write_job(tmp_path / "job.yaml", "data")
    code, out, err = run_cli(capsys, "validate", str(job))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 3, err
    assert any("img_000.png" in line for line in lines) and any("img_001.png" in line for line in lines)
    assert any("img_002.txt" in line and "UTF-8" in line for line in lines)
    assert "lists them" not in err and "Traceback" not in err


def test_missing_credentials_list_every_place_looked(tmp_path, capsys, monkeypatch):
    """The message's list stays under its first line: `Looked in:` is followed by each place, then the fix."""
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORARUN_HOME", str(tmp_path / "lrhome"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    code, out, err = run_cli(capsys, "estimate", str(job), "--provider", "vastai")
    assert code == 2
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert lines[first].endswith("Looked in:")
    listed = [line for line in lines[first + 1 :] if line.lstrip().startswith("- ")]
    assert any("VAST_API_KEY" in line for line in listed)
    assert any("vast_api_key" in line for line in listed)  # vast-cli's file
    assert any(".vast_api_key" in line for line in listed)  # the legacy file
    assert any("cloud.vast.ai" in line for line in lines[first:])  # where to create one
