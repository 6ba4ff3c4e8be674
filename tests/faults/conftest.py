from support.cloud import cloud  # noqa: F401 - a fake provider API whose instances are real sshd processes
