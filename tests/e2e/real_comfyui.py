"""Drive the real ComfyUI test server from Python (pytest or a REPL).

Everything goes through ``scripts/comfyui-test-server.sh``, the single source
of truth for the install, the server's command line, its directories and its
pid file; this module only adds a Python face to it. No pytest fixtures here.

    from tests.e2e.real_comfyui import RealComfyUI, ensure_installed, installed

    ensure_installed()                  # pip installs on first use (~1 min)
    server = RealComfyUI()              # or RealComfyUI(home=..., port=...)
    server.start()                      # returns once GET /system_stats answers
    server.url                          # "http://127.0.0.1:8199"
    server.kill()                       # SIGKILL, as in a crash
    server.restart()
    server.stop()

Environment: ``COMFYUI_TEST_HOME`` and ``COMFYUI_TEST_PORT`` give the defaults
for ``home`` and ``port`` (see the script's header).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "comfyui-test-server.sh"
HOST = "127.0.0.1"
DEFAULT_PORT = 8199
INSTALL_TIMEOUT = 1800.0


def _env(home: Path | str | None = None, port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if home is not None:
        env["COMFYUI_TEST_HOME"] = str(home)
    if port is not None:
        env["COMFYUI_TEST_PORT"] = str(port)
    return env


def _script(
    *args: str,
    env: dict[str, str],
    timeout: float | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        timeout=timeout,
        check=False,
    )


def installed(home: Path | str | None = None) -> bool:
    """True when the server's venv holds exactly the script's pinned packages."""
    return _script("is-installed", env=_env(home)).returncode == 0


def ensure_installed(home: Path | str | None = None, timeout: float = INSTALL_TIMEOUT) -> None:
    """Install the server if needed. pip's output goes straight to this process's stderr."""
    proc = _script("install", env=_env(home), timeout=timeout, capture=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} install failed with exit code {proc.returncode}")


class RealComfyUI:
    """One ComfyUI server process, managed through the script.

    ``start`` is idempotent (a server of ours already answering is reused);
    ``stop`` and ``kill`` do nothing when it is not running.
    """

    def __init__(self, home: Path | str | None = None, port: int | None = None) -> None:
        if port is None:
            port = int(os.environ.get("COMFYUI_TEST_PORT", DEFAULT_PORT))
        self.port: int = int(port)
        self._env = _env(home, self.port)
        paths = self._paths()
        self.home = Path(paths["home"])
        self._env["COMFYUI_TEST_HOME"] = str(self.home)
        self.input_dir = Path(paths["input"])
        self.output_dir = Path(paths["output"])
        self.temp_dir = Path(paths["temp"])
        self.log_path = Path(paths["log"])
        self.pid_file = Path(paths["pid"])
        self.address = f"{HOST}:{self.port}"
        self.url = f"http://{self.address}"

    # -- script plumbing -------------------------------------------------

    def _paths(self) -> dict[str, str]:
        proc = _script("path", "--all", env=self._env)
        if proc.returncode != 0:
            raise RuntimeError(f"{SCRIPT.name} path --all failed:\n{proc.stdout}")
        pairs = (line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        return {key: value for key, value in pairs}

    def _run(self, *args: str, timeout: float | None = None) -> str:
        proc = _script(*args, env=self._env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{SCRIPT.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}"
            )
        return proc.stdout

    # -- public API ------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the running server (from the pid file), or None."""
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def command(self) -> str:
        """The server's command line, shell-quoted, as the script runs it."""
        return self._run("command").strip()

    def start(self, timeout: float = 120) -> None:
        """Start the server (installing first if needed); return once it answers."""
        self._env["COMFYUI_TEST_START_TIMEOUT"] = str(int(max(1, timeout)))
        # Generous outer limit: a first call may also install.
        self._run("start", timeout=timeout + INSTALL_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL it after 10 s; wait until it is gone."""
        self._run("stop", timeout=60)

    def kill(self, wait: float = 10.0) -> None:
        """SIGKILL the server (a crash), then wait until its port stops answering."""
        pid = self.pid
        self._run("kill", timeout=30)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (self.is_up() or (pid is not None and _alive(pid))):
            time.sleep(0.05)

    def restart(self, timeout: float = 120) -> None:
        self.stop()
        self.start(timeout=timeout)

    def is_up(self, timeout: float = 2.0) -> bool:
        """True when GET /system_stats answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/system_stats", timeout=timeout) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_text(self) -> str:
        """The current server log (empty when there is none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RealComfyUI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RealComfyUI(home={str(self.home)!r}, port={self.port})"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
