"""The deployment files, checked without a Docker engine or a cluster: compose.yaml (services,
commands parsed by the programs' own CLIs, ports, environment, healthchecks, start order),
the Dockerfiles (every COPY source exists and is not ignored, pinned torch, offline hub),
docker/dagster.yaml against Dagster's schema and loaded against a real PostgreSQL, the docker
workspace, the MLflow backend store URI against PostgreSQL, the Helm values and k8s executor
config against dagster-k8s's schemas, and the DeepSpeed launch in docs/deploy.md against
DeepSpeed's own parser."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
K8S = REPO / "deploy" / "k8s"
SERVICES = {"postgres", "simpersona_code", "dagster_webserver", "dagster_daemon", "mlflow"}
# services that load the Dagster instance (docker/dagster.yaml)
INSTANCE_SERVICES = ("simpersona_code", "dagster_webserver", "dagster_daemon")


# ---- helpers -------------------------------------------------------------------------------
def dotenv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"compose needs ${name}: {arg}")
        return arg or ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def load_compose(env: dict[str, str]) -> dict:
    return interpolate(yaml.safe_load((DOCKER / "compose.yaml").read_text()), env)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def cli_of(program: str) -> click.Command:
    if program == "dagster":
        from dagster._cli import cli
    elif program == "dagster-webserver":
        from dagster_webserver.cli import cli
    elif program == "dagster-daemon":
        from dagster._daemon.cli import cli
    elif program == "mlflow":
        from mlflow.cli import cli
    else:
        raise AssertionError(f"unknown program {program!r}")
    return cli


def parse_command(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a command line with the program's own click CLI (nothing runs): returns the
    sub-command path and its parsed options; raises on an unknown option or a bad value."""
    prog, *args = [str(a) for a in argv]
    cmd, name, ctx = cli_of(prog), prog, None
    path = [prog]
    while True:
        ctx = cmd.make_context(name, list(args), parent=ctx)
        if not isinstance(cmd, click.Group):
            return " ".join(path), ctx.params
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, cmd, args = cmd.resolve_command(ctx, rest)
        path.append(name)


def in_repo(argv: list[str], service: dict) -> list[str]:
    """`argv` with paths inside the container replaced by the repo files bind-mounted there
    (click checks that paths exist)."""
    mounts = {}
    for v in service.get("volumes", []):
        src, _, rest = v.partition(":")
        if src.startswith("."):
            mounts[rest.split(":")[0]] = str((DOCKER / src).resolve())
    return [mounts.get(str(a), str(a)) for a in argv]


def env_refs(node: Any) -> set[str]:
    """Names in {env: NAME} of a Dagster YAML tree."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node)) if node else set()
    return set()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += " " + line.rstrip("\\").strip() if buf else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            ins, _, args = buf.partition(" ")
            out.append((ins.upper(), args.strip()))
            buf = ""
    return out


def ignored(rel: str, patterns: list[str]) -> bool:
    hit = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(x, p) or fnmatch.fnmatch(x, p.removeprefix("**/")) for x in prefixes
        ):
            hit = not neg
    return hit


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    return dotenv(DOCKER / ".env.example")


@pytest.fixture(scope="module")
def compose(compose_env) -> dict:
    return load_compose(compose_env)


# ---- compose -------------------------------------------------------------------------------
def test_compose_needs_the_secrets() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        load_compose({})


def test_compose_services_commands_and_ports(compose) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    cmds = {
        name: parse_command(in_repo(s["command"], s))
        for name, s in services.items()
        if "command" in s
    }
    code_cmd, code = cmds["simpersona_code"]
    assert code_cmd == "dagster code-server start"
    assert code["module_name"] == "dagster_project.definitions"
    assert (code["host"], code["port"], code["location_name"]) == ("0.0.0.0", 4000, "simpersona")
    web_cmd, web = cmds["dagster_webserver"]
    assert web_cmd == "dagster-webserver" and (web["host"], web["port"]) == ("0.0.0.0", 3000)
    assert web["workspace"] == (str(DOCKER / "workspace.yaml"),)
    daemon_cmd, daemon = cmds["dagster_daemon"]
    assert daemon_cmd == "dagster-daemon run"
    assert daemon["workspace"] == (str(DOCKER / "workspace.yaml"),)
    ml_cmd, ml = cmds["mlflow"]
    assert ml_cmd == "mlflow server" and (ml["host"], ml["port"]) == ("0.0.0.0", 5000)
    assert ml["serve_artifacts"] is True and ml["artifacts_destination"] == "/mlartifacts"
    assert "mlflow" in ml["allowed_hosts"]  # other containers reach it as http://mlflow:5000
    # published ports: loopback only
    published = {n: s.get("ports", []) for n, s in services.items()}
    assert published["dagster_webserver"] == ["127.0.0.1:3000:3000"]
    assert published["mlflow"] == ["127.0.0.1:5000:5000"]
    assert not published["postgres"] and not published["simpersona_code"]
    for ports in published.values():
        assert all(str(p).startswith("127.0.0.1:") for p in ports)


def test_compose_healthchecks_and_start_order(compose) -> None:
    services = compose["services"]
    for name, s in services.items():
        test = s.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        for dep, cond in s.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_started")
    # the health commands are real commands of the programs
    assert parse_command(services["simpersona_code"]["healthcheck"]["test"][1:])[1]["port"] == 4000
    assert parse_command(services["dagster_daemon"]["healthcheck"]["test"][1:])[0] == (
        "dagster-daemon liveness-check"
    )
    need = {"postgres": "service_healthy", "simpersona_code": "service_healthy"}
    for name in ("dagster_webserver", "dagster_daemon"):
        got = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert got == need, name
    assert services["simpersona_code"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_environment_matches_dagster_yaml(compose) -> None:
    services = compose["services"]
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    needed = env_refs(instance)
    assert {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"} <= needed
    for name in INSTANCE_SERVICES:
        env = env_of(services[name])
        missing = needed - set(env)
        assert not missing, f"{name} lacks {sorted(missing)} used by docker/dagster.yaml"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert env["SIMPERSONA_DATA_DIR"] == "/data" and env["HF_HUB_OFFLINE"] == "1"
        assert env["SIMPERSONA_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the credentials Dagster uses are the ones the postgres service is created with
    pg_env = env_of(services["postgres"])
    web = env_of(services["dagster_webserver"])
    assert web["DAGSTER_POSTGRES_USER"] == pg_env["POSTGRES_USER"]
    assert web["DAGSTER_POSTGRES_PASSWORD"] == pg_env["POSTGRES_PASSWORD"]
    assert web["DAGSTER_POSTGRES_DB"] == pg_env["POSTGRES_DB"]
    # the run launcher forwards every variable the instance and the code need, and each is
    # set where the launcher runs (a missing one fails every launch)
    launcher = instance["run_launcher"]["config"]
    forwarded = {v.split("=", 1)[0] for v in launcher["env_vars"]}
    assert needed <= forwarded
    code_env = env_of(services["simpersona_code"])
    assert {k for k in code_env if k.startswith("SIMPERSONA_")} <= forwarded
    for name in ("dagster_daemon", "dagster_webserver"):
        env = env_of(services[name])
        unset = [v for v in launcher["env_vars"] if "=" not in v and v not in env]
        assert not unset, f"{name} does not set {unset} (DockerRunLauncher env_vars)"
    # run containers join the compose network and mount the same named data volume
    assert launcher["network"] == compose["networks"]["simpersona"]["name"]
    vol, target = launcher["container_kwargs"]["volumes"][0].split(":")[:2]
    assert compose["volumes"]["simpersona-data"]["name"] == vol and target == "/data"
    assert "simpersona-data:/data" in services["simpersona_code"]["volumes"]
    # runs use the code location's image
    assert code_env["DAGSTER_CURRENT_IMAGE"] == services["simpersona_code"]["image"]
    for name in ("dagster_webserver", "dagster_daemon", "mlflow"):
        assert services[name]["image"] == services["simpersona_code"]["image"]
    # the daemon can start containers
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["dagster_daemon"]["volumes"]


def test_compose_mounts_and_builds_exist(compose) -> None:
    for name, s in compose["services"].items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name} mounts missing {src}"
            elif not src.startswith("/"):
                assert src in compose["volumes"], f"{name} uses undeclared volume {src}"
        if "build" in s:
            ctx = (DOCKER / s["build"]["context"]).resolve()
            assert ctx == REPO
            assert (ctx / s["build"]["dockerfile"]).is_file()
    # the instance + workspace mounted where DAGSTER_HOME points
    for name in ("dagster_webserver", "dagster_daemon"):
        s = compose["services"][name]
        home = env_of(s)["DAGSTER_HOME"]
        assert f"./dagster.yaml:{home}/dagster.yaml:ro" in s["volumes"]
        assert f"./workspace.yaml:{home}/workspace.yaml:ro" in s["volumes"]
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()


# ---- Dockerfiles ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_copies_exist_and_pins(name: str) -> None:
    import tomllib

    path = DOCKER / name
    ins = dockerfile_instructions(path)
    patterns = [
        ln.strip()
        for ln in (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    copies = [a for i, a in ins if i == "COPY"]
    assert copies
    for args in copies:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        assert not args.startswith("--from"), args
        for src in parts[:-1]:
            src = src.rstrip("/")
            assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
            assert not ignored(src, patterns), f"{name}: COPY {src} is in the dockerignore"
    text = " ".join(a for _, a in ins)
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert '"torch==${TORCH_VERSION}"' in text
    envs = " ".join(a for i, a in ins if i == "ENV")
    assert "HF_HUB_OFFLINE=1" in envs and "SIMPERSONA_DATA_DIR=/data" in envs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    used = re.findall(r'"\.\[([a-z,]+)\]"', text)
    assert used and all(set(u.split(",")) <= set(extras) for u in used)
    if name == "Dockerfile.cpu":
        assert "--index-url https://download.pytorch.org/whl/cpu" in text
        assert "DAGSTER_HOME=/opt/dagster/dagster_home" in envs
        # the default command is the code server the compose file runs
        cmd = json.loads(next(a for i, a in ins if i == "CMD"))
        assert parse_command(cmd)[0] == "dagster code-server start"
    else:
        assert args["TORCH_CUDA"].startswith("cu")
        assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in text
        assert "deepspeed==${DEEPSPEED_VERSION}" in text and "gpu" in used[0].split(",")
        assert "pdsh" in text and "openssh-server" in text
        assert next(a for i, a in ins if i == "FROM") == "${CUDA_IMAGE}"
        assert "cudnn-devel" in args["CUDA_IMAGE"]  # nvcc for DeepSpeed's ops


# ---- dagster.yaml and the workspace --------------------------------------------------------
def test_dagster_yaml_passes_dagsters_schema(tmp_path: Path, monkeypatch) -> None:
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    env = {
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": "5432",
        "DAGSTER_POSTGRES_USER": "u",
        "DAGSTER_POSTGRES_PASSWORD": "p",
        "DAGSTER_POSTGRES_DB": "d",
        "DAGSTER_MAX_CONCURRENT_RUNS": "8",
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "logs"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    shutil.copy(DOCKER / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    # a misspelt key fails: the schema is really applied
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dagster.yaml").write_text(
        (DOCKER / "dagster.yaml").read_text().replace("run_monitoring:", "run_monitorin:")
    )
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(bad))


def test_dagster_yaml_loads_against_postgres(tmp_path: Path, pg: PostgresServer, monkeypatch):
    """The whole instance from docker/dagster.yaml: PostgreSQL storages (tables created), the
    queued run coordinator and the Docker run launcher with their configs validated by their
    own classes."""
    import dagster as dg
    from dagster._core.errors import DagsterInvalidConfigError

    db = pg.create_database("dagster_deploy")
    env = pg.env(db) | {
        "DAGSTER_MAX_CONCURRENT_RUNS": "3",
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "compute_logs"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
    assert instance.run_launcher.inst_data.config_dict["network"] == "simpersona"
    coord = instance.run_coordinator
    assert type(coord).__name__ == "QueuedRunCoordinator"
    assert coord.get_run_queue_config().max_concurrent_runs == 3
    limits = coord.get_run_queue_config().tag_concurrency_limits
    assert {"key": "simpersona/resource", "value": "training", "limit": 1} in limits
    assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    # storage really is this PostgreSQL: a run written through the instance is in its tables
    instance.add_dynamic_partitions("shops", ["shop-a"])
    con = pg.connect(db)
    try:
        with con.cursor() as cur:
            cur.execute("select partition from dynamic_partitions")
            assert cur.fetchall() == [("shop-a",)]
    finally:
        con.close()
    instance.dispose()
    # the launcher's own config schema is applied too (an unknown key fails)
    (home / "dagster.yaml").write_text(
        (DOCKER / "dagster.yaml").read_text().replace("network: simpersona", "netwrk: simpersona")
    )
    with pytest.raises(DagsterInvalidConfigError, match="netwrk"):
        dg.DagsterInstance.from_config(str(home)).run_launcher  # noqa: B018 (built on access)


def test_docker_workspace(compose) -> None:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    path = DOCKER / "workspace.yaml"
    cfg = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    (entry,) = cfg["load_from"]
    grpc = entry["grpc_server"]
    _, code = parse_command(compose["services"]["simpersona_code"]["command"])
    assert grpc["host"] in compose["services"]
    assert grpc["host"] == "simpersona_code"
    assert (grpc["port"], grpc["location_name"]) == (code["port"], code["location_name"])


def test_mlflow_backend_store_on_postgres(compose, pg: PostgresServer) -> None:
    """The compose file's backend-store URI (driver, database) opens as MLflow's own store
    on a real PostgreSQL, with the same database name postgres-init.sql creates."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.engine import make_url

    _, ml = parse_command(compose["services"]["mlflow"]["command"])
    url = make_url(ml["backend_store_uri"])
    assert url.drivername == "postgresql+psycopg2" and url.host == "postgres"
    assert f"CREATE DATABASE {url.database};" in (DOCKER / "postgres-init.sql").read_text()
    pg.create_database(url.database)
    local = url.set(host=pg.host, port=pg.port, username=pg.user, password=pg.password)
    store = SqlAlchemyStore(local.render_as_string(hide_password=False), "/tmp/unused")
    exp = store.create_experiment("simpersona-deploy-test")
    assert store.get_experiment(exp).name == "simpersona-deploy-test"
    store.engine.dispose()


# ---- Kubernetes ----------------------------------------------------------------------------
_RUN_K8S_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def k8s_launcher_config(values: dict) -> dict:
    """The K8sRunLauncher config the Dagster Helm chart renders from these values (the
    fields this file sets, plus what the chart always adds)."""
    v = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg: dict[str, Any] = {
        "instance_config_map": "simpersona-dagster-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "dagster_home": "/opt/dagster/dagster_home",
        "service_account_name": "simpersona-dagster",
        "load_incluster_config": True,
    }
    if "envSecrets" in v:
        cfg["env_secrets"] = [s["name"] for s in v["envSecrets"]]
    if "envVars" in v:
        cfg["env_vars"] = v["envVars"]
    for camel, snake in (("volumes", "volumes"), ("volumeMounts", "volume_mounts")):
        if camel in v:
            cfg[snake] = v[camel]
    if "runK8sConfig" in v:
        unknown = set(v["runK8sConfig"]) - set(_RUN_K8S_KEYS)
        assert not unknown, f"runK8sConfig keys the chart does not know: {unknown}"
        cfg["run_k8s_config"] = {_RUN_K8S_KEYS[k]: x for k, x in v["runK8sConfig"].items()}
    return cfg


def test_helm_values_render_valid_launcher_and_queue() -> None:
    from dagster._config import process_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher

    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    res = process_config(K8sRunLauncher.config_type(), k8s_launcher_config(values))
    assert res.success, res.errors
    assert res.value["run_k8s_config"]["container_config"]["resources"]["requests"]["cpu"] == "2"
    rc = values["dagsterDaemon"]["runCoordinator"]
    assert rc["enabled"] and rc["type"] == "QueuedRunCoordinator"
    q = rc["config"]["queuedRunCoordinator"]
    res = process_config(
        QueuedRunCoordinator.config_type(),
        {
            "max_concurrent_runs": q["maxConcurrentRuns"],
            "tag_concurrency_limits": q["tagConcurrencyLimits"],
        },
    )
    assert res.success, res.errors
    # the same tag limits as the compose deployment
    compose_limits = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_coordinator"][
        "config"
    ]["tag_concurrency_limits"]
    assert [(t["key"], t["value"]) for t in q["tagConcurrencyLimits"]] == [
        (t["key"], t["value"]) for t in compose_limits
    ]
    # the code server: the project's module, args the code-server CLI accepts
    (dep,) = values["dagster-user-deployments"]["deployments"]
    cmd, params = parse_command(["dagster", "code-server", "start", *dep["codeServerArgs"]])
    assert params["module_name"] == "dagster_project.definitions"
    mounts = {m["mountPath"] for m in dep["volumeMounts"]}
    assert {"/data", "/dev/shm"} <= mounts
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    assert {"name": "SIMPERSONA_DATA_DIR", "value": "/data"} in dep["env"]
    # a misspelt launcher field fails the same check
    bad = k8s_launcher_config(values) | {"env_secret": ["x"]}
    assert not process_config(K8sRunLauncher.config_type(), bad).success


def test_k8s_job_executor_run_config() -> None:
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    run_config = yaml.safe_load((K8S / "run_config.yaml").read_text())
    schema = k8s_job_executor.config_schema.config_type
    res = process_config(schema, run_config["execution"]["config"])
    assert res.success, res.errors
    # the per-step override names a real asset of the project
    from dagster_project.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(run_config["execution"]["config"]["per_step_k8s_config"]) <= keys


# ---- DeepSpeed multi-node launch (docs/deploy.md) ------------------------------------------
def doc_commands(program: str) -> list[list[str]]:
    """Command lines of `program` in docs/deploy.md's shell code blocks (continuations
    joined; a `docker … exec …` or `kubectl … exec … --` prefix dropped)."""
    blocks, block, fence = [], None, None
    for line in (REPO / "docs" / "deploy.md").read_text().splitlines():
        stripped = line.strip()
        if block is None and stripped.startswith("```"):
            fence, block = stripped[3:], []
        elif block is not None and stripped == "```":
            if fence in ("", "bash"):
                blocks.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
    out = []
    for text in blocks:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            if not line.strip() or line.strip().startswith("#"):
                continue
            tokens = shlex.split(line)
            for i, tok in enumerate(tokens):
                wrapped = tokens[0] in ("docker", "kubectl") and "exec" in tokens[:i]
                if tok == program and (i == 0 or wrapped):
                    out.append(tokens[i:])
                    break
    return out


def test_backfill_commands_in_docs() -> None:
    """The `dagster job backfill` lines parse with dagster's CLI and name real jobs."""
    cmds = [c for c in doc_commands("dagster") if c[1:3] == ["job", "backfill"]]
    assert len(cmds) == 2
    jobs = {"features_shop_job", "events_job", "catalog_job", "personas_shop_job"}
    for argv in cmds:
        ws = argv[argv.index("-w") + 1]
        local = {
            "/opt/dagster/dagster_home/workspace.yaml": DOCKER / "workspace.yaml",
            "/dagster-workspace/workspace.yaml": DOCKER / "workspace.yaml",
        }[ws]
        name, params = parse_command([str(local) if a == ws else a for a in argv])
        assert name == "dagster job backfill"
        assert params["job_name"] in jobs and params["location"] == "simpersona"


def test_deepspeed_launch_in_docs_matches_launcher_and_hostfile() -> None:
    from deepspeed.launcher.runner import fetch_hostfile, parse_args

    from simpersona.llm.launch import LaunchConfig, build_argv
    from simpersona.llm.train_config import TrainConfig, resolve_deepspeed

    cmds = doc_commands("deepspeed")
    assert cmds, "docs/deploy.md shows no deepspeed command"
    hosts = fetch_hostfile(str(REPO / "deploy" / "deepspeed" / "hostfile.example"))
    assert list(hosts.values()) == [8, 8]
    for argv in cmds:
        args = parse_args(argv[1:])
        assert args.module and args.user_script == "simpersona.llm.train"
        assert args.num_nodes == len(hosts) and args.num_gpus == max(hosts.values())
        # the same command simpersona.llm.launch builds for this layout
        spec = args.user_args[args.user_args.index("--config") + 1]
        built = build_argv(
            spec,
            LaunchConfig(
                mode="deepspeed",
                hostfile=args.hostfile,
                nodes=args.num_nodes,
                num_gpus=args.num_gpus,
                master_port=args.master_port,
            ),
            result_path=args.user_args[args.user_args.index("--result") + 1]
            if "--result" in args.user_args
            else None,
        )
        assert ["deepspeed", *built[1:]] == argv
    spec = json.loads((REPO / "deploy" / "deepspeed" / "spec.example.json").read_text())
    cfg = TrainConfig.from_dict(spec["config"])
    assert Path(resolve_deepspeed(cfg.deepspeed)).is_file()
    assert cfg.effective_batch == 64 and cfg.max_length == 16384
    assert {"model_dir", "stage1_dataset", "stage2_dataset", "out_dir"} <= set(spec)


# ---- README stays true -------------------------------------------------------------------
def test_readme_lists_every_asset_and_resource_field() -> None:
    """The README's asset tour names every asset of the code location, and its configuration
    reference every resource and field (so a new asset or setting needs a line there)."""
    from dagster_project.definitions import defs

    readme = (REPO / "README.md").read_text()
    tour = readme[readme.index("## A tour of the asset graph") : readme.index("## The command")]
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    missing = sorted(k for k in keys if f"`{k}`" not in tour)
    assert not missing, f"README's asset tour lacks {missing}"
    conf = readme[readme.index("## Configuration") : readme.index("## Deployment")]
    for name, res in defs.resources.items():
        row = next((ln for ln in conf.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row, f"README's configuration table lacks the `{name}` resource"
        fields = sorted(f for f in type(res).model_fields if f"`{f}`" not in row)
        assert not fields, f"README: `{name}` row lacks {fields}"
