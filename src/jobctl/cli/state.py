"""Per-invocation state shared by the commands: global options, settings, the App."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from jobctl.app import App
from jobctl.config import Settings, load_settings
from jobctl.logs import setup_logging
from jobctl.redact import redact_text


@dataclass
class State:
    config: Path | None
    env_file: Path | None
    database_url: str | None
    verbosity: int
    log_format: str
    _app: App | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        setup_logging(self.verbosity, self.log_format)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                config_path=self.config, env_file=self.env_file, database_url=self.database_url
            )
            setup_logging(self.verbosity, self.log_format, self._settings.secrets())
        return self._settings

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = App(self.settings)
        return self._app

    def redact(self, message: str) -> str:
        secrets = self._settings.secrets() if self._settings else []
        return redact_text(message, secrets)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
        logging.getLogger("jobctl").handlers.clear()
