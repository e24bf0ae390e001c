"""The report tests use the alert tests' real SMTP server (aiosmtpd on 127.0.0.1)."""

from tests.fixtures.httpserver import local_http_server  # noqa: F401 - the fixture too
from tests.notify.conftest import smtp_server  # noqa: F401 - the fixture, for these tests
