"""Start the HTTP service as a real ``bentoml serve`` subprocess on the loopback interface.

Tests, the serving benchmark and ``make demo`` all use :class:`ServiceProcess`::

    with ServiceProcess(model_uri="models:/persuade-ggl2008@champion", api_keys=["k1"]) as svc:
        httpx.post(f"{svc.base_url}/score", json=..., headers={"Authorization": "Bearer k1"})
    print(svc.log)   # everything the server wrote (stdout and stderr)

``persuade serve`` runs :func:`serve_command` in the foreground.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from features.settings import DEFAULT_WORKERS, Settings  # noqa: F401 - DEFAULT_WORKERS: also importable here
from serving.store import PROJECT_ROOT, tracking_uri

if TYPE_CHECKING:
    import httpx

SERVICE = "serving.service:Persuade"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def service_workers(env: Mapping[str, str] | None = None) -> int:
    """Worker processes of the service: ``PERSUADE_WORKERS`` of ``env`` (default: the process environment)."""
    return Settings.from_env(env).workers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve_command(host: str = "127.0.0.1", port: int = 3000, service: str = SERVICE) -> list[str]:
    """The ``bentoml serve`` command line of the service."""
    return [sys.executable, "-m", "bentoml", "serve", service, "--host", host, "--port", str(port)]


def service_env(model_uri: str | None = None, api_keys: Sequence[str] = (), admin_keys: Sequence[str] = (),
                extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a service process: model URI, keys, the MLflow store, BentoML settings."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    env.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentoml_home"))
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    if model_uri:
        env[Settings.variable("model_uri")] = model_uri
    if api_keys:
        env[Settings.variable("api_keys")] = ",".join(api_keys)
    if admin_keys:
        env[Settings.variable("admin_keys")] = ",".join(admin_keys)
    env.update(extra or {})
    return env


class ServiceProcess:
    """``bentoml serve`` as a subprocess on 127.0.0.1, ready when entered, stopped on exit.

    Parameters
    ----------
    model_uri : str, optional
        ``PERSUADE_MODEL_URI`` (default: the service's default).
    api_keys, admin_keys : sequence of str
        Keys accepted for scoring and for ``/admin/*``.
    port : int, optional
        Default: a free port.
    env : mapping, optional
        More environment variables (``PERSUADE_RELOAD_SECONDS``, ``PERSUADE_WORKERS``, ...).
        ``TMPDIR`` defaults to a folder beside the log, removed with it by :meth:`cleanup`.
    wait_ready : bool
        Wait for ``/readyz`` (a model is loaded); if False, only for ``/livez``.
    timeout : float
        Seconds to wait for the server before giving up (the server is then stopped).
    service : str
        The BentoML service to serve (default: persuade's; the benchmark also serves its baseline).
    command : sequence of str, optional
        Run this instead of ``bentoml serve`` (e.g. ``persuade serve --port N``); it must
        listen on ``host:port``.
    cwd : str or Path, optional
        Working folder of the server (default: the project; a built Bento is served from anywhere).
    """

    def __init__(self, model_uri: str | None = None, api_keys: Sequence[str] = (), admin_keys: Sequence[str] = (),
                 port: int | None = None, host: str = "127.0.0.1", env: Mapping[str, str] | None = None,
                 wait_ready: bool = True, timeout: float = 180.0, service: str = SERVICE,
                 command: Sequence[str] | None = None, cwd: str | Path | None = None):
        if host not in LOOPBACK:
            raise ValueError(f"ServiceProcess binds the loopback interface only, not {host!r}")
        self.host = host
        self.port = port or free_port(host)
        self.env = service_env(model_uri, api_keys, admin_keys, env)
        self.wait_ready = wait_ready
        self.timeout = timeout
        self.command = list(command) if command else serve_command(self.host, self.port, service)
        self.cwd = Path(cwd) if cwd is not None else PROJECT_ROOT
        self._dir = tempfile.TemporaryDirectory(prefix="persuade-service-")
        self.log_path = Path(self._dir.name) / "service.log"
        # the server's own temp files (a worker killed mid-request leaves BentoML's behind) go with the log
        scratch = Path(self._dir.name) / "tmp"
        scratch.mkdir()
        if "TMPDIR" not in (env or {}):
            self.env["TMPDIR"] = str(scratch)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, key: str, *, timeout: float = 120.0) -> httpx.Client:
        """An HTTP client of the service that sends ``key`` as its bearer key (use it in ``with``)."""
        import httpx  # only where a client is made: ``persuade`` imports this module on every start

        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    @property
    def log(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ServiceProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self.wait("/readyz" if self.wait_ready else "/livez", self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        """Poll ``path`` until it answers 200 (raise if the server exits or time runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the service exited with code {self.process.returncode}:\n{self.log[-4000:]}")
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.base_url}{path} not ready after {timeout:.0f} s:\n{self.log[-4000:]}")

    def worker_pids(self) -> set[int]:
        """Pids of the server's live worker processes (killed ones not yet reaped are left out)."""
        import psutil

        live = set()
        if self.process is None:
            return live
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(proc.cmdline()):
                    live.add(proc.pid)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return live

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGINT, then SIGKILL of its process group if it hangs)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        try:  # workers left behind by the server (its own process group)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cleanup(self) -> None:
        """Remove the captured log (call after reading it)."""
        self._dir.cleanup()
