"""Per-invocation state shared by the commands: global options, settings, the App."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jobctl.logs import setup_logging
from jobctl.redact import Redactor, url_secrets

if TYPE_CHECKING:
    # Imported where used: `jobctl --version` / `--help` make a State and should not
    # pay for the config parser, the App, SQLAlchemy or psycopg.
    from jobctl.app import App
    from jobctl.config import Settings


@dataclass
class State:
    config: Path | None
    env_file: Path | None
    database_url: str | None
    verbosity: int
    log_format: str
    _app: App | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)
    _redactor: Redactor = field(default_factory=Redactor, repr=False)

    def __post_init__(self) -> None:
        # Until the settings are read, only --database-url's password is known.
        self._redactor = Redactor(url_secrets(self.database_url))
        setup_logging(self.verbosity, self.log_format, self._redactor)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from jobctl.config import load_settings

            self._settings = load_settings(
                config_path=self.config, env_file=self.env_file, database_url=self.database_url
            )
            self._redactor = Redactor(self._settings.secrets())
            setup_logging(self.verbosity, self.log_format, self._redactor)
        return self._settings

    @property
    def app(self) -> App:
        if self._app is None:
            from jobctl.app import App

            self._app = App(self.settings)
        return self._app

    @property
    def redactor(self) -> Redactor:
        """The invocation's one redaction (logs, error messages, ``runs`` output)."""
        return self._redactor

    def redact(self, message: str) -> str:
        return self._redactor.text(message)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
        logging.getLogger("jobctl").handlers.clear()
