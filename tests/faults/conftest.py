# Fault tests run against the fake Vast.ai API (`vast_cloud`); the provider-specific ones (destroy storms, the
# agent's self-destroy with the instance-scoped key) run against both fakes (`cloud`).
from support.cloud import cloud, vast_cloud  # noqa: F401
