"""The controller's small guarantees that the type checker leans on (issue #22: mypy over runner/): a phase that
needs the rented instance or its link gets a one-line `PipelineError` where there is none, never an
AttributeError on None."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorarun.provider_adapters.base import Instance, InstanceStatus, Offer
from lorarun.provider_adapters.local import LocalProvider
from lorarun.runner.errors import PipelineError
from lorarun.runner.run.connect import transport_to
from lorarun.runner.run.context import Rental
from lorarun.runner.state import JobState


def test_the_live_instance_is_there_once_rented_and_a_clear_error_before(tmp_path):
    rental = Rental(provider=LocalProvider(tmp_path), offer=Offer("local", "o1", "cpu", 0, 0, 0.0))
    with pytest.raises(PipelineError, match="no local instance is rented yet"):
        rental.live  # noqa: B018
    rental.instance = Instance("local", "i1", "lorarun-j", InstanceStatus.RUNNING)
    assert rental.live is rental.instance


def test_no_link_to_an_instance_without_an_ssh_endpoint_or_staging_folder(tmp_path):
    state = JobState(job_id="j-1", name="j", job_file="/x/job.yaml", provider="vastai", output_dir="/x/out")
    booting = Instance("vastai", "i2", "lorarun-j-1", InstanceStatus.PENDING)  # no ssh endpoint reported yet
    with pytest.raises(PipelineError, match="instance i2 reports no SSH endpoint yet"):
        transport_to(booting, state, tmp_path)
    local = Instance("local", "i3", "lorarun-j-1", InstanceStatus.RUNNING)  # its `extra` names no workdir
    with pytest.raises(PipelineError, match="local instance i3 names no staging folder"):
        transport_to(local, state, Path(tmp_path))
