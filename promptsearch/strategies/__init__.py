"""Search strategies behind one ask/tell interface, in one registry.

    python -c "from promptsearch.strategies import STRATEGIES; print(sorted(STRATEGIES))"
"""

from .base import STRATEGIES, Strategy, make_strategy  # noqa: F401

# importing a strategy module registers it
from . import random_search  # noqa: F401,E402
