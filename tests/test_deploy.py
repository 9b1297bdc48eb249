"""Deployment files, each checked by a real validator; the Dockerfile's steps, run as far as a
machine without a Docker engine allows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import final, make_file, remove_tree

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.31.0", "1.33.0"]


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing: install the project with its dev extra"
    return str(path)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


def test_dockerfile_passes_hadolint():
    result = run(tool("hadolint"), str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr
    # No rule silenced without a reason: an ignore directive must carry a comment.
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if "hadolint ignore" in line:
            pytest.fail(f"unexplained hadolint ignore: {line}")


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM python:") == 2  # multi-stage on the official slim image
    assert "-slim" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["efspurge"]' in text
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}" in text
    assert "PYTHONUNBUFFERED=1" in text and "PYTHONDONTWRITEBYTECODE=1" in text
    assert (ROOT / ".dockerignore").exists()


@pytest.mark.parametrize("manifest", ["k8s-cronjob.yaml", "k8s-indexed-job.yaml"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_validate(version, manifest):
    result = run(tool("kubernetes-validate"), "-k", version, "--strict", str(ROOT / manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_cronjob_settings_are_valid_for_the_tool(tmp_path):
    """The environment the manifest sets must be accepted by efspurge itself."""
    import yaml

    doc = yaml.safe_load((ROOT / "k8s-cronjob.yaml").read_text())
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    from efspurge.settings import resolve_settings

    settings = resolve_settings({"path": container["args"][0]}, env)
    deadline = doc["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert 0 < settings.max_runtime < deadline  # efspurge stops itself before the hard stop


def test_indexed_job_shards_match_its_completions():
    import yaml

    doc = yaml.safe_load((ROOT / "k8s-indexed-job.yaml").read_text())
    job = doc["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"]
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["EFSPURGE_SHARD_COUNT"]) == job["completions"]
    from efspurge.settings import resolve_settings

    # Kubernetes adds JOB_COMPLETION_INDEX to each pod: every index must be a valid shard.
    for index in range(job["completions"]):
        settings = resolve_settings(
            {"path": container["args"][0]}, {**env, "JOB_COMPLETION_INDEX": str(index)}
        )
        assert (settings.shard_index, settings.shard_count) == (index, job["completions"])


def test_compose_file_passes_the_compose_schema():
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(ROOT / "docker-compose.yml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_is_a_read_only_dry_run():
    import yaml

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["efspurge"]
    assert "--dry-run" in service["command"]
    assert all(v.endswith(":ro") for v in service["volumes"])


def test_ecs_task_definition_passes_botocore_validation():
    import botocore.session
    from botocore.validate import ParamValidator

    params = json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())
    shape = botocore.session.get_session().get_service_model("ecs")
    report = ParamValidator().validate(
        params, shape.operation_model("RegisterTaskDefinition").input_shape
    )
    assert not report.has_errors(), report.generate_report()
    assert params["requiresCompatibilities"] == ["FARGATE"]
    container = params["containerDefinitions"][0]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert params["volumes"][0]["efsVolumeConfiguration"]["transitEncryption"] == "ENABLED"


@pytest.mark.parametrize(
    ("schema", "files"),
    [
        ("vendor.github-workflows", [".github/workflows/ci.yml", ".github/workflows/docker.yml"]),
        ("vendor.dependabot", [".github/dependabot.yml"]),
    ],
)
def test_github_files_pass_their_schemas(schema, files):
    result = run(
        tool("check-jsonschema"), "--builtin-schema", schema, *(str(ROOT / f) for f in files)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_action_validator():
    validator = ROOT / ".tools" / "node_modules" / ".bin" / "action-validator"
    if not validator.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: action-validator cannot be installed here")
        pytest.fail("action-validator missing: scripts/test.sh installs it into .tools/")
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        result = run(str(validator), str(workflow))
        assert result.returncode == 0, f"{workflow.name}: {result.stdout}{result.stderr}"


def test_docker_workflow_builds_multi_arch_and_pushes_only_on_release():
    import yaml

    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "docker.yml").read_text())
    steps = doc["jobs"]["image"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] == "${{ github.event_name == 'release' }}"


# --- the Dockerfile's steps without Docker ------------------------------------------------------

IMAGE_UID = 10001


def _interpreter_for_unprivileged_user() -> str:
    # The image runs python:*-slim as uid 10001. Here, the system Python stands in for it: the
    # project's own interpreter may live under /root, which uid 10001 cannot enter.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        probe = subprocess.run(
            ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups",
             candidate, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
        )  # fmt: skip
        if probe.returncode == 0:
            return candidate
    pytest.skip("no Python 3.11+ interpreter that a non-root user can run")


@pytest.fixture
def shared_tmp():
    """A scratch directory uid 10001 can traverse (pytest's own tmp tree is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="efspurge-image-"))
    path.chmod(0o755)
    yield path
    remove_tree(path)


def test_wheel_installs_and_runs_as_the_image_user(shared_tmp):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to become uid 10001")
    python = _interpreter_for_unprivileged_user()
    tmp_path = shared_tmp
    # Build stage: `pip wheel --wheel-dir /wheels .` (scripts/test.sh builds the dependencies'
    # wheels at install time into .wheelhouse; the project's own wheel is built fresh here).
    wheels = tmp_path / "wheels"
    wheelhouse = ROOT / ".wheelhouse"
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(wheels), str(ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    if wheelhouse.is_dir():
        for dep in wheelhouse.glob("*.whl"):
            if not dep.name.startswith("efspurge-"):
                shutil.copy(dep, wheels)
    else:
        fetched = run(sys.executable, "-m", "pip", "download", "--dest", str(wheels), str(ROOT))
        assert fetched.returncode == 0, fetched.stderr
    # Runtime stage: a clean environment owned by the image user, installed with --no-index.
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, IMAGE_UID, IMAGE_UID)
    for path in (tmp_path, wheels, *wheels.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    as_user = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    venv = home / "venv"
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "--no-index",
         f"--find-links={wheels}", *map(str, wheels.glob("efspurge-*.whl"))],
    ]  # fmt: skip
    for step in steps:
        result = run(*as_user, *step, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    version = run(*as_user, str(venv / "bin" / "efspurge"), "--version", env=env)
    assert version.returncode == 0 and version.stdout.startswith("efspurge ")
    data = tmp_path / "data"
    make_file(data / "old.log", old=True)
    make_file(data / "new.log", old=False)
    data.chmod(0o755)
    dry = run(*as_user, str(venv / "bin" / "efspurge"), str(data), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert final(dry.stdout)["files_to_purge"] == 1
    assert (data / "old.log").exists()
