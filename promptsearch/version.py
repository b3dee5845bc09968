"""The package version (one place; ``promptsearch.__version__`` reads it).

    python -c "from promptsearch.version import __version__; print(__version__)"
"""

__version__ = "0.1.0"
BUNDLE_FORMAT = "promptsearch-bundle/1"  # an export bundle's format (config.json, prompts.safetensors metadata)
