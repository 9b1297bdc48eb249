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


@pytest.mark.parametrize(
    "manifest", ["k8s-cronjob.yaml", "k8s-indexed-job.yaml", "deploy/k8s-efs-volume.yaml"]
)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_validate(version, manifest):
    result = run(tool("kubernetes-validate"), "-k", version, "--strict", str(ROOT / manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_compose_file_passes_the_compose_schema():
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(ROOT / "docker-compose.yml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    # Build stage: the locked dependencies (`pip wheel --require-hashes -r
    # requirements-image.txt`: scripts/test.sh runs it at install time into .wheelhouse, so
    # the test needs no network), then the project's own wheel, built fresh here.
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
        fetched = run(
            sys.executable, "-m", "pip", "wheel", "--require-hashes", "--wheel-dir", str(wheels),
            "-r", str(ROOT / "requirements-image.txt"),
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
    lock = tmp_path / "requirements-image.txt"
    shutil.copy(ROOT / "requirements-image.txt", lock)
    lock.chmod(0o644)
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
         f"--find-links={wheels}", "--require-hashes", "-r", str(lock)],
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "--no-index", "--no-deps",
         *map(str, wheels.glob("efspurge-*.whl"))],
        [str(venv / "bin" / "pip"), "check"],
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


# --- one version everywhere; the package as PyPI sees it ----------------------------------------


def version_mentions(root: Path) -> dict[str, list[str]]:
    """Every image tag / VERSION= in the deployment files and docs, by file (the same list
    scripts/set_version.py rewrites)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import set_version
    finally:
        sys.path.pop(0)
    found = {}
    for name in set_version.FILES:
        path = root / name
        if path.exists():
            found[name] = [m.group(2) for m in set_version.MENTIONS.finditer(path.read_text())]
    return found


def version_problems(root: Path, version: str) -> list[str]:
    found = version_mentions(root)
    problems = [
        f"{name}: {tag} is not the package version {version}"
        for name, tags in found.items()
        for tag in tags
        if tag != version
    ]
    for name in ("Dockerfile", "k8s-cronjob.yaml", "k8s-indexed-job.yaml", "docker-compose.yml",
                 "deploy/ecs-task-definition.json"):  # fmt: skip
        if not found.get(name):
            problems.append(f"{name}: no image tag or VERSION found")
    return problems


def copy_of_repo(tmp_path: Path) -> Path:
    """The deployment files and docs, copied: tests break the copy, never the original."""
    copy = tmp_path / "repo"
    for rel in ("Dockerfile", "k8s-cronjob.yaml", "k8s-indexed-job.yaml", "docker-compose.yml",
                "README.md", "deploy", "docs", "src/efspurge/__init__.py"):  # fmt: skip
        src, dst = ROOT / rel, copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.png"))
        else:
            shutil.copy(src, dst)
    return copy


def test_the_version_has_one_source():
    import tomllib

    from efspurge import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "efspurge.__version__"}
    assert version_problems(ROOT, __version__) == []


def test_a_stale_image_tag_is_caught(tmp_path):
    from efspurge import __version__

    for name in ("k8s-cronjob.yaml", "deploy/ecs-task-definition.json", "Dockerfile"):
        copy = copy_of_repo(tmp_path / name.replace("/", "_"))
        path = copy / name
        path.write_text(path.read_text().replace(__version__, "1.0.0"))
        assert any(p.startswith(f"{name}: 1.0.0") for p in version_problems(copy, __version__))


def test_set_version_rewrites_every_mention(tmp_path):
    copy = copy_of_repo(tmp_path)
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    result = run(sys.executable, str(copy / "scripts" / "set_version.py"), "9.8.7")
    assert result.returncode == 0, result.stderr
    assert '__version__ = "9.8.7"' in (copy / "src" / "efspurge" / "__init__.py").read_text()
    assert version_problems(copy, "9.8.7") == []


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path):
    """PEP 639 metadata (an SPDX license expression and the license file), the URLs, and no
    setuptools deprecation warning about the license."""
    from efspurge import __version__

    out = tmp_path / "dist"
    built = run(
        sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
        "--outdir", str(out), str(ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    output = (built.stdout + built.stderr).lower().splitlines()
    assert not [line for line in output if "license" in line and "deprecat" in line]
    sdist = out / f"efspurge-{__version__}.tar.gz"
    wheel = out / f"efspurge-{__version__}-py3-none-any.whl"
    assert sdist.exists() and wheel.exists(), sorted(p.name for p in out.iterdir())
    check = run(tool("twine"), "check", "--strict", str(sdist), str(wheel))
    assert check.returncode == 0, check.stdout + check.stderr
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"efspurge-{__version__}.dist-info/METADATA").decode()
        names = z.namelist()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    assert "Project-URL: Source, https://github.com/efspurge/efspurge" in metadata
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata
    assert "Author: The efspurge authors" in metadata or "efspurge authors" in metadata
    assert f"efspurge-{__version__}.dist-info/licenses/LICENSE" in names


def test_the_image_lock_matches_pyproject():
    """requirements-image.txt pins every runtime dependency at a version pyproject.toml
    accepts, with hashes for every pin (the image installs it with --require-hashes)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "requirements-image.txt").read_text()
    assert "uv pip compile pyproject.toml" in text  # how it was made (see CONTRIBUTING)
    pins: dict[str, str] = {}
    hashes: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.split(" ")[0].partition("==")
            assert version, f"not pinned with ==: {line}"
            current = canonicalize_name(name)
            pins[current] = version
            hashes[current] = 0
        elif "--hash=sha256:" in line:
            hashes[current] += 1
    assert all(hashes.values()), hashes
    for dep in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is a dependency but not in requirements-image.txt"
        assert dep.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {dep}"


def test_the_dockerfile_pins_its_base_and_installs_from_the_lock():
    import re

    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(froms) == 2 and froms[0] == froms[1]  # multi-stage on one base
    assert re.fullmatch(r"python:3\.\d+-slim@sha256:[0-9a-f]{64}", froms[0]), froms[0]
    # Literal FROM lines: dependabot cannot see an image set through an ARG.
    assert not re.search(r"^ARG .*\n(?:.*\n)*?FROM .*\$", text, flags=re.M)
    assert "--require-hashes --wheel-dir /wheels -r requirements-image.txt" in text
    assert "--require-hashes \\\n      -r /tmp/requirements-image.txt" in text
    assert "pip check" in text
    assert "USER 10001:10001" in text and 'ENTRYPOINT ["efspurge"]' in text
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}" in text
    assert "PYTHONUNBUFFERED=1" in text and "PYTHONDONTWRITEBYTECODE=1" in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements-image.txt" in ignore and ignore[1] == "*"


# --- the GitHub workflows and dependabot ---------------------------------------------------------


def workflows() -> dict[str, dict]:
    import yaml

    return {
        p.name: yaml.safe_load(p.read_text())
        for p in sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    }


def workflow_problems(docs: dict[str, dict]) -> list[str]:
    import re

    problems = []
    for name, doc in docs.items():
        if doc.get("permissions") != {"contents": "read"}:
            problems.append(f"{name}: top-level permissions must be contents: read")
        on = doc.get(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
        for job_name, job in doc["jobs"].items():
            where = f"{name}:{job_name}"
            writes = (job.get("permissions") or {}).get("packages") == "write"
            if writes and "github.event_name == 'push'" not in str(job.get("if", "")):
                problems.append(f"{where}: packages: write on a job that also runs for PRs")
            if writes and "pull_request" in on and not job.get("if"):
                problems.append(f"{where}: packages: write without a condition")
            pushes = any("login-action" in s.get("uses", "") for s in job["steps"])
            if pushes and not writes:
                problems.append(f"{where}: logs in to a registry without packages: write")
            for step in job["steps"]:
                uses = step.get("uses")
                if uses and not re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses):
                    problems.append(f"{where}: {uses} is not pinned to a commit SHA")
                keeps = (step.get("with") or {}).get("persist-credentials") is not False
                if uses and uses.startswith("actions/checkout@") and keeps:
                    problems.append(f"{where}: checkout keeps the token (persist-credentials)")
    return problems


def test_workflows_pin_actions_and_keep_write_access_to_the_publishing_job():
    docs = workflows()
    assert workflow_problems(docs) == []
    raw = (ROOT / ".github" / "workflows" / "docker.yml").read_text()
    assert raw.count("@") == raw.count(" # v")  # each pin says which release it is
    docker = docs["docker.yml"]
    smoke = "\n".join(s.get("run", "") for s in docker["jobs"]["test"]["steps"])
    assert "efspurge:smoke --version" in smoke and "--dry-run" in smoke and ":/data:ro" in smoke
    builds = [
        s for j in docker["jobs"].values() for s in j["steps"] if "build-push" in s.get("uses", "")
    ]
    assert {b["with"].get("platforms") for b in builds} >= {"linux/amd64,linux/arm64"}
    assert [b["with"]["push"] for b in builds if b["with"].get("push")] == [True]
    package = "\n".join(s.get("run", "") for s in docs["ci.yml"]["jobs"]["package"]["steps"])
    assert "python -m build --sdist --wheel" in package and "twine check --strict" in package


def test_workflow_checks_catch_each_breakage():
    import copy

    good = workflows()
    breakages = {
        "not pinned": lambda d: d["ci.yml"]["jobs"]["lint"]["steps"][0].update(
            uses="actions/checkout@v4"
        ),
        "persist-credentials": lambda d: d["ci.yml"]["jobs"]["test"]["steps"][0].pop("with"),
        "packages: write on a job that also runs for PRs": lambda d: d["docker.yml"]["jobs"][
            "publish"
        ].pop("if"),
        "top-level permissions": lambda d: d["ci.yml"].update(permissions="write-all"),
        "logs in to a registry without": lambda d: d["docker.yml"]["jobs"]["publish"].pop(
            "permissions"
        ),
    }
    for expected, breaking in breakages.items():
        docs = copy.deepcopy(good)
        breaking(docs)
        assert any(expected in p for p in workflow_problems(docs)), expected


def test_dependabot_watches_the_lock_the_actions_and_the_base_image():
    import yaml

    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert {(u["package-ecosystem"], u["directory"]) for u in updates} == {
        ("pip", "/"),
        ("github-actions", "/"),
        ("docker", "/"),
    }
    # dependabot's docker ecosystem reads `FROM image:tag@digest`, not `FROM ${ARG}`.
    assert "FROM ${" not in (ROOT / "Dockerfile").read_text()
    assert (ROOT / "requirements-image.txt").exists()  # the pip ecosystem updates it


# --- the manifests, checked for meaning -----------------------------------------------------------
#
# Each check reads a manifest the way Kubernetes / ECS / Compose would and runs the command it
# configures through efspurge's own parser (efspurge.cli.build_parser, then
# efspurge.resolve.resolve_settings). Each is shown to catch its breakage on a broken copy.


def load_yaml(name: str):
    import yaml

    return yaml.safe_load((ROOT / name).read_text())


def efspurge_argv(container: dict) -> list[str]:
    """The arguments efspurge gets: the image's entrypoint is efspurge; the Kubernetes
    manifests run it through a /bin/sh -c wrapper whose $0 comes first."""
    command = container.get("command") or []
    args = list(container.get("args") or [])
    if command[:2] == ["/bin/sh", "-c"]:
        assert 'efspurge "$@"' in args[0]
        return args[2:]
    assert not command or command == ["efspurge"], command
    return args


def settings_problems(argv: list[str], env: dict[str, str]):
    """(settings or None, problems) for efspurge ARGV with the manifest's environment."""
    from efspurge.cli import build_parser
    from efspurge.resolve import resolve_settings
    from efspurge.settings import OPTIONS, PATH_ENV, SettingsError

    known = {spec.env for spec in OPTIONS} | {PATH_ENV}
    problems = [
        f"unknown variable {k}" for k in env if k.startswith("EFSPURGE_") and k not in known
    ]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        return None, [*problems, f"efspurge rejects its arguments {argv}"]
    try:
        return resolve_settings(vars(args), env), problems
    except SettingsError as exc:
        return None, [*problems, f"efspurge rejects its settings: {exc}"]


def inside(path: str, mount: str) -> bool:
    path, mount = os.path.normpath(path), os.path.normpath(mount)
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def k8s_problems(doc: dict) -> list[str]:
    from efspurge import __version__

    problems = []
    job = doc["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    names = {c["name"] for c in pod["containers"]}
    policy = job.get("podFailurePolicy")
    if policy and pod.get("restartPolicy") != "Never":
        problems.append("podFailurePolicy needs restartPolicy: Never")
    for rule in (policy or {}).get("rules", []):
        named = (rule.get("onExitCodes") or {}).get("containerName")
        if named is not None and named not in names:
            problems.append(f"podFailurePolicy containerName {named} names no container")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false")
    if "fsGroup" in (pod.get("securityContext") or {}):
        problems.append("fsGroup set: the kubelet may re-own the whole NFS tree")
    indexed = job.get("completionMode") == "Indexed"
    for container in pod["containers"]:
        if not container["image"].endswith(f":{__version__}"):
            problems.append(f"image {container['image']} is not version {__version__}")
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        argv = efspurge_argv(container)
        indexes = range(job.get("completions", 1)) if indexed else [None]
        for index in indexes:
            extra = {} if index is None else {"JOB_COMPLETION_INDEX": str(index)}
            settings, found = settings_problems(argv, {**env, **extra})
            problems += found
            if settings is None:
                break
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            if not any(inside(settings.path, m) for m in mounts):
                problems.append(f"PATH {settings.path} is in no volumeMount {mounts}")
            deadline = job.get("activeDeadlineSeconds")
            if deadline and not 0 < settings.max_runtime < deadline:
                problems.append(
                    f"--max-runtime {settings.max_runtime} s is not below "
                    f"activeDeadlineSeconds {deadline}"
                )
            if indexed:
                count = job.get("completions")
                if not (count == job.get("parallelism") == settings.shard_count):
                    problems.append(
                        f"completions {count} / parallelism {job.get('parallelism')} "
                        f"disagree with the shard count {settings.shard_count}"
                    )
                    break
                if settings.shard_index != index:
                    problems.append(f"pod {index} would run shard {settings.shard_index}")
    return problems


def ecs_problems(doc: dict) -> list[str]:
    from efspurge import __version__

    problems = []
    for container in doc["containerDefinitions"]:
        if container.get("stopTimeout", 30) > 120:
            problems.append(f"stopTimeout {container['stopTimeout']} is above Fargate's 120 s")
        if not container["image"].endswith(f":{__version__}"):
            problems.append(f"image {container['image']} is not version {__version__}")
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        settings, found = settings_problems(list(container.get("command", [])), env)
        problems += found
        if settings is not None:
            mounts = [m["containerPath"] for m in container.get("mountPoints", [])]
            if not any(inside(settings.path, m) for m in mounts):
                problems.append(f"PATH {settings.path} is in no containerPath {mounts}")
    return problems


def compose_problems(doc: dict) -> list[str]:
    from efspurge import __version__

    problems = []
    for name, service in doc["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        settings, found = settings_problems(list(service["command"]), env)
        problems += found
        if settings is not None:
            if not settings.dry_run:
                problems.append(f"{name}: not a dry run (documented as a preview)")
            targets = [v.split(":")[1] for v in service.get("volumes", [])]
            if not any(inside(settings.path, t) for t in targets):
                problems.append(f"{name}: PATH {settings.path} is in no volume {targets}")
        if not service.get("image", "").endswith(f":{__version__}"):
            problems.append(f"{name}: image {service.get('image')} is not version {__version__}")
    return problems


def test_the_shipped_manifests_mean_what_they_say():
    assert k8s_problems(load_yaml("k8s-cronjob.yaml")) == []
    assert k8s_problems(load_yaml("k8s-indexed-job.yaml")) == []
    assert (
        ecs_problems(json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())) == []
    )
    assert compose_problems(load_yaml("docker-compose.yml")) == []


def _container(doc):
    return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _env(doc, name, value):
    env = _container(doc)["env"]
    for e in env:
        if e["name"] == name:
            e["value"] = value
            return
    env.append({"name": name, "value": value})


def _job(doc):
    return doc["spec"]["jobTemplate"]["spec"]


K8S_BREAKAGES = {
    "restartPolicy OnFailure": (
        lambda d: _job(d)["template"]["spec"].update(restartPolicy="OnFailure"),
        "needs restartPolicy: Never",
    ),
    "containerName of no container": (
        lambda d: _job(d)["podFailurePolicy"]["rules"][0]["onExitCodes"].update(
            containerName="purger"
        ),
        "names no container",
    ),
    "unknown variable": (lambda d: _env(d, "EFSPURGE_MAX_AGE", "30"), "unknown variable"),
    "value the tool rejects": (
        lambda d: _env(d, "EFSPURGE_MAX_RUNTIME", "3 hours"),
        "rejects its settings",
    ),
    "flag the tool does not know": (
        lambda d: _container(d)["args"].append("--older-than=30"),
        "rejects its arguments",
    ),
    "mountPath without the PATH": (
        lambda d: _container(d)["volumeMounts"][0].update(mountPath="/mnt/efs"),
        "is in no volumeMount",
    ),
    "max-runtime not below the deadline": (
        lambda d: _env(d, "EFSPURGE_MAX_RUNTIME", "4h"),
        "is not below activeDeadlineSeconds",
    ),
    "no max-runtime": (
        lambda d: _container(d)["env"].remove(
            next(e for e in _container(d)["env"] if e["name"] == "EFSPURGE_MAX_RUNTIME")
        ),
        "is not below activeDeadlineSeconds",
    ),
    "image tag": (
        lambda d: _container(d).update(image="ghcr.io/efspurge/efspurge:1.0.0"),
        "is not version",
    ),
    "service account token": (
        lambda d: _job(d)["template"]["spec"].pop("automountServiceAccountToken"),
        "automountServiceAccountToken",
    ),
    "fsGroup": (
        lambda d: _job(d)["template"]["spec"]["securityContext"].update(fsGroup=10001),
        "fsGroup",
    ),
}


@pytest.mark.parametrize("manifest", ["k8s-cronjob.yaml", "k8s-indexed-job.yaml"])
@pytest.mark.parametrize("breakage", list(K8S_BREAKAGES))
def test_each_kubernetes_breakage_is_caught(manifest, breakage):
    doc = load_yaml(manifest)
    breaking, expected = K8S_BREAKAGES[breakage]
    breaking(doc)
    problems = k8s_problems(doc)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda j: j.update(completions=3), "disagree with the shard count"),
        (lambda j: j.update(parallelism=2), "disagree with the shard count"),
        (lambda j: _env({"spec": {"jobTemplate": {"spec": j}}}, "EFSPURGE_SHARD_COUNT", "8"),
         "disagree with the shard count"),
        (lambda j: _env({"spec": {"jobTemplate": {"spec": j}}}, "EFSPURGE_SHARD_INDEX", "0"),
         "would run shard 0"),
    ],
    ids=["completions", "parallelism", "shard-count", "fixed-index"],
)  # fmt: skip
def test_indexed_job_breakages_are_caught(change, expected):
    doc = load_yaml("k8s-indexed-job.yaml")
    change(_job(doc))
    problems = k8s_problems(doc)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(stopTimeout=300), "above Fargate's 120 s"),
        (lambda c: c["mountPoints"][0].update(containerPath="/data"), "is in no containerPath"),
        (lambda c: c["environment"].append({"name": "EFSPURGE_DRYRUN", "value": "1"}),
         "unknown variable"),
        (lambda c: c["environment"].append({"name": "EFSPURGE_MAX_DELETE", "value": "-1"}),
         "rejects its settings"),
        (lambda c: c.update(image=c["image"].rsplit(":", 1)[0] + ":1.0.0"), "is not version"),
    ],
    ids=["stop-timeout", "container-path", "unknown-variable", "bad-value", "image-tag"],
)  # fmt: skip
def test_ecs_breakages_are_caught(change, expected):
    doc = json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())
    change(doc["containerDefinitions"][0])
    problems = ecs_problems(doc)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["command"].remove("--dry-run"), "not a dry run"),
        (lambda s: s.update(volumes=["/mnt/efs:/srv:ro"]), "is in no volume"),
        (lambda s: s["environment"].update(EFSPURGE_LOGLEVEL="INFO"), "unknown variable"),
        (lambda s: s.update(image="efspurge:latest"), "is not version"),
    ],
    ids=["no-dry-run", "volume", "unknown-variable", "image-tag"],
)
def test_compose_breakages_are_caught(change, expected):
    doc = load_yaml("docker-compose.yml")
    change(doc["services"]["efspurge"])
    problems = compose_problems(doc)
    assert any(expected in p for p in problems), problems


def test_compose_dry_run_mounts_the_data_read_only():
    service = load_yaml("docker-compose.yml")["services"]["efspurge"]
    assert all(v.endswith(":ro") for v in service["volumes"])


def test_the_indexed_job_spreads_this_runs_pods_over_nodes():
    spread = _job(load_yaml("k8s-indexed-job.yaml"))["template"]["spec"][
        "topologySpreadConstraints"
    ]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread[0]["matchLabelKeys"] == ["batch.kubernetes.io/controller-uid"]


# --- the exit-code wrapper of the Kubernetes manifests, run for real -----------------------------


def wrapper_script(manifest: str) -> str:
    return _container(load_yaml(manifest))["args"][0]


@pytest.fixture
def stub_efspurge(tmp_path):
    """An `efspurge` on PATH that exits with $STUB_EXIT, or, with STUB_WAIT, waits for SIGTERM
    and exits 143 like the real one; it records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "efspurge"
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$@" > "$STUB_ARGS"\n'
        'if [ -n "$STUB_WAIT" ]; then\n'
        "  trap 'exit 143' TERM\n"
        '  touch "$STUB_WAIT"\n'
        "  while :; do sleep 0.05; done\n"
        "fi\n"
        'exit "$STUB_EXIT"\n'
    )
    stub.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("manifest", ["k8s-cronjob.yaml", "k8s-indexed-job.yaml"])
@pytest.mark.parametrize(
    ("code", "ok_codes", "expected"),
    [(0, "1 5", 0), (1, "1 5", 0), (5, "1 5", 0), (2, "1 5", 2), (3, "1 5", 3), (4, "1 5", 4),
     (1, "", 1), (5, "", 5)],
)  # fmt: skip
def test_the_wrapper_passes_exit_codes_as_configured(
    manifest, code, ok_codes, expected, stub_efspurge, tmp_path
):
    env = {
        "PATH": f"{stub_efspurge}:/usr/bin:/bin",
        "STUB_EXIT": str(code),
        "STUB_ARGS": str(tmp_path / "args"),
        "JOB_SUCCESS_EXIT_CODES": ok_codes,
    }
    script = wrapper_script(manifest)
    result = run("/bin/sh", "-c", script, "efspurge", "/data", "--dry-run", env=env)
    assert result.returncode == expected
    assert (tmp_path / "args").read_text().split() == ["/data", "--dry-run"]


def test_the_wrapper_forwards_sigterm(stub_efspurge, tmp_path):
    import signal
    import time

    ready = tmp_path / "ready"
    env = {
        "PATH": f"{stub_efspurge}:/usr/bin:/bin",
        "STUB_WAIT": str(ready),
        "STUB_ARGS": str(tmp_path / "args"),
        "JOB_SUCCESS_EXIT_CODES": "1 5",
    }
    proc = subprocess.Popen(
        ["/bin/sh", "-c", wrapper_script("k8s-cronjob.yaml"), "efspurge", "/data"], env=env
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143  # efspurge's own code, after its clean stop


def test_the_wrapper_runs_the_real_tool(tmp_path):
    make_file(tmp_path / "data" / "old", old=True)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "JOB_SUCCESS_EXIT_CODES": "1 5"}
    script = wrapper_script("k8s-cronjob.yaml")
    result = run("/bin/sh", "-c", script, "efspurge", str(tmp_path / "data"), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert final(result.stdout)["files_to_purge"] == 1


# --- the EFS volume and the IAM policies ---------------------------------------------------------


def test_efs_volume_uses_an_access_point_and_binds_the_claim_the_jobs_use():
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s-efs-volume.yaml").read_text()))
    pv = next(d for d in docs if d["kind"] == "PersistentVolume")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    fs, _, access_point = pv["spec"]["csi"]["volumeHandle"].partition("::")
    assert pv["spec"]["csi"]["driver"] == "efs.csi.aws.com"
    assert fs.startswith("fs-") and access_point.startswith("fsap-")
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == ""
    for manifest in ("k8s-cronjob.yaml", "k8s-indexed-job.yaml"):
        volumes = _job(load_yaml(manifest))["template"]["spec"]["volumes"]
        assert volumes[0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_iam_policies_grant_what_the_task_definition_uses():
    task = json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())
    role = json.loads((ROOT / "deploy" / "iam-task-role-policy.json").read_text())
    execution = json.loads((ROOT / "deploy" / "iam-execution-role-policy.json").read_text())
    trust = json.loads((ROOT / "deploy" / "iam-ecs-tasks-trust-policy.json").read_text())
    container = task["containerDefinitions"][0]
    efs = task["volumes"][0]["efsVolumeConfiguration"]

    def actions(policy):
        out = set()
        for s in policy["Statement"]:
            out |= {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"])
        return out

    for policy in (role, execution, trust):
        assert policy["Version"] == "2012-10-17"
    # The task role: IAM authorization to the file system through the access point.
    assert efs["authorizationConfig"]["iam"] == "ENABLED"
    assert {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"} <= actions(role)
    text = json.dumps(role)
    assert f"file-system/{efs['fileSystemId']}" in text
    assert f"access-point/{efs['authorizationConfig']['accessPointId']}" in text
    # The execution role: pull the image, write the logs, and create the group when asked.
    options = container["logConfiguration"]["options"]
    needed = {"ecr:GetAuthorizationToken", "ecr:BatchGetImage", "logs:CreateLogStream",
              "logs:PutLogEvents"}  # fmt: skip
    if options.get("awslogs-create-group") == "true":
        needed.add("logs:CreateLogGroup")
    assert needed <= actions(execution)
    assert f"log-group:{options['awslogs-group']}" in json.dumps(execution)
    repository = container["image"].split("/", 1)[1].rsplit(":", 1)[0]
    assert f"repository/{repository}" in json.dumps(execution)
    # Both roles are assumed by ECS tasks, and the task definition names them.
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert task["taskRoleArn"].endswith("role/efspurge-task")
    assert task["executionRoleArn"].endswith("role/efspurge-execution")
