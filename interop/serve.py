"""Start a fresh, real `latchkey serve` for the interoperability checks.

Shared by the vendor-client tests (interop/vendor_clients/) and the OpenAPI check (interop/openapi/).
A Latchkey owns a temporary directory with its own SQLite database: `latchkey init`, users made with
the real command line (`user add --password-stdin`, `user totp`, `user pin --pin-stdin`), then
`latchkey serve --listen 127.0.0.1:0` whose bound address is read from its JSON log.

The binaries come from LATCHKEY_BIN (default target/debug/latchkey) and LATCHKEY_APP_BIN (default
target/debug/latchkey-app), relative to the repository root; nothing is built here. Every inherited
LATCHKEY_* variable is dropped so the developer's own settings cannot leak into a check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Cheap hashing so a test run is not dominated by argon2id and PBKDF2; no per-address login rate limit,
# because every request of a test run comes from 127.0.0.1.
TEST_SETTINGS = {
    "LATCHKEY_LOG_FORMAT": "json",
    "LATCHKEY_LOGIN_RATE_PER_ADDRESS": "0",
    "LATCHKEY_SCRAM_ITERATIONS": "4096",
    "LATCHKEY_ARGON2_MEMORY_KIB": "4096",
    "LATCHKEY_ARGON2_ITERATIONS": "1",
    # Stop at once on SIGTERM (the default keeps serving for 5 s to drain).
    "LATCHKEY_DRAIN_TIMEOUT": "0",
}

# Every CAPTCHA's answer while the server runs (test-only variable, see docs/configuration.md).
CAPTCHA_ANSWER = "INTEROP7"

START_TIMEOUT = 60.0


def binary(env_var: str, default: str) -> Path:
    """The binary named by env_var (absolute, or relative to the repository root)."""
    path = Path(os.environ.get(env_var) or default)
    if not path.is_absolute():
        path = REPO / path
    return path


def latchkey_bin() -> Path:
    return binary("LATCHKEY_BIN", "target/debug/latchkey")


def latchkey_app_bin() -> Path:
    return binary("LATCHKEY_APP_BIN", "target/debug/latchkey-app")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment without any LATCHKEY_* variable, plus the test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(TEST_SETTINGS)
    env["LATCHKEY_CAPTCHA_TEST_ANSWER"] = CAPTCHA_ANSWER
    env.update(extra or {})
    return env


def _wait_executable(path: Path, timeout: float = 120.0) -> None:
    """The binary may be briefly missing while someone relinks it: wait a little, then fail."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"latchkey binary not found or not executable: {path}")
        time.sleep(2)


def _run_retrying(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs cmd; retries a few times when the binary is being replaced (ETXTBSY, ENOENT)."""
    for attempt in range(30):
        try:
            return subprocess.run(cmd, **kwargs)
        except OSError as exc:  # text file busy / vanished during a relink
            if attempt == 29 or exc.errno not in (26, 2):
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


class Latchkey:
    """One latchkey server with its own database, started by start() and ended by stop()."""

    def __init__(self, workdir: Path | None = None, extra_env: dict[str, str] | None = None):
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="latchkey-interop-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.database = f"sqlite://{self.dir / 'latchkey.db'}"
        self.env = clean_env(extra_env)
        self.bin = latchkey_bin()
        self.log_path = self.dir / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.serverid = ""
        self.apikey = ""

    # -- command line -------------------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """Runs `latchkey ARGS --database DB`; answers its standard output, fails on a non-zero exit."""
        _wait_executable(self.bin)
        cmd = [str(self.bin), *args, "--database", self.database]
        out = _run_retrying(
            cmd, input=stdin, capture_output=True, text=True, env=self.env, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
            )
        return out.stdout

    def init(self) -> None:
        line = self.cli("init").strip().splitlines()[-1]
        made = json.loads(line)
        self.serverid, self.apikey = made["serverid"], made["apikey"]

    def add_user(
        self, userid: str, password: str | None = None, *, totp: bool = False, pin: str | None = None
    ) -> dict:
        """Adds a user through the command line. Answers {"userid", "totp_secret"?, "otpauth"?}."""
        made: dict = {"userid": userid}
        if password is not None:
            self.cli("user", "add", userid, "--password-stdin", stdin=password + "\n")
        else:
            self.cli("user", "add", userid)
        if totp:
            uri = self.cli("user", "totp", userid).strip().splitlines()[-1]
            if not uri.startswith("otpauth://"):
                raise RuntimeError(f"`user totp` printed no otpauth URI: {uri!r}")
            query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
            made["otpauth"] = uri
            made["totp_secret"] = query["secret"][0]
        if pin is not None:
            self.cli("user", "pin", userid, "--pin-stdin", stdin=pin + "\n")
        return made

    # -- the server ---------------------------------------------------------------------------

    def start(self) -> "Latchkey":
        """init (once) and serve; returns when the server has said where it listens."""
        if not self.serverid:
            self.init()
        _wait_executable(self.bin)
        log = open(self.log_path, "ab")
        cmd = [str(self.bin), "serve", "--listen", "127.0.0.1:0", "--database", self.database]
        for attempt in range(30):
            try:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
                )
                break
            except OSError as exc:
                if attempt == 29 or exc.errno not in (26, 2):
                    raise
                time.sleep(2)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            listen = self._listen_address()
            if listen:
                self.base_url = f"http://{listen}"
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"latchkey serve exited {self.proc.returncode} before serving:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"latchkey serve did not say where it listens in time:\n{self.log_tail()}")

    def _listen_address(self) -> str | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = entry.get("fields") or {}
            if fields.get("message") == "latchkey is serving" and fields.get("listen"):
                return str(fields["listen"])
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Latchkey":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
