# lorarun's instance image: CUDA + torch (from the base) + the training engine and the on-instance agent, the
# tokenizer/config assets baked in (single-file checkpoints load with no hub access), and sshd on port 22 as the
# long-lived process: the controller does everything over SSH with the job's key.
#
# Build with `lorarun image build [--base IMAGE] [--tag T] [--push]` (or `docker build --build-arg BASE_IMAGE=... .`).
# Written for the classic builder (Debian ships Docker 20.10 and the Docker SDK uses it): no heredocs, no
# `RUN --mount`, and no syntax directive line (that pulls a frontend image from a registry, which fails offline).
# Few steps, from rarely to often changed: every step is a layer (a full copy of the tree under the vfs storage
# driver), and a code change rebuilds only the last COPY and RUN.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    LORARUN_ASSET_CACHE=/opt/lorarun/assets \
    HF_HOME=/workspace/.cache/huggingface
WORKDIR /workspace
EXPOSE 22
# The start-up (image/instance/startup/lorarun-startup.sh): keys from PUBLIC_KEY, provider variables for SSH sessions, the
# lease watchdog, then sshd in the foreground. Vast's ssh run types replace it and call it from onstart instead.
ENTRYPOINT ["/usr/local/bin/lorarun-startup"]

# System packages: sshd (key-only: sshd_config.d/lorarun.conf, installed with the code below), rsync/procps for
# the agent. Host keys are made at start-up, never baked into the image (every instance would share them).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server ca-certificates rsync procps \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && mkdir -p /run/sshd /root/.ssh /var/log/lorarun /etc/ssh/sshd_config.d \
 && chmod 700 /root/.ssh \
 && sed -i -E 's/^#?[[:space:]]*(PasswordAuthentication|PermitRootLogin|KbdInteractiveAuthentication|ChallengeResponseAuthentication)[[:space:]].*$/# lorarun: see sshd_config.d\/lorarun.conf/' /etc/ssh/sshd_config

# The engine extra's dependencies, from pyproject.toml alone (torch comes from the base and satisfies the pin).
COPY pyproject.toml image/instance/startup/engine_requirements.py /opt/lorarun/deps/
RUN PY="$(command -v python3 || command -v python)" \
 && "$PY" /opt/lorarun/deps/engine_requirements.py /opt/lorarun/deps/pyproject.toml > /opt/lorarun/deps/requirements.txt \
 && "$PY" -m pip install -r /opt/lorarun/deps/requirements.txt

# lorarun itself, the small last layer: the build context is exactly what .dockerignore lets through.
# Fixed entry points on sshd's default PATH: SSH sessions do not get the image's ENV (PATH=/opt/conda/bin:... in
# the PyTorch images), so the controller runs /usr/local/bin/lorarun-python, never a bare python3.
COPY . /opt/lorarun/src/
RUN PY="$(command -v python3 || command -v python)" \
 && install -m 755 /opt/lorarun/src/image/instance/startup/lorarun-startup.sh /usr/local/bin/lorarun-startup \
 && install -m 644 /opt/lorarun/src/image/instance/startup/sshd_lorarun.conf /etc/ssh/sshd_config.d/lorarun.conf \
 && printf '#!/bin/sh\n# the interpreter that has lorarun installed (see /usr/local/bin/lorarun-startup)\nexec %s "$@"\n' "$PY" > /usr/local/bin/lorarun-python \
 && chmod 755 /usr/local/bin/lorarun-python \
 && "$PY" -m pip install --no-deps /opt/lorarun/src \
 && BIN="$(dirname "$PY")" \
 && for tool in lorarun-engine lorarun-agent; do ln -sf "$BIN/$tool" /usr/local/bin/$tool; done \
 && /usr/local/bin/lorarun-engine prepare-assets \
 && /usr/local/bin/lorarun-python -c "import torch, diffusers, peft, transformers, accelerate, onnxruntime, lorarun.image.engine.train" \
 && rm -rf /opt/lorarun/src/build /root/.cache
