"""Search strategies behind one ask/tell interface, in one registry.

    python -c "from promptsearch.strategies import STRATEGIES; print(sorted(STRATEGIES))"
"""

from .base import STRATEGIES, Observation, Strategy, StrategyError, make_strategy  # noqa: F401

# importing a strategy module registers it; rl needs torch, so it is imported when first used
from . import evolution, optuna_search, random_search  # noqa: F401,E402

STRATEGIES.register_lazy("rl", "promptsearch.strategies.rl")
