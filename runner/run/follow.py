"""`lorarun logs -f`: follow a running job's events from its instance, from another terminal than the one driving
it. Read-only: nothing here changes the job's state or the instance (the controller holding the job does that)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run.connect import provider_for_state, transport_to
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobState, JobStore


def follow_events(store: JobStore, state: JobState, show: Callable[[dict], None], interval: float = 2.0) -> bool:
    """Show each new event of the job's engine until it ends (or Ctrl-C). False when the job has no running instance
    to follow (nothing was shown)."""
    provider = provider_for_state(state)
    instance = provider.get(state.instance_id) if state.instance_id else None
    if instance is None or state.remote_dir is None:
        return False
    job_dir = store.job_dir(state.job_id)
    transport = transport_to(instance, state, job_dir, provider)
    try:
        layout = RemoteLayout.resolve(transport, state.job_id)
        monitor = JobMonitor(transport, layout, Path(state.output_dir), job_dir / "events.jsonl")
        while True:
            for event in monitor.read_new_events():
                show(event)
            if monitor.progress.outcome:
                return True
            time.sleep(interval)
    except KeyboardInterrupt:
        return True
    finally:
        transport.close()
