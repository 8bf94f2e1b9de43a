"""The operator web console: static pages served by the API at ``/console``."""
