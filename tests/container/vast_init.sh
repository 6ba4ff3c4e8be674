#!/bin/sh
# A model of Vast.ai's own start-up for the ssh / ssh_direct / jupyter run types, which REPLACES the image's
# ENTRYPOINT ("The image entrypoint is replaced", docs.vast.ai "Docker Execution Environment", SSH/Jupyter launch
# modes; the create API's `runtype` field: "SSH/Jupyter runtypes replace the image entrypoint with Vast's
# entrypoint"). What it does, per those docs and reference/providers.md §1:
#  - SSH keys: the account key (SSH_PUBLIC_KEY in the container's env) and the keys attached to the instance
#    (POST /instances/{id}/ssh/; the test host copies them to /root/.ssh/authorized_keys before start, as Vast's
#    daemon does) let root in; sshd listens on 22 (mapped to the direct port).
#  - The create call's `env` is the container's environment (docker create -e), visible to this process (PID 1,
#    so /proc/1/environ) and to onstart, but NOT to SSH sessions: Vast writes no /etc/environment ("unless the
#    onstart script runs env >> /etc/environment").
#  - `onstart` runs after that set-up (stored as /root/onstart.sh).
# Not modelled: the tmux auto-attach of interactive logins, the proxy SSH port, Jupyter.
mkdir -p /root/.ssh /run/sshd
chmod 700 /root/.ssh
if [ -n "${SSH_PUBLIC_KEY:-}" ]; then printf '%s\n' "$SSH_PUBLIC_KEY" >> /root/.ssh/authorized_keys; fi
touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null 2>&1
/usr/sbin/sshd -E /var/log/vast-sshd.log
if [ -s /root/onstart.sh ]; then
  sh /root/onstart.sh > /var/log/onstart.log 2>&1 < /dev/null &
fi
exec sleep infinity
