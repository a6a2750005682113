"""Makes ROOST_TEST_DOMAIN and every name under it resolve to ROOST_TEST_ADDR
(default 127.0.0.1) in this Python process, without touching the machine's
DNS, so that the E2B SDK's https://api.{domain} and
https://{port}-{id}.{domain} reach roost. Python imports sitecustomize at
start-up from PYTHONPATH: put this directory on it. httpx and httpcore (sync
and async) resolve through socket.getaddrinfo, which is what is replaced;
other names resolve as usual. It shadows Debian's sitecustomize, which only
installs Ubuntu's apport hook.
"""

import os
import socket

_domain = os.environ.get("ROOST_TEST_DOMAIN", "").lower().rstrip(".")
_address = os.environ.get("ROOST_TEST_ADDR", "127.0.0.1")
_system_getaddrinfo = socket.getaddrinfo


def _ours(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or not _domain:
        return False
    host = host.lower().rstrip(".")
    return host == _domain or host.endswith("." + _domain)


def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if _ours(host):
        host = _address
    return _system_getaddrinfo(host, port, family, type, proto, flags)


socket.getaddrinfo = _getaddrinfo
