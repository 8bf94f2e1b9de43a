"""The ingestion fixtures (migrated database, per-test topics and settings, the API client)."""

from tests.ingestion.conftest import client, db_url, settings  # noqa: F401
