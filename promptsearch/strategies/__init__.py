"""Search strategies behind one ask/tell interface, in one registry.

    python -c "from promptsearch.strategies import STRATEGIES; print(sorted(STRATEGIES))"
"""

from .base import STRATEGIES, Observation, Strategy, StrategyError, make_strategy  # noqa: F401

# importing a strategy module registers it; rl and mobo need torch, so they are imported when first used
from . import evolution, handover, optuna_search, random_search  # noqa: F401,E402

STRATEGIES.register_lazy("rl", "promptsearch.strategies.rl")
STRATEGIES.register_lazy("mobo", "promptsearch.strategies.mobo")
