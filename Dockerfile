# syntax=docker/dockerfile:1
# lorarun's instance image: CUDA + torch + the training engine and on-instance agent, tokenizer/config assets baked
# in (single-file checkpoints load with no hub access), and sshd as the long-running process (the controller does
# everything over SSH). Build: docker build -t lorarun/engine:0.1 .
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    LORARUN_ASSET_CACHE=/opt/lorarun/assets \
    HF_HOME=/workspace/.cache/huggingface

RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server ca-certificates rsync procps \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd /root/.ssh /workspace \
 && chmod 700 /root/.ssh \
 && sed -i 's/^#\?PasswordAuthentication .*/PasswordAuthentication no/; s/^#\?PermitRootLogin .*/PermitRootLogin prohibit-password/' /etc/ssh/sshd_config

WORKDIR /opt/lorarun/src
# Dependencies first (cached layer): torch comes from the base image and satisfies the engine extra's pin.
COPY pyproject.toml setup.py README.md ./
COPY lorarun ./lorarun
COPY runner ./runner
COPY provider_adapters ./provider_adapters
COPY image ./image
RUN python -m pip install ".[engine]" \
 && python -m lorarun.image.engine prepare-assets \
 && python -c "import torch, diffusers, peft, transformers, accelerate, lorarun.image.engine.train"

# Keys: RunPod passes PUBLIC_KEY, Vast SSH_PUBLIC_KEY; either (or both) go to authorized_keys. The providers' env
# is not visible in SSH sessions, so it is saved for the agent (the instance-scoped API keys it uses to self-destroy
# at lease end). sshd in the foreground keeps the container alive.
COPY <<"ENTRY" /usr/local/bin/lorarun-entrypoint
#!/bin/sh
set -e
for key in "$PUBLIC_KEY" "$SSH_PUBLIC_KEY"; do
  if [ -n "$key" ] && ! grep -qxF "$key" /root/.ssh/authorized_keys 2>/dev/null; then
    printf '%s\n' "$key" >> /root/.ssh/authorized_keys
  fi
done
chmod 600 /root/.ssh/authorized_keys 2>/dev/null || true
env | grep -E '^(CONTAINER_ID|CONTAINER_API_KEY|VAST_|RUNPOD_|GPU_COUNT|LORARUN_|HF_HOME)' > /etc/environment || true
ssh-keygen -A >/dev/null
if [ "$#" -gt 0 ]; then exec "$@"; fi
exec /usr/sbin/sshd -D -e
ENTRY
RUN chmod 755 /usr/local/bin/lorarun-entrypoint

WORKDIR /workspace
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/lorarun-entrypoint"]
