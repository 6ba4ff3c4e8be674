"""Dropped links: commands and transfers reconnect with back-off (recorded, not slept) and transfers resume."""

from __future__ import annotations

import os
import time

import pytest

from lorarun.sshlink.errors import ConnectionLost
from lorarun.sshlink.session import RetryPolicy, SSHTransport


def test_command_after_a_dropped_connection_reconnects(ssh_transport, sshd_server):
    assert ssh_transport.run("echo 1").stdout == "1\n"
    assert sshd_server.drop_connections() > 0
    assert ssh_transport.run("echo 2").stdout == "2\n"
    assert ssh_transport.exists(str(sshd_server.workdir))


def test_backoff_grows_and_gives_up_with_connection_lost(ssh_params, sshd_server, recorded_sleeps):
    sshd_server.stop()
    t = SSHTransport(
        ssh_params, retry=RetryPolicy(attempts=4, base_delay=1.0, factor=2.0), sleep=recorded_sleeps.append
    )
    with pytest.raises(ConnectionLost):
        t.run("true")
    assert recorded_sleeps == [1.0, 2.0, 4.0]


def test_server_back_during_backoff(ssh_params, sshd_server):
    sshd_server.stop()
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        if len(sleeps) == 2:
            sshd_server.start()

    with SSHTransport(ssh_params, retry=RetryPolicy(attempts=5), sleep=sleep) as t:
        assert t.run("echo back").stdout == "back\n"
    assert len(sleeps) == 2


def test_upload_dropped_midway_resumes(ssh_transport, sshd_server, tmp_path):
    data = os.urandom(12_000_000)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "big.bin").write_bytes(data)
    (tmp_path / "ds" / "small.txt").write_bytes(b"caption")
    totals, dropped = [], []

    def progress(done, total):
        totals.append(total)
        if not dropped and done >= 4_000_000:
            dropped.append(sshd_server.drop_connections())

    report = ssh_transport.put_tree(tmp_path / "ds", str(sshd_server.workdir / "ds"), progress=progress)
    assert dropped and dropped[0] > 0
    assert ssh_transport.reconnects >= 1
    assert (sshd_server.workdir / "ds" / "big.bin").read_bytes() == data
    assert (sshd_server.workdir / "ds" / "small.txt").read_bytes() == b"caption"
    # The second attempt only had the rest of big.bin to send, not the whole of it.
    assert min(totals) < len(data)
    assert report.bytes_sent < 2 * len(data)


def test_download_dropped_midway_resumes(ssh_transport, sshd_server, tmp_path):
    data = os.urandom(12_000_000)
    (sshd_server.workdir / "lora.safetensors").write_bytes(data)
    firsts, dropped = [], []
    state = {"new_attempt": True}

    def progress(done, total):
        if state["new_attempt"]:
            firsts.append(done)
            state["new_attempt"] = False
        if not dropped and done >= 4_000_000:
            dropped.append(sshd_server.drop_connections())
            state["new_attempt"] = True

    dest = tmp_path / "lora.safetensors"
    ssh_transport.get_file(str(sshd_server.workdir / "lora.safetensors"), dest, progress=progress)
    assert dest.read_bytes() == data
    assert ssh_transport.reconnects >= 1
    assert firsts[0] == 0 and firsts[-1] >= 4_000_000, firsts


def test_non_idempotent_command_is_not_rerun_after_a_drop(ssh_transport, sshd_server):
    ssh_transport.run("true")
    counter = sshd_server.workdir / "count"
    with pytest.raises(ConnectionLost):
        # The command kills its own connection midway: it must not be started a second time.
        ssh_transport.run(f"echo x >> {counter}; kill -9 $PPID; sleep 5", idempotent=False, timeout=30)
    assert counter.read_text() == "x\n"


def test_a_silent_peer_counts_as_a_dropped_link(ssh_params, sshd_server, recorded_sleeps):
    from dataclasses import replace

    params = replace(ssh_params, io_timeout=2.0, connect_timeout=2.0)
    (sshd_server.workdir / "events.jsonl").write_bytes(b"{}\n")
    with SSHTransport(params, retry=RetryPolicy(attempts=3, base_delay=0.1), sleep=recorded_sleeps.append) as t:
        assert t.read_bytes(str(sshd_server.workdir / "events.jsonl")) == b"{}\n"
        assert sshd_server.freeze_connections()
        try:
            # The frozen link never answers: after io_timeout it is given up and a fresh one is opened.
            assert t.read_bytes(str(sshd_server.workdir / "events.jsonl")) == b"{}\n"
            assert t.run("echo alive").stdout == "alive\n"
        finally:
            sshd_server.drop_connections()
    assert recorded_sleeps, "reconnected through the back-off path"


def test_a_dead_sftp_server_on_a_live_connection_is_reopened(ssh_transport, sshd_server):
    events = sshd_server.workdir / "events.jsonl"
    events.write_bytes(b"one\n")
    assert ssh_transport.read_bytes(str(events)) == b"one\n"  # opens the shared SFTP channel
    assert sshd_server.kill_processes("sftp-server"), "the SFTP channel's server process"
    # Wait until the client has seen the channel close: the next request then fails on send ("Socket is
    # closed", an OSError on a live connection), the case a link-level check alone would miss.
    channel = ssh_transport._sftp.get_channel()
    deadline = time.monotonic() + 10
    while not channel.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert channel.closed
    events.write_bytes(b"one\ntwo\n")
    assert ssh_transport.read_bytes(str(events)) == b"one\ntwo\n"
    assert ssh_transport.exists(str(events))
