"""CLI command modules: each defines ``register(app)``; ``promptsearch.cli`` loads them all."""
