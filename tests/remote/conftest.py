from support.fixtures import *  # noqa: F401,F403  (sshd_server, sshd_host, ssh_transport, ...)
