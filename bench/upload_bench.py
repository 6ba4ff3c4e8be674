"""Upload throughput: `SSHTransport.put_tree` against OpenSSH `scp -r`, on a loopback sshd, side by side.

    python bench/upload_bench.py [--mb 200] [--reps 5] [--channels 3] [--json out.json]

A kohya-style dataset of a few hundred files (images of 100 KB to 4 MB, incompressible like JPEGs, each with a
caption) is generated in a temporary folder and uploaded to a fresh remote folder each time, alternating which
tool goes first so page cache and CPU contention hit both alike. put_tree's time includes everything it does
(local and remote sha256 manifest, verification); scp's is the plain copy. Reports MB/s per repetition, the
medians and their ratio (put_tree / scp); the target is >= 0.8.

On a shared machine wall-clock throughput swings with whatever else runs, so the CPU seconds each upload costs
(client process, plus the sshd session processes it caused on the server side) are reported too: MB per CPU
second is what the throughput becomes when the CPU is the bottleneck, and it barely depends on the neighbours.

Needs OpenSSH's `sshd` and `scp`. Nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopback_sshd import LoopbackSshd, available  # bench/'s own (run as `python bench/upload_bench.py`)

from lorarun.sshlink.session import UPLOAD_CHANNELS, SSHParams, SSHTransport


def make_dataset(root: Path, total_mb: int, seed: int = 0) -> tuple[int, int]:
    rng = random.Random(seed)
    total, n, target = 0, 0, total_mb * 1_000_000
    concepts = ["10_sks_dog", "5_reg_dogs", "20_style"]
    while total < target:
        folder = root / concepts[n % len(concepts)]
        folder.mkdir(parents=True, exist_ok=True)
        size = min(target - total, int(rng.lognormvariate(13.6, 0.7)))  # median ~800 KB, a tail to several MB
        size = max(size, 1)
        (folder / f"img_{n:04d}.jpg").write_bytes(rng.randbytes(size))
        (folder / f"img_{n:04d}.txt").write_text(f"a photo of sks dog, picture {n}\n")
        total += size + len(f"a photo of sks dog, picture {n}\n")
        n += 1
    return 2 * n, total


def _ticks_to_s(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(server: LoopbackSshd) -> float:
    """CPU seconds of the sshd listener's finished children (the per-connection sshd, sftp-server, commands)."""
    pid = server.pid
    deadline = time.monotonic() + 10
    # Wait until the connection's processes are gone and reaped, so their time is in cutime/cstime.
    while time.monotonic() < deadline:
        kids = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
        if not kids:
            break
        time.sleep(0.02)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return _ticks_to_s(int(fields[13]) + int(fields[14]))  # cutime, cstime


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def client_cpu(children: bool) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_put_tree(params: SSHParams, dataset: Path, dest: str, channels: int) -> float:
    with SSHTransport(params, upload_channels=channels) as t:
        t.connect()  # the handshake is not part of the throughput (scp's is, but it is ~10 ms on loopback)
        start = time.perf_counter()
        report = t.put_tree(dataset, dest)
        elapsed = time.perf_counter() - start
    assert report.files_skipped == 0
    return elapsed


def run_scp(server: LoopbackSshd, known_hosts: Path, dataset: Path, dest: str) -> float:
    cmd = [
        "scp",
        "-q",
        "-r",
        "-P",
        str(server.port),
        "-i",
        str(server.client_key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        str(dataset),
        f"{server.username}@127.0.0.1:{dest}",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--channels", type=int, default=UPLOAD_CHANNELS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not shutil.which("scp") or not available():
        print("needs OpenSSH sshd, ssh-keygen and scp", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="lorarun-upload-bench-"))
    server = LoopbackSshd(root / "sshd")
    try:
        files, total = make_dataset(root / "dataset", args.mb)
        print(
            f"dataset: {files} files, {total / 1e6:.1f} MB; {args.reps} repetitions, "
            f"put_tree with {args.channels} SFTP channel(s)"
        )
        server.start()
        params = SSHParams(
            host="127.0.0.1",
            port=server.port,
            username=server.username,
            key_path=server.client_key,
            known_hosts=root / "pins",
        )
        results: dict[str, list[float]] = {"put_tree": [], "scp": []}
        cpu: dict[str, list[float]] = {"put_tree": [], "scp": []}
        for rep in range(args.reps):
            order = ["put_tree", "scp"] if rep % 2 == 0 else ["scp", "put_tree"]
            for tool in order:
                dest = server.workdir / f"{tool}-{rep}"
                is_scp = tool == "scp"
                cpu0 = client_cpu(children=is_scp) + server_cpu(server)
                if is_scp:
                    secs = run_scp(server, root / "scp_known_hosts", root / "dataset", str(dest))
                else:
                    secs = run_put_tree(params, root / "dataset", str(dest), args.channels)
                cpu[tool].append(client_cpu(children=is_scp) + server_cpu(server) - cpu0)
                results[tool].append(total / secs / 1e6)
                shutil.rmtree(dest, ignore_errors=True)
            print(
                f"  rep {rep + 1}: put_tree {results['put_tree'][-1]:7.1f} MB/s ({cpu['put_tree'][-1]:.2f} CPU s)"
                f"   scp {results['scp'][-1]:7.1f} MB/s ({cpu['scp'][-1]:.2f} CPU s)"
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = med["put_tree"] / med["scp"]
        cpu_ratio = med_cpu["scp"] / med_cpu["put_tree"]
        print(
            f"median: put_tree {med['put_tree']:.1f} MB/s, scp {med['scp']:.1f} MB/s, ratio {ratio:.2f} "
            f"({'meets' if ratio >= 0.8 else 'BELOW'} the 0.8 target)"
        )
        print(
            f"CPU per upload (client + server side): put_tree {med_cpu['put_tree']:.2f} s, scp {med_cpu['scp']:.2f} s; "
            f"MB per CPU second: put_tree {total / 1e6 / med_cpu['put_tree']:.0f}, "
            f"scp {total / 1e6 / med_cpu['scp']:.0f} (ratio {cpu_ratio:.2f})"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "files": files,
                        "bytes": total,
                        "mb_per_s": results,
                        "cpu_s": cpu,
                        "median": med,
                        "median_cpu_s": med_cpu,
                        "ratio": ratio,
                        "cpu_ratio": cpu_ratio,
                        "channels": args.channels,
                    },
                    indent=2,
                )
            )
        return 0
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
