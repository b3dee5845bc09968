"""promptsearch: automated prompt architecture search for medical visual prompt tuning.

    promptsearch --help
"""

from .version import __version__  # noqa: E402,F401

from .space import Candidate, SearchSpace, load_space  # noqa: E402,F401

__all__ = ["Candidate", "SearchSpace", "load_space", "load_exported"]


def __getattr__(name: str):
    # lazy: importing the package must not pull in torch for light users (the API's schemas)
    if name == "load_exported":
        from .export import load_exported

        return load_exported
    raise AttributeError(name)
