#!/usr/bin/env python3
"""E2B's Python SDK against roost in domain + TLS mode, with nothing but
E2B_DOMAIN and E2B_API_KEY (plus trust in roost's CA through SSL_CERT_FILE
and pyresolve/sitecustomize.py pointing the domain at roost). The SDK's
envd traffic is HTTP/2 over TLS (its httpx transports ask for h2). Run
through run.sh, which puts ../shared/e2b-python's SDK on PYTHONPATH.

Prints one line per step; the last is "python domain: ok (N steps)" and exit
0, or "python domain: FAILED at <step>: <error>" and exit 1.
"""

import asyncio
import os
import sys
import time

import httpx
from e2b import AsyncSandbox, Sandbox
from e2b.sandbox.commands.command_handle import PtySize

DOMAIN = os.environ["E2B_DOMAIN"]
KEY = os.environ["E2B_API_KEY"]
API = f"https://api.{DOMAIN}"


def rest(method, path):
    return httpx.request(method, API + path, headers={"X-API-Key": KEY})


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def lives_under_domain(sbx):
    check(sbx.sandbox_domain == DOMAIN, f"sandbox_domain {sbx.sandbox_domain!r}")
    check(sbx.get_host(8000) == f"8000-{sbx.sandbox_id}.{DOMAIN}", sbx.get_host(8000))
    check(rest("GET", f"/sandboxes/{sbx.sandbox_id}").json()["domain"] == DOMAIN, "REST domain")


def command_runs(sbx):
    r = sbx.commands.run('echo "hello $((6*7))"; id -un')
    check(r.exit_code == 0 and r.stdout == "hello 42\nuser\n", repr(r))


def file_round_trip(sbx):
    text = "domain mode " + "x" * 100_000
    sbx.files.write("/home/user/domain.txt", text)
    check(sbx.files.read("/home/user/domain.txt") == text, "file content")


def pty_echoes(sbx):
    out = []
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(h.pid, b"echo pty-$((6*7)); exit\n")
    h.wait(on_pty=lambda d: out.append(d))
    check(b"pty-42" in b"".join(out), f"pty output {b''.join(out)[-200:]!r}")


def signed_urls(sbx):
    up = sbx.upload_url("/home/user/signed.txt", use_signature_expiration=10_000)
    check(up.startswith(f"https://49983-{sbx.sandbox_id}.{DOMAIN}/files?"), up)
    r = httpx.post(up, files={"file": ("signed.txt", b"signed upload")})
    check(r.status_code == 200, f"upload {r.status_code} {r.text}")
    down = sbx.download_url("/home/user/signed.txt", use_signature_expiration=10_000)
    r = httpx.get(down)
    check(r.status_code == 200 and r.text == "signed upload", f"download {r.status_code} {r.text[:200]}")


def async_command_runs(sbx):
    async def run():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        r = await a.commands.run("echo async")
        check(r.stdout == "async\n", repr(r))
    asyncio.run(run())


def pause_then_connect_resumes(sbx):
    sbx.commands.run("echo kept > /home/user/kept.txt")
    sbx.pause()
    check(rest("GET", f"/sandboxes/{sbx.sandbox_id}").json()["state"] == "paused", "not paused")
    again = Sandbox.connect(sbx.sandbox_id)
    check(again.commands.run("cat /home/user/kept.txt").stdout == "kept\n", "file after resume")


def kill(sbx):
    sbx.kill()
    check(rest("GET", f"/sandboxes/{sbx.sandbox_id}").status_code == 404, "still there after kill")


def main():
    for v in ("E2B_API_URL", "E2B_SANDBOX_URL"):
        if os.environ.get(v):
            print(f"python domain: {v} must be unset", file=sys.stderr)
            return 2
    step = "create"
    sbx = None
    try:
        sbx = Sandbox.create("base", timeout=180, secure=True, metadata={"suite": "domain-py"})
        steps = [lives_under_domain, command_runs, file_round_trip, pty_echoes, signed_urls,
                 async_command_runs, pause_then_connect_resumes, kill]
        for f in steps:
            step = f.__name__
            t = time.monotonic()
            f(sbx)
            print(f"  ok {step} ({(time.monotonic() - t) * 1000:.0f} ms)")
        sbx = None
        print(f"python domain: ok ({len(steps)} steps)")
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure as the step's
        print(f"python domain: FAILED at {step}: {type(e).__name__}: {e}")
        return 1
    finally:
        if sbx is not None:
            try:
                sbx.kill()
            except Exception:  # noqa: BLE001
                pass


if __name__ == "__main__":
    sys.exit(main())
