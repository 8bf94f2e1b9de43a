"""Locust user kinds of the load test, one module each; ``loadtest/locustfile.py`` runs them."""
