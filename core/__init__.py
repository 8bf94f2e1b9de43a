"""Core: settings, database, Kafka runner, signal catalog, registry, auth, errors, CLI."""
