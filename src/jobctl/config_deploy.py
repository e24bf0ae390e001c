"""The ``[deploy]`` table: what ``jobctl deploy`` writes into the files that the job
schedules do not say (where jobctl is installed, its user, the container image, ...).

Kept apart from config_models so that adding a deployment setting touches one small
module. Each value is checked here, when the config is read, so that a bad one is a
one-line configuration error (exit 2) naming ``deploy.KEY``, not a unit file that
``systemctl`` or ``kubectl`` refuses later.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from jobctl.config_types import _custom, _text

#: A Kubernetes quantity (``100m``, ``1``, ``0.5``, ``256Mi``, ``1G``).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
#: A DNS-1123 label: a Kubernetes namespace or Secret name.
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: ``registry/name:tag`` or ``...@sha256:...``: a pinned image, never an implicit ``latest``.
_IMAGE = re.compile(r"^[\w.-]+(:[0-9]+)?(/[\w.-]+)+(:[\w.-]+|@sha256:[0-9a-f]{64})$")
#: A POSIX user name as useradd/sysusers accept it.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def _absolute_path(value: object) -> str:
    text = _text(value)
    # These paths are written unquoted into unit files and a crontab.
    if not text.startswith("/") or re.search(r"[\s%$\\\"']", text):
        raise ValueError(f"{text!r} is not an absolute path without spaces, %, $ or quotes")
    return text


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    def decode(value: object) -> str:
        text = _text(value)
        if not pattern.match(text):
            raise ValueError(f"{text!r} is not {what}")
        return text

    return decode


if TYPE_CHECKING:
    AbsolutePath = str
    Quantity = str
    Label = str
    Image = str
    UserName = str
else:
    AbsolutePath = _custom("AbsolutePath", str, _absolute_path)
    Quantity = _custom("Quantity", str, _matching(_QUANTITY, "a quantity such as 100m, 1, 256Mi"))
    Label = _custom("Label", str, _matching(_LABEL, "a lower-case DNS label such as jobctl"))
    Image = _custom(
        "Image", str, _matching(_IMAGE, "an image with a tag, e.g. ghcr.io/example/jobctl:0.1.0")
    )
    UserName = _custom("UserName", str, _matching(_USER, "a user name such as jobctl"))


class DeployConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[deploy]`` in jobctl.toml; every key optional."""

    #: the jobctl executable on the host (systemd ExecStart=, the crontab's PATH)
    executable: AbsolutePath = "/usr/local/bin/jobctl"
    #: where jobctl.toml is installed (JOBCTL_CONFIG for systemd and cron)
    config: AbsolutePath = "/etc/jobctl/jobctl.toml"
    #: the KEY=VALUE secrets file (systemd EnvironmentFile=, cron --env-file)
    env_file: AbsolutePath = "/etc/jobctl/jobctl.env"
    #: the system user the units and the crontab lines run as
    user: UserName = "jobctl"
    #: the CronJobs' container image
    image: Image = "ghcr.io/example/jobctl:0.1.0"
    #: the CronJobs' namespace; empty: none written (kubectl's current namespace)
    namespace: Label | None = None
    #: the Secret holding DATABASE_URL (and the other ${NAME} secrets)
    secret: Label = "jobctl"
    cpu_request: Quantity = "100m"
    cpu_limit: Quantity = "1"
    memory_request: Quantity = "256Mi"
    memory_limit: Quantity = "512Mi"
