"""Search strategies behind one ask/tell interface, in one registry.

    python -c "from promptsearch.strategies import STRATEGIES; print(sorted(STRATEGIES))"
"""

from .base import STRATEGIES, Observation, Strategy, StrategyError, make_strategy  # noqa: F401

# importing a strategy module registers it
from . import evolution, optuna_search, random_search, rl  # noqa: F401,E402
