"""SSHTransport commands against a real loopback sshd: output, exit codes, timeouts, detached processes."""

from __future__ import annotations

import inspect
import os
import signal
import time
from pathlib import Path

import pytest

from lorarun.sshlink.errors import RemoteCommandError, RemoteTimeout
from lorarun.sshlink.transport import REMOTE_WORKDIR_EXPR, Transport


def test_implements_every_transport_method_with_its_parameters():
    from lorarun.sshlink.session import SSHTransport

    for name, fn in vars(Transport).items():
        if name.startswith("_") or not callable(fn):
            continue
        want = inspect.signature(fn).parameters
        got = inspect.signature(getattr(SSHTransport, name)).parameters
        for pname, param in want.items():
            assert pname in got, f"{name} lacks {pname}"
            assert got[pname].kind == param.kind and got[pname].default == param.default, (name, pname)


def test_run_returns_stdout_stderr_and_exit_code(ssh_transport):
    res = ssh_transport.run("echo out; echo err >&2")
    assert (res.exit_code, res.stdout, res.stderr) == (0, "out\n", "err\n")


def test_run_sees_the_instance_environment(ssh_transport, sshd_server):
    assert ssh_transport.run('printf %s "$LORARUN_WORKDIR"').stdout == str(sshd_server.workdir)
    assert ssh_transport.workdir() == str(sshd_server.workdir)


def test_run_feeds_stdin(ssh_transport):
    assert ssh_transport.run("tr a-z A-Z", input=b"hello").stdout == "HELLO"


def test_nonzero_exit_raises_with_code_and_stderr_tail(ssh_transport):
    with pytest.raises(RemoteCommandError) as info:
        ssh_transport.run("echo boom >&2; exit 3")
    assert info.value.exit_code == 3
    assert "boom" in info.value.stderr_tail
    assert "exited 3" in str(info.value)
    assert ssh_transport.run("exit 5", check=False).exit_code == 5


def test_stderr_tail_keeps_the_end_of_long_output(ssh_transport):
    with pytest.raises(RemoteCommandError) as info:
        ssh_transport.run("i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1")
    tail = info.value.stderr_tail
    assert tail.rstrip().endswith("line2999")
    assert "line0\n" not in tail and len(tail) <= 2000


def test_large_stdout_is_read_completely(ssh_transport):
    res = ssh_transport.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert len(res.stdout) == 3_000_000


def test_timeout_raises_its_own_error_and_ends_the_command(ssh_transport, sshd_server):
    marker = sshd_server.workdir / "finished"
    with pytest.raises(RemoteTimeout) as info:
        ssh_transport.run(f"sleep 20.5; touch {marker}", timeout=1.0)
    assert info.value.timeout == 1.0
    # the command's process group was ended: no `sleep 20.5` of this server is left
    assert _wait_for(lambda: not sshd_server.kill_processes("sleep 20.5", sig=0))
    assert not marker.exists()
    # the connection is still usable afterwards
    assert ssh_transport.run("echo ok").stdout == "ok\n"


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_detached_process_survives_the_connection(ssh_transport, sshd_server):
    job = sshd_server.workdir / "job1"
    pid = ssh_transport.start_detached(
        'echo started; read x; echo "stdin=[$x]"; exec sleep 60', cwd=str(job), log_path=str(job / "agent.log")
    )
    try:
        log = job / "agent.log"
        assert _wait_for(lambda: log.exists() and "stdin=[]" in log.read_text()), "stdin must be /dev/null"
        assert os.getsid(pid) == pid, "its own session, so the SSH session's hangup does not reach it"
        assert os.readlink(f"/proc/{pid}/cwd") == str(job)
        assert _wait_for(lambda: b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes())
        ssh_transport.close()
        sshd_server.drop_connections()
        time.sleep(0.3)  # a hangup, had it reached the process, would have ended it by now
        assert b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_detached_paths_may_start_with_the_workdir_expression(ssh_transport, sshd_server):
    job = f"{REMOTE_WORKDIR_EXPR}/job 2"
    pid = ssh_transport.start_detached("echo hi", cwd=job, log_path=f"{job}/logs/out.log")
    log = sshd_server.workdir / "job 2" / "logs" / "out.log"
    assert _wait_for(lambda: log.exists() and log.read_text() == "hi\n")
    assert pid > 1


def test_secrets_in_a_failing_command_stay_out_of_the_message(ssh_transport):
    with pytest.raises(RemoteCommandError) as info:
        ssh_transport.run("CONTAINER_API_KEY=s3cr3t sh -c 'echo Bearer s3cr3t >&2; exit 1'")
    assert "s3cr3t" not in str(info.value)
    assert info.value.exit_code == 1


def test_a_command_killed_by_a_signal_reports_minus_one(ssh_transport):
    # OpenSSH sends exit-signal, not exit-status: the result is -1 and the link is fine.
    assert ssh_transport.run("kill -9 $$", check=False).exit_code == -1
    assert ssh_transport.run("echo fine").stdout == "fine\n"
