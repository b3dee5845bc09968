"""docker-compose.yml and the Dockerfiles, checked without Docker: every service's build, command,
option, port, variable and cross-service address must refer to something the project (or the
tool it runs) really provides.

    python -m pytest tests/test_deploy.py -q
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
# images we do not build; the variables they read are the ones their documentation names
EXTERNAL_IMAGES = {"postgres": {"env": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}, "ports": {5432}}}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value, seen: dict[str, tuple[str, str] | None]):
    """Compose's ${VAR:-default} / ${VAR:?message} interpolation with an empty environment:
    defaults apply, required variables read as "<VAR>"; ``seen`` records (kind, text) per variable."""
    if isinstance(value, dict):
        return {k: _interpolate(v, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, seen) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        seen[m.group(1)] = (m.group(2), m.group(3)) if m.group(2) else None
        if m.group(2) and m.group(2).endswith("?"):
            return f"<{m.group(1)}>"
        return m.group(3) or ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose():
    raw = yaml.safe_load(COMPOSE.read_text())
    seen: dict[str, tuple[str, str] | None] = {}
    data = _interpolate(raw, seen)
    return data, seen


def _commands(service: dict) -> list[list[str]]:
    """A service's command as argv lists (``sh -c "a && b"`` -> [a, b])."""
    cmd = service.get("command")
    if cmd is None:
        return []
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def _cli(program: str) -> click.Group:
    if program == "promptsearch":
        import typer

        from promptsearch.cli import app

        return typer.main.get_command(app)
    if program == "mlflow":
        from mlflow.cli import cli

        return cli
    if program == "ray":
        from ray.scripts.scripts import cli

        return cli
    raise AssertionError(f"command {program!r} is not one the images provide (promptsearch, mlflow, ray)")


def _options(argv: list[str]) -> dict[str, str | None]:
    """``--opt value`` / ``--opt=value`` / ``--flag`` -> {opt: value}; ``exec`` prefixes dropped."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
                out[k] = v
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[a] = argv[i + 1]
                i += 1
            else:
                out[a] = None
        i += 1
    return out


def _listening_ports(name: str, service: dict) -> set[int]:
    image = (service.get("image") or "").split(":")[0]
    if image in EXTERNAL_IMAGES and "build" not in service:
        return set(EXTERNAL_IMAGES[image]["ports"])
    ports = set()
    for argv in _commands(service):
        for k, v in _options(argv).items():
            if k.endswith("port") and v is not None:
                ports.add(int(v))
    return ports


def test_every_service_is_built_here_or_a_known_image(compose):
    data, _ = compose
    assert set(data["services"]) >= {"postgres", "mlflow", "ray-head", "ray-gpu-worker", "api"}
    for name, svc in data["services"].items():
        if "build" in svc:
            ctx = REPO / svc["build"].get("context", ".")
            dockerfile = ctx / svc["build"].get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile.relative_to(REPO)} does not exist"
        else:
            assert svc["image"].split(":")[0] in EXTERNAL_IMAGES, f"{name}: unknown external image {svc['image']}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "workers/Dockerfile"])
def test_dockerfile_copies_existing_paths(dockerfile):
    path = REPO / dockerfile
    assert path.is_file(), f"{dockerfile} is missing (docker-compose.yml builds it)"
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    copies = [shlex.split(ln)[1:-1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln]
    assert copies, f"{dockerfile} copies nothing from the repository"
    for sources in copies:
        for src in sources:
            if src.startswith("--"):
                continue
            assert any(REPO.glob(src)), f"{dockerfile}: COPY source {src} does not exist in the repository"
    text = path.read_text()
    assert "pip install" in text and ("-e ." in text or "install ." in text or ".[" in text), \
        f"{dockerfile} must install the promptsearch project"


def _sub(group: click.Group, name: str):
    """A group's subcommand as the command line finds it (``promptsearch`` imports a command's
    module only when asked for it)."""
    if not hasattr(group, "get_command"):
        return None
    return group.get_command(group.context_class(group), name)


def test_commands_and_options_exist(compose):
    """Each command is a real subcommand of promptsearch / mlflow / ray and every option exists."""
    data, _ = compose
    checked = 0
    for name, svc in data["services"].items():
        for argv in _commands(svc):
            if argv[0] == "exec":
                argv = argv[1:]
            group = _cli(argv[0])
            sub = _sub(group, argv[1])
            assert sub is not None, f"{name}: `{argv[0]} {argv[1]}` is not a command"
            known = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
            for opt in _options(argv[2:]):
                assert opt in known, f"{name}: `{argv[0]} {argv[1]}` has no option {opt}"
            checked += 1
    assert checked >= 5
    # the Dockerfile's default command too
    cmd = next(ln for ln in (REPO / "Dockerfile").read_text().splitlines() if ln.startswith("CMD "))
    argv = yaml.safe_load(cmd.removeprefix("CMD "))
    sub = _sub(_cli(argv[0]), argv[1])
    known = {o for p in sub.params for o in p.opts}
    assert set(_options(argv[2:])) <= known


def test_ports_match_what_the_commands_listen_on(compose):
    data, _ = compose
    for name, svc in data["services"].items():
        for mapping in svc.get("ports", []):
            container = int(str(mapping).split(":")[-1].split("/")[0])
            assert container in _listening_ports(name, svc), \
                f"{name}: publishes {container} but its command listens on {_listening_ports(name, svc)}"
    exposed = re.findall(r"^EXPOSE (\d+)", (REPO / "Dockerfile").read_text(), re.M)
    cmd_port = re.search(r'"--port", "(\d+)"', (REPO / "Dockerfile").read_text()).group(1)
    assert exposed == [cmd_port]


def _read_by_project(var: str) -> bool:
    for path in [*REPO.glob("promptsearch/**/*.py"), *REPO.glob("workers/**/*.py")]:
        if re.search(rf"[\"']{var}[\"']", path.read_text()):
            return True
    return any(f"${{{var}" in p.read_text() for p in REPO.glob("deploy/*.yaml"))  # job defaults expand ${VAR}


def _read_by_tool(var: str) -> bool:
    if var.startswith("MLFLOW_"):
        import mlflow.environment_variables as env

        return hasattr(env, var)
    if var.startswith("RAY_"):
        import ray

        root = Path(ray.__file__).parent
        return any(var in p.read_text(errors="ignore") for p in root.glob("_private/**/*.py"))
    return False


def test_environment_variables_are_read_by_something(compose):
    data, _ = compose
    for name, svc in data["services"].items():
        env = svc.get("environment") or {}
        names = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        image = (svc.get("image") or "").split(":")[0]
        for var in names:
            if "build" not in svc and image in EXTERNAL_IMAGES:
                assert var in EXTERNAL_IMAGES[image]["env"], f"{name}: {image} does not read {var}"
                continue
            assert _read_by_project(var) or _read_by_tool(var), f"{name}: nothing reads {var}"


def test_compose_variables_have_defaults_or_say_why(compose):
    """Each ${VAR} has a default (maybe empty) or is required with a message (``${VAR:?how}``):
    the secrets have no default, and Compose names the missing one and how to make it."""
    _, seen = compose
    bare = [v for v, how in seen.items() if how is None]
    assert not bare, f"variables with neither a default nor a message: {bare}"
    required = {v for v, (kind, text) in seen.items() if kind.endswith("?")}
    assert required == {"RAY_AUTH_TOKEN"} and all(seen[v][1].strip() for v in required)
    assert {"PROMPTSEARCH_API_TOKEN", "PROMPTSEARCH_DATA_DIR", "RAY_GPU_WORKERS"} <= set(seen)


def test_cross_service_addresses(compose):
    """host:port in variables and commands name a service that listens on that port."""
    data, _ = compose
    services = data["services"]
    found = 0
    for name, svc in services.items():
        env = svc.get("environment") or {}
        texts = [str(v) for v in (env.values() if isinstance(env, dict) else env)]
        texts += [" ".join(argv) for argv in _commands(svc)]
        for text in texts:
            for host, port in re.findall(r"(?:^|[/@=\s])([a-z][a-z0-9-]*):(\d{2,5})\b", text):
                if host in ("localhost",) or host not in services and not host.startswith(tuple(services)):
                    continue
                assert host in services, f"{name}: {host}:{port} is not a service"
                assert int(port) in _listening_ports(host, services[host]), \
                    f"{name}: {host}:{port}, but {host} listens on {_listening_ports(host, services[host])}"
                found += 1
        for dep in (svc.get("depends_on") or []):
            assert dep in services, f"{name}: depends_on {dep}, no such service"
    assert found >= 3  # mlflow->postgres, api->mlflow, worker/api->ray-head


def test_volumes_declared_and_gpu_reserved(compose):
    data, _ = compose
    declared = set(data.get("volumes") or {})
    for name, svc in data["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: volume {src} is not declared"
    workers = data["services"]["ray-gpu-worker"]
    devices = workers["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "--address=ray-head:6379" in workers["command"]
    # MLflow: a database-backed store, an artifact volume, one worker, no job execution
    mlflow = data["services"]["mlflow"]
    assert "postgresql" in mlflow["command"] and "/mlartifacts" in mlflow["command"]
    assert any(v.startswith("mlartifacts:") for v in mlflow["volumes"])
    assert "--workers 1" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # Ray's token auth stays on: every Ray container and the API (a Ray node + driver) have the token
    for svc in ("ray-head", "ray-gpu-worker", "api"):
        env = data["services"][svc]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "<RAY_AUTH_TOKEN>"
    # the API shares the workspace volume with the Ray containers, at the same path
    api_ws = [v for v in data["services"]["api"]["volumes"] if v.startswith("workspace:")]
    assert api_ws == [v for v in workers["volumes"] if v.startswith("workspace:")]


def test_api_job_defaults_file_is_a_valid_job(compose, monkeypatch):
    """The --job-defaults file the API service loads is in the image and validates as a job."""
    from promptsearch.jobs import JobSpec, _expand_env

    data, _ = compose
    api = data["services"]["api"]
    argv = next(a for a in _commands(api) if "serve" in a)
    path = _options(argv)["--job-defaults"]
    assert path.startswith("/app/"), "the image's WORKDIR is /app"
    local = REPO / path.removeprefix("/app/")
    assert local.is_file(), f"{path} is not in the repository"
    top = local.relative_to(REPO).parts[0]
    assert re.search(rf"^COPY {top} \./{top}$", (REPO / "Dockerfile").read_text(), re.M), f"Dockerfile does not copy {top}/"
    for k, v in api["environment"].items():
        monkeypatch.setenv(k, str(v))
    spec = JobSpec.model_validate(_expand_env(yaml.safe_load(local.read_text()), (), {}, str(local)))
    assert spec.ray_address == "auto" and spec.data_root == "/data" and spec.resources.gpu > 0
    assert spec.backbone.weights.startswith("/weights/")


def test_api_job_defaults_fit_the_servers_default_limits(compose, monkeypatch):
    """The compose API's job defaults must pass its own limits, or ``promptsearch serve`` refuses to start."""
    from promptsearch.jobs import JobSpec, _expand_env
    from promptsearch.service.requests import limit_problems
    from promptsearch.service.settings import Limits

    data, _ = compose
    api = data["services"]["api"]
    for k, v in api["environment"].items():
        monkeypatch.setenv(k, str(v))
    local = REPO / "deploy" / "job-defaults.yaml"
    raw = yaml.safe_load(local.read_text())
    limits = Limits.model_validate(raw.pop("limits", {}))
    spec = JobSpec.model_validate(_expand_env(raw, (), {}, str(local)))
    assert limit_problems(spec, limits) == []
