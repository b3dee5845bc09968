"""The worker entry point: the Ray Tune trainable every search job's trials run
(``promptsearch.dispatch.trainable``; see workers/README.md for what a worker node needs).

    python -c "from workers.trainable import train_trial, TrialJob; print(TrialJob.model_json_schema()['required'])"
"""

from promptsearch.dispatch.trainable import FAULTS, TrialJob, parse_faults, train_trial  # noqa: F401

__all__ = ["FAULTS", "TrialJob", "parse_faults", "train_trial"]
