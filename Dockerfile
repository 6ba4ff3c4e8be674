# lorarun's instance image: CUDA + torch (from the base) + the training engine and the on-instance agent, the
# tokenizer/config assets baked in (single-file checkpoints load with no hub access), and sshd on port 22 as the
# long-lived process: the controller does everything over SSH with the job's key.
#
# Build with `lorarun image build [--base IMAGE] [--tag T] [--push]` (or `docker build --build-arg BASE_IMAGE=... .`).
# Written for the classic builder (Debian ships Docker 20.10 and the Docker SDK uses it): no heredocs, no
# `RUN --mount`, and no syntax directive line (that pulls a frontend image from a registry, which fails offline).
# Layers go from rarely to often changed, so a code change rebuilds only the last, small layer.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    LORARUN_ASSET_CACHE=/opt/lorarun/assets \
    HF_HOME=/workspace/.cache/huggingface

# System packages: sshd (key-only, configured below), rsync/procps for the agent. Host keys are made at start-up,
# never baked into the image (every instance would share them).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server ca-certificates rsync procps \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && mkdir -p /run/sshd /root/.ssh /workspace /var/log/lorarun \
 && chmod 700 /root/.ssh \
 && sed -i -E 's/^#?[[:space:]]*(PasswordAuthentication|PermitRootLogin|KbdInteractiveAuthentication|ChallengeResponseAuthentication)[[:space:]].*$/# lorarun: see sshd_config.d\/lorarun.conf/' /etc/ssh/sshd_config
COPY image/startup/sshd_lorarun.conf /etc/ssh/sshd_config.d/lorarun.conf

# The engine extra's dependencies, from pyproject.toml alone (torch comes from the base and satisfies the pin).
COPY pyproject.toml image/startup/engine_requirements.py /opt/lorarun/deps/
RUN PY="$(command -v python3 || command -v python)" \
 && "$PY" /opt/lorarun/deps/engine_requirements.py /opt/lorarun/deps/pyproject.toml > /opt/lorarun/deps/requirements.txt \
 && "$PY" -m pip install -r /opt/lorarun/deps/requirements.txt

# Fixed entry points on sshd's default PATH: SSH sessions do not get the image's ENV (PATH=/opt/conda/bin:... in
# the PyTorch images), so the controller runs /usr/local/bin/lorarun-python, never a bare python3.
COPY image/startup/lorarun-startup.sh /usr/local/bin/lorarun-startup
RUN PY="$(command -v python3 || command -v python)" \
 && printf '#!/bin/sh\n# the interpreter that has lorarun installed (see /usr/local/bin/lorarun-startup)\nexec %s "$@"\n' "$PY" > /usr/local/bin/lorarun-python \
 && chmod 755 /usr/local/bin/lorarun-python /usr/local/bin/lorarun-startup

# lorarun itself: the small last layer.
COPY pyproject.toml setup.py README.md /opt/lorarun/src/
COPY lorarun /opt/lorarun/src/lorarun
COPY runner /opt/lorarun/src/runner
COPY provider_adapters /opt/lorarun/src/provider_adapters
COPY image /opt/lorarun/src/image
RUN /usr/local/bin/lorarun-python -m pip install --no-deps /opt/lorarun/src \
 && BIN="$(dirname "$(readlink -f "$(command -v python3 || command -v python)")")" \
 && for tool in lorarun-engine lorarun-agent; do ln -sf "$(command -v $tool || echo "$BIN/$tool")" /usr/local/bin/$tool; done \
 && /usr/local/bin/lorarun-engine prepare-assets \
 && /usr/local/bin/lorarun-python -c "import torch, diffusers, peft, transformers, accelerate, lorarun.image.engine.train" \
 && rm -rf /opt/lorarun/src/build /root/.cache

WORKDIR /workspace
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/lorarun-startup"]
