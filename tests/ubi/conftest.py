"""API and stack fixtures for the worker, privacy and partner tests."""

from tests.ingestion.conftest import client, db_url, settings  # noqa: F401
