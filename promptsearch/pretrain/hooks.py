"""Progress callbacks of a pretraining run (the CLI draws them as rich progress bars).

    python -c "from promptsearch.pretrain import PretrainHooks; PretrainHooks().stage('epoch 1/1', 10)"
"""

from __future__ import annotations


class PretrainHooks:
    """Progress callbacks; these do nothing. The CLI's rich progress bars implement them."""

    def stage(self, description: str, total: int) -> None:
        """A new unit of work of ``total`` items starts (an epoch, the teacher cache)."""

    def advance(self, n: int, **info: float) -> None:
        """``n`` more items done; ``info`` holds running figures (e.g. loss)."""

    def done(self) -> None:
        """The current stage finished."""

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """An epoch finished and was checkpointed; ``row`` is its history entry."""
