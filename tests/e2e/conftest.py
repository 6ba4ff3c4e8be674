from support.cloud import cloud, vast_cloud  # noqa: F401 - fake provider APIs whose instances are real sshd processes
