"""``jobctl deploy`` writes the web console's unit and Deployment + Service when ``[web]
enabled``, and they pass the real validators (systemd-analyze verify with no output,
systemd-analyze security, kubernetes-validate --strict)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobctl.config import load_settings
from jobctl.deploy import render
from jobctl.errors import UsageError
from tests.deploy.test_deploy_files import one, parse_unit, run, tool

CONFIG = """\
timezone = "UTC"

[jobs.snapshot]
schedule = "0 2 * * *"

[web]
enabled = true
host = "{host}"
port = {port}
"""


def _rendered(
    tmp_path: Path, target: str, *, host: str = "127.0.0.1", port: int = 8080, extra: str = ""
) -> dict[str, str]:
    path = tmp_path / "jobctl.toml"
    path.write_text(CONFIG.format(host=host, port=port) + extra)
    settings = load_settings(config_path=path, environ={})
    return dict(render(target, settings).files)


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    stub = root / "usr/local/bin/jobctl"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return root


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 8080), ("0.0.0.0", 443)])
def test_the_web_unit_verifies_clean(tmp_path: Path, host: str, port: int) -> None:
    analyze = tool("systemd-analyze")
    files = _rendered(tmp_path, "systemd", host=host, port=port)
    assert "jobctl-web.service" in files
    root = _root(tmp_path, files)
    units = [n for n in files if n.endswith((".service", ".timer")) and "@" not in n]
    verified = run([analyze, "verify", f"--root={root}", *units])
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""
    unit = parse_unit(root / "etc/systemd/system/jobctl-web.service")
    assert one(unit, "Service", "ExecStart") == (
        f"/usr/local/bin/jobctl serve --host {host} --port {port}"
    )
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/jobctl/jobctl.env"
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    capabilities = one(unit, "Service", "AmbientCapabilities")
    assert capabilities == ("CAP_NET_BIND_SERVICE" if port < 1024 else "")
    security = run(
        [
            analyze,
            "security",
            "--offline=true",
            f"--root={root}",
            "--threshold=20",
            "--no-pager",
            "jobctl-web.service",
        ]
    )
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security.stdout)
    assert score is not None and float(score.group(1)) <= 2.0


def test_the_web_unit_verify_harness_sees_a_misspelt_key(tmp_path: Path) -> None:
    """Control: the test above would see a key systemd does not know."""
    analyze = tool("systemd-analyze")
    files = _rendered(tmp_path, "systemd")
    files["jobctl-web.service"] = files["jobctl-web.service"].replace("KillMode=", "KilMode=")
    root = _root(tmp_path, files)
    assert "KilMode" in run([analyze, "verify", f"--root={root}", "jobctl-web.service"]).stderr


def _documents(files: dict[str, str]) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    docs = {}
    for name, text in files.items():
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        assert len(loaded) == 1, name
        docs[name] = loaded[0]
    return docs


@pytest.mark.parametrize("version", ["1.27", "latest"])
def test_the_web_deployment_and_service_validate_strict(tmp_path: Path, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version() if version == "latest" else version
    docs = _documents(_rendered(tmp_path, "k8s", port=9090))
    assert docs["jobctl-web.yaml"]["kind"] == "Deployment"
    assert docs["jobctl-web-service.yaml"]["kind"] == "Service"
    for name, doc in docs.items():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name} (Kubernetes {version}): {exc.message}")
    deployment = docs["jobctl-web.yaml"]
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    container = pod["spec"]["containers"][0]
    # A pod's own address is not loopback: the token must come with it.
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "9090"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOBCTL_WEB_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "JOBCTL_WEB_TOKEN"
    assert container["ports"][0]["containerPort"] == 9090
    assert container["image"] and ":" in container["image"]
    service = docs["jobctl-web-service.yaml"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_without_web_enabled_no_web_files(tmp_path: Path) -> None:
    for target in ("systemd", "k8s"):
        path = tmp_path / "jobctl.toml"
        path.write_text('[jobs.snapshot]\nschedule = "0 2 * * *"\n[web]\nport = 9000\n')
        files = render(target, load_settings(config_path=path, environ={})).files
        assert not [n for n in files if "web" in n], target


def test_a_job_named_web_cannot_take_the_consoles_unit(tmp_path: Path) -> None:
    extra = '\n[jobs.web]\nschedule = "0 3 * * *"\n'
    with pytest.raises(UsageError, match="jobctl-web, a name already in use"):
        _rendered(tmp_path, "systemd", extra=extra)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("port = 0", "web.port"),
        ('host = "a b"', "web.host"),
        ("enabled = 3", "web.enabled"),
        ("colour = 1", "web"),
    ],
)
def test_a_bad_web_value_names_its_key(tmp_path: Path, table: str, key: str) -> None:
    from jobctl.errors import ConfigError

    path = tmp_path / "jobctl.toml"
    path.write_text(f"[web]\n{table}\n")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(config_path=path, environ={})
