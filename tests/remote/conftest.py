from support.fixtures import *  # noqa: F403  (sshd_server, sshd_host, ssh_transport, ...)
