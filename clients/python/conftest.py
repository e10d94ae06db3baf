"""Session fixtures: one mock upstream and one KairosRoute gateway per test session.

Both run as child processes of the `kairos` binary (`$KAIROS_BIN`, else `target/debug/kairos`
under the repository root):

    kairos mock-upstream --listen 127.0.0.1:<port> --record
    kairos serve --config <tmp>/kairos.toml

The gateway's providers `openai`, `anthropic` and `gemini` all point at the mock, so the catalog
models of the three (`gpt-4o-mini`, `claude-haiku-4-5`, `gemini-2.5-flash`, ...) are served by it.
The mock is keyless; the gateway is given canary provider keys, which the mock accepts.

Every test starts with an empty mock (`POST /__mock/reset`: scripts, ledger, request log). A
failing test gets the gateway and mock log lines written during it attached to its report; the
full logs are kept in the session's temporary directory, whose path is printed at the end of a
failing session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MASTER = "kr-canary-master-py-5f1d2c3b4a5968"
PROVIDER_KEYS = {
    "OPENAI_API_KEY": "sk-canary-openai-py-0a1b2c3d4e",
    "ANTHROPIC_API_KEY": "sk-ant-canary-py-9f8e7d6c5b",
    "GEMINI_API_KEY": "AIza-canary-gemini-py-13579b",
}
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Local servers must never be reached through a proxy configured in the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    os.environ[_var] = ",".join(_hosts + ["127.0.0.1", "localhost"])


def kairos_bin() -> Path:
    path = Path(os.environ.get("KAIROS_BIN") or REPO / "target" / "debug" / "kairos")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"kairos binary not found at {path}: run `cargo build -p kairos-server` "
            "or set KAIROS_BIN",
            returncode=2,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A child process with its combined stdout/stderr in a log file."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log_file: Any = field(repr=False)

    def log_text(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log_file.close()


def spawn(name: str, args: list[str], env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], Path, Any]:
    log_path = workdir / f"{name}.log"
    log_file = open(log_path, "ab")
    popen = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    return popen, log_path, log_file


def wait_ready(proc: Proc, path: str) -> None:
    """Poll `GET {url}{path}` until it answers 200; fail with the log if the process dies."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_err: Exception | str = "no attempt"
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode} before it was ready:\n{proc.log_text()}"
                )
            try:
                r = http.get(proc.url + path)
                if r.status_code == 200:
                    return
                last_err = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.TransportError as e:
                last_err = e
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{proc.name} not ready after {STARTUP_TIMEOUT_S}s ({last_err}):\n{proc.log_text()}")


def start_with_retry(
    name: str,
    make_args: Callable[[int], list[str]],
    env_for: Callable[[int], dict[str, str]],
    workdir: Path,
    health: str,
) -> Proc:
    """Start a server on a free port. Between choosing the port and the child binding it another
    process may take it: then the child exits at once, and we try again on another port."""
    errors = []
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        popen, log_path, log_file = spawn(name, make_args(port), env_for(port), workdir)
        proc = Proc(name, url, popen, log_path, log_file)
        try:
            wait_ready(proc, health)
            return proc
        except RuntimeError as e:
            proc.stop()
            errors.append(str(e))
            if "cannot listen" not in str(e) and "Address already in use" not in str(e):
                break
    raise RuntimeError(f"cannot start {name}:\n" + "\n---\n".join(errors))


GATEWAY_TOML = """\
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
max_body_bytes = 1048576
shutdown_grace_ms = 2000

[storage]
data_dir = "{data_dir}"

[auth]
master_key = "env:KAIROS_MASTER_KEY"

[logging]
level = "info,kairos_server=debug,kairos_core=debug,kairos_providers=debug"

# One gateway serves the whole session: no retries and no Retry-After pauses, so that one
# test's scripted upstream failure never changes another test's outcome.
[resilience]
retry_attempts = 1
max_cooldown_ms = 1
eject_after_failures = 1000

# For test_resilience.py: two providers behind one model name.
[strategies.py-fallback]
mode = "fallback"
targets = [{{ model = "gpt-4o-mini" }}, {{ model = "claude-haiku-4-5" }}]

[providers.openai]
kind = "openai"
base_url = "{mock}/v1"
api_key = "env:OPENAI_API_KEY"

[providers.anthropic]
kind = "anthropic"
base_url = "{mock}"
api_key = "env:ANTHROPIC_API_KEY"

[providers.gemini]
kind = "gemini"
base_url = "{mock}"
api_key = "env:GEMINI_API_KEY"
"""


def clean_env() -> dict[str, str]:
    """The parent environment without anything that configures kairos or a provider."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAIROS_")
        and not k.endswith("_API_KEY")
        and k not in ("RUST_LOG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    }
    env["RUST_BACKTRACE"] = "1"
    return env


@dataclass
class Servers:
    mock: Proc
    gateway: Proc
    workdir: Path
    master_key: str = MASTER

    @property
    def gw(self) -> str:
        return self.gateway.url

    def procs(self) -> list[Proc]:
        return [self.gateway, self.mock]


_SERVERS: Servers | None = None
_WORKDIR: Path | None = None
_FAILED = False


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    global _SERVERS, _WORKDIR
    binary = str(kairos_bin())
    workdir = _WORKDIR = Path(tempfile.mkdtemp(prefix="kairos-pytest-"))
    mock = start_with_retry(
        "mock",
        lambda port: [binary, "mock-upstream", "--listen", f"127.0.0.1:{port}", "--record"],
        lambda _port: clean_env(),
        workdir,
        "/__mock/health",
    )
    data_dir = workdir / "data"
    data_dir.mkdir()

    def gateway_args(port: int) -> list[str]:
        cfg = workdir / "kairos.toml"
        cfg.write_text(GATEWAY_TOML.format(port=port, data_dir=data_dir, mock=mock.url))
        return [binary, "serve", "--config", str(cfg)]

    def gateway_env(port: int) -> dict[str, str]:
        env = clean_env()
        env.update(PROVIDER_KEYS)
        env["KAIROS_MASTER_KEY"] = MASTER
        env["KAIROS_LISTEN"] = f"127.0.0.1:{port}"
        env["KAIROS_DATA_DIR"] = str(data_dir)
        # Routed choices must be deterministic: no exploration in these tests.
        env["KAIROS_EXPLORE"] = "0"
        return env

    try:
        gateway = start_with_retry("gateway", gateway_args, gateway_env, workdir, "/healthz")
    except BaseException:
        mock.stop()
        raise
    _SERVERS = Servers(mock=mock, gateway=gateway, workdir=workdir)
    try:
        yield _SERVERS
    finally:
        for p in _SERVERS.procs():
            p.stop()
        _SERVERS = None
        if not _FAILED:
            shutil.rmtree(workdir, ignore_errors=True)


class Mock:
    """The mock's control API (`/__mock/*`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def reset(self) -> None:
        self.http.post("/__mock/reset").raise_for_status()

    def script(self, *behaviors: dict[str, Any], model: str | None = None) -> None:
        """Queue behaviours (FIFO, or for one upstream model)."""
        items = [b if model is None else {"model": model, "behavior": b} for b in behaviors]
        r = self.http.post("/__mock/script", content=json.dumps(items))
        assert r.status_code == 200, f"mock rejected the script: {r.status_code} {r.text}"

    def ledger(self) -> list[dict[str, Any]]:
        return self.http.get("/__mock/ledger").raise_for_status().json()

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/__mock/requests").raise_for_status().json()

    def last_request_body(self) -> dict[str, Any]:
        reqs = self.requests()
        assert reqs, "the mock received no request"
        return json.loads(reqs[-1]["body"])


@pytest.fixture(scope="session")
def mock_api(servers: Servers) -> Iterator[Mock]:
    m = Mock(servers.mock.url)
    yield m
    m.http.close()


@pytest.fixture(autouse=True)
def mock(request: pytest.FixtureRequest, servers: Servers, mock_api: Mock) -> Mock:
    """Per test: a reset mock, and log offsets so that a failure shows what the servers logged."""
    for p in servers.procs():
        if not p.alive():
            pytest.fail(f"{p.name} died (exit {p.popen.returncode}):\n{p.log_text()}")
    mock_api.reset()
    request.node.stash[_LOG_OFFSETS] = {p.name: p.log_size() for p in servers.procs()}
    return mock_api


@pytest.fixture(scope="session")
def gw(servers: Servers) -> str:
    """The gateway's base URL (no `/v1`)."""
    return servers.gw


@pytest.fixture
def http(gw: str) -> Iterator[httpx.Client]:
    """A raw HTTP client on the gateway (for what the SDKs will not send)."""
    with httpx.Client(base_url=gw, timeout=30.0, trust_env=False) as c:
        yield c


_LOG_OFFSETS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    global _FAILED
    report = yield
    if report.failed:
        _FAILED = True
        offsets = item.stash.get(_LOG_OFFSETS, None)
        if _SERVERS is not None and offsets is not None:
            for p in _SERVERS.procs():
                text = p.log_text(offsets.get(p.name, 0)).strip() or "<nothing logged>"
                state = "running" if p.alive() else f"EXITED with {p.popen.returncode}"
                report.sections.append((f"{p.name} log during this test ({state})", text[-20000:]))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _FAILED and _WORKDIR is not None:
        terminalreporter.write_line(
            f"kairos: the full gateway and mock logs and the gateway config are kept in {_WORKDIR}"
        )
