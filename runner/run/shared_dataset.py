"""Where a job's dataset goes on the instance. Jobs of a batch that train on the same files from the same folder
share one copy per rental (issue 19: "the dataset uploaded once per rental when the jobs share it"): the first
job uploads it, the next ones find every file already there (put_files compares sha256 before sending) and send
nothing. The copy lives beside the job folders, as the pip cache does (runner/run/upload.py), and goes with the
instance.

A job that writes into its dataset on the instance (`dataset.captions: auto` or `only` write each caption beside
its image, image/engine/caption/run.py) keeps its own copy: the next job must not train on another job's
captions. On your own server (`ssh`) or this machine (`local`) nothing is shared: the machine outlives the job,
whose folder lorarun removes at the end (provider_adapters/ssh.py), and a copy beside it would stay behind."""

from __future__ import annotations

import hashlib
import posixpath

from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.remote.layout import RemoteLayout

SHARED_DIR = ".datasets"
MACHINE_KEPT = frozenset({"ssh", "local"})  # providers whose machine is not destroyed with the job


def dataset_key(job: ValidatedJob) -> str:
    """The same folder and the same accepted files, unchanged since (size and mtime): the same key. A file edited
    between two jobs, or a scan that accepts other files (another resolution's minimum), gives another key."""
    digest = hashlib.sha256(str(job.spec.dataset_dir.resolve()).encode())
    for scanned in job.scan.files():
        stat = scanned.path.stat()
        digest.update(f"\0{scanned.rel}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def remote_dataset_dir(job: ValidatedJob, layout: RemoteLayout, provider: str) -> str:
    if provider in MACHINE_KEPT or job.spec.dataset.captions != "given":
        return layout.dataset
    return posixpath.join(posixpath.dirname(layout.root), SHARED_DIR, dataset_key(job))
