"""The SSH link to a machine: paramiko session with retries, pinned host keys, SFTP transfers, remote errors.

It sits below both the controller (`runner/`) and the adapters (`provider_adapters/ssh.py`), which both import it;
it imports neither. `runner/remote/{errors,hostkeys,session,sftp_io,transport}.py` are the same modules under their
old names (aliases), so existing imports keep working and patch the very same objects.
"""
