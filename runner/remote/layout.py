"""Where a job's files live on the machine it runs on. One place, so the controller, `attach`, `down` and `gc`
agree with the agent about every path (the agent's own file names come from the contract, image/agent_files.py)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from lorarun.image import agent_files
from lorarun.sshlink.transport import REMOTE_PYTHON_EXPR, REMOTE_WORKDIR_EXPR, Transport


@dataclass(frozen=True)
class RemoteLayout:
    root: str  # <workdir>/<job_id>
    python: str  # the interpreter that has lorarun's engine installed

    @classmethod
    def resolve(cls, transport: Transport, job_id: str) -> RemoteLayout:
        out = transport.run(f'printf "%s\\n%s" {REMOTE_WORKDIR_EXPR} {REMOTE_PYTHON_EXPR}', timeout=60).stdout
        workdir, python = (out.splitlines() + ["", ""])[:2]
        return cls(root=posixpath.join(workdir.strip(), job_id), python=python.strip() or "python3")

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def dataset(self) -> str:
        return self.path("dataset")

    @property
    def reg(self) -> str:
        return self.path("reg")

    @property
    def model(self) -> str:
        return self.path("model")

    @property
    def output(self) -> str:
        return self.path("output")

    @property
    def work(self) -> str:
        return self.path("work")

    @property
    def engine_config(self) -> str:
        return self.path("engine_config.json")

    @property
    def agent_config(self) -> str:
        return self.path(agent_files.CONFIG_FILE)

    @property
    def events(self) -> str:
        return self.path("output", agent_files.EVENTS_FILE)

    @property
    def manifest(self) -> str:
        return self.path("output", "manifest.json")

    @property
    def status(self) -> str:
        return self.path(agent_files.STATUS_FILE)

    @property
    def agent_pid(self) -> str:
        return self.path(agent_files.PID_FILE)

    @property
    def agent_log(self) -> str:
        return self.path("agent.log")

    @property
    def heartbeat(self) -> str:
        return self.path(agent_files.HEARTBEAT_FILE)

    @property
    def collected(self) -> str:
        return self.path(agent_files.COLLECTED_FILE)
