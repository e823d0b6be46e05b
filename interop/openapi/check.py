"""The OpenAPI check (.ci/openapi-check): latchkey's own /openapi.json, validated, then fuzzed.

1. Start a fresh latchkey (interop/serve.py) with users for every family.
2. GET /openapi.json and validate it with openapi-spec-validator (every error is listed).
3. Run schemathesis (CLI) against the live server with real credentials (interop/openapi/hooks.py)
   and the checks not_a_server_error, status_code_conformance (an undocumented status fails) and
   response_schema_conformance, bounded by examples per operation and a time limit.

Exits non-zero when the document is invalid or schemathesis found a failure.

    python interop/openapi/check.py [--max-examples N] [--time-limit SECONDS] [--workers N] [--seed N]
                                    [-- SCHEMATHESIS OPTIONS...]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEROP = HERE.parent
sys.path.insert(0, str(INTEROP))

import serve  # noqa: E402

PASSWORD = "correct horse battery staple"
USER, MFA_USER, CAPTCHA_USER = "alice@example.com", "bob@example.com", "carol@example.com"
# A valid browser-session name for family A (X-nonce): 16..128 base64url characters.
NONCE = "b3BlbmFwaS1jaGVjay1icm93c2Vy"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def step(text: str) -> None:
    print(f"\n--- {text}", flush=True)


def validate(doc: dict) -> list[str]:
    from openapi_spec_validator.validation import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    version = str(doc.get("openapi", ""))
    if version.startswith("3.1"):
        validator = OpenAPIV31SpecValidator(doc)
    elif version.startswith("3.0"):
        validator = OpenAPIV30SpecValidator(doc)
    else:
        return [f"unsupported or missing `openapi` version: {version!r}"]
    errors = []
    for error in validator.iter_errors():
        where = "/".join(str(p) for p in getattr(error, "absolute_path", []) or [])
        errors.append(f"{type(error).__name__}: {error.message if hasattr(error, 'message') else error}"
                      + (f" (at {where})" if where else ""))
    return errors


def summarize_junit(path: Path) -> list[str]:
    """One line per failure found by schemathesis, from its JUnit report: the operation, the
    check, what was received, the answer's body and the request that reproduces it."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):  # no report (schemathesis was stopped, or did not start)
        return []
    lines = []
    for case in root.iter("testcase"):
        for failure in list(case.findall("failure")) + list(case.findall("error")):
            text = failure.text or failure.get("message") or ""
            for block in re.split(r"\n(?=\d+\. Test Case ID)", text):
                checks = re.findall(r"^- (ST\d+ [^\n]*|[A-Z][^\n]*)$", block, re.M)
                received = re.search(r"Received: ([^\n]*)\n\s*Documented: ([^\n]*)", block)
                reason = re.search(r"^- ST108[^\n]*\n\n\s*([^\n]+)", block, re.M)
                body = re.search(r"^\s*`(.*)`\s*$", block, re.M)
                curls = re.findall(r"^\s*(curl [^\n]*)", block, re.M)
                parts = [f"{case.get('name')}: {'; '.join(checks) or failure.get('message')}"]
                if received:
                    parts.append(f"got {received.group(1)}, documented {received.group(2)}")
                if reason:
                    parts.append(reason.group(1).strip())
                if body:
                    parts.append(f"body {body.group(1)[:160]}")
                if curls:  # a stateful failure shows its steps: the last one failed
                    steps = f"(step {len(curls)} of a sequence) " if len(curls) > 1 else ""
                    parts.append(steps + curls[-1][:300])
                lines.append(" | ".join(parts))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("OPENAPI_CHECK_MAX_EXAMPLES", "15")))
    parser.add_argument("--time-limit", type=int, default=int(os.environ.get("OPENAPI_CHECK_TIME_LIMIT", "330")))
    parser.add_argument("--workers", default=os.environ.get("OPENAPI_CHECK_WORKERS", "2"))
    parser.add_argument("--seed", default=os.environ.get("OPENAPI_CHECK_SEED"))
    parser.add_argument("schemathesis_args", nargs="*",
                        help="more schemathesis options after --, e.g. -- --include-path /sessions")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="latchkey-openapi-check-"))
    # Every failed login of the run comes from 127.0.0.1: without this the address would need a
    # CAPTCHA after 50 failures and the hooks' own logins would be refused. Per-name CAPTCHA stays on.
    lk = serve.Latchkey(workdir / "server",
                        extra_env={"LATCHKEY_CAPTCHA_AFTER_FAILURES_PER_ADDRESS": "1000000",
                                   # one line per request in the kept log (route, status, time)
                                   "LATCHKEY_ACCESS_LOG": "true"})
    failed = False
    try:
        step("start latchkey")
        lk.init()
        lk.add_user(USER, PASSWORD)
        lk.add_user(MFA_USER, PASSWORD, totp=True)
        lk.add_user(CAPTCHA_USER, PASSWORD)
        lk.start()
        print(f"latchkey serving at {lk.base_url} (log: {lk.log_path})")
        # carol needs a CAPTCHA from now on (5 wrong passwords), so the CAPTCHA routes get real
        # blocked sessions.
        for _ in range(5):
            req = urllib.request.Request(f"{lk.base_url}/session/login", headers={
                "Authorization": "Basic " + base64.b64encode(f"{CAPTCHA_USER}:wrong".encode()).decode()})
            try:
                urllib.request.urlopen(req, timeout=10)
                raise RuntimeError("a wrong password was accepted")
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    raise RuntimeError(f"a wrong password got {exc.code}, not 401") from None

        step("GET /openapi.json")
        with urllib.request.urlopen(f"{lk.base_url}/openapi.json", timeout=10) as resp:
            raw = resp.read()
        doc = json.loads(raw)
        (workdir / "openapi.json").write_bytes(raw)
        ops = sum(1 for item in doc.get("paths", {}).values() for m in item
                  if m in ("get", "put", "post", "delete", "patch", "head", "options"))
        print(f"OpenAPI {doc.get('openapi')}, {len(doc.get('paths', {}))} paths, {ops} operations "
              f"(saved to {workdir / 'openapi.json'})")

        step("openapi-spec-validator")
        errors = validate(doc)
        if errors:
            failed = True
            print(f"INVALID: {len(errors)} error(s)")
            for e in errors:
                print(f"  - {e}")
        else:
            print("valid")

        step(f"schemathesis: {CHECKS}; max {args.max_examples} examples per operation, "
             f"time limit {args.time_limit}s")
        junit = workdir / "schemathesis-junit.xml"
        env = dict(os.environ)
        env.update({
            "SCHEMATHESIS_HOOKS": "hooks",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(INTEROP), env.get("PYTHONPATH", "")]),
            "INTEROP_BASE_URL": lk.base_url, "INTEROP_APIKEY": lk.apikey, "INTEROP_SERVERID": lk.serverid,
            "INTEROP_NONCE": NONCE, "INTEROP_PASSWORD": PASSWORD, "INTEROP_USER": USER,
            "INTEROP_MFA_USER": MFA_USER, "INTEROP_CAPTCHA_USER": CAPTCHA_USER,
        })
        cmd = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{lk.base_url}/openapi.json", "--url", lk.base_url,
            "--checks", CHECKS,
            "--max-examples", str(args.max_examples),
            "--workers", str(args.workers),
            "--continue-on-failure",
            "--request-timeout", "15",
            "--report", "junit", "--report-junit-path", str(junit),
            "--no-color",
        ]
        if args.seed:
            cmd += ["--seed", str(args.seed)]
        cmd += args.schemathesis_args
        print(" ".join(cmd), flush=True)
        try:
            run = subprocess.run(cmd, env=env, timeout=args.time_limit)
            code = run.returncode
        except subprocess.TimeoutExpired:
            print(f"schemathesis did not finish within {args.time_limit}s")
            code = 124
        if code != 0:
            failed = True
        summary = summarize_junit(junit)
        if summary:
            step(f"schemathesis failures ({len(summary)})")
            for line in summary:
                print(f"  - {line}")
        print(f"\nschemathesis exit code {code}")
    except BaseException:
        failed = True
        raise
    finally:
        lk.stop()
        if failed:
            print(f"latchkey log kept at {lk.log_path}")
        else:
            lk.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nopenapi-check: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
