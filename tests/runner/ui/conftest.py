from support.cloud import vast_cloud  # noqa: F401 - the fake Vast.ai API whose instances are real sshd processes
