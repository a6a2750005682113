"""Makes ROOST_TEST_DOMAIN and every name under it resolve to ROOST_TEST_ADDR
(default 127.0.0.1) in this Python process, without touching the machine's
DNS, so that the E2B SDK's https://api.{domain} and
https://{port}-{id}.{domain} reach roost. httpx and httpcore (sync and
async) resolve through socket.getaddrinfo, which is what is replaced; other
names resolve as usual.

stack.sh has every Python process import it at start-up, through a .pth
file in a user site directory of its own (PYTHONUSERBASE), which works
even under runners that set PYTHONPATH themselves.

With ROOST_TEST_E2B_DOMAIN_ONLY=1 it also puts the process in the SDK's
domain mode, whatever a runner set: E2B_API_URL and E2B_SANDBOX_URL are
removed and E2B_DOMAIN is ROOST_TEST_DOMAIN (../shared/e2b-python/run.sh
always sets the URLs).
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


if _domain and socket.getaddrinfo is not _getaddrinfo:
    socket.getaddrinfo = _getaddrinfo
    if os.environ.get("ROOST_TEST_E2B_DOMAIN_ONLY") == "1":
        os.environ.pop("E2B_API_URL", None)
        os.environ.pop("E2B_SANDBOX_URL", None)
        os.environ["E2B_DOMAIN"] = _domain
