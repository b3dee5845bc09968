"""Export bundles: one trained prompt configuration as a small, self-describing folder (or zip).

    promptsearch export JOB --pick knee --out exported/ && promptsearch predict exported/ scan.png

A bundle holds

* ``config.json``: the space (name, hash and full spec), the genome and architecture, the backbone
  and how to obtain its weights (never the weights themselves), the input the model expects, the
  training recipe (budget, seed), the objectives on validation and test, the dataset, the origin
  (job and trial ids);
* ``prompts.safetensors``: the prompt, fusion and head weights only (``PromptedModel.trainable_state_dict()``);
* ``MODEL_CARD.md``: what it was trained for, its metrics, intended use and limits.

:func:`load_exported` rebuilds the :class:`~promptsearch.prompts.PromptedModel` from a bundle
(the backbone from the recorded spec, or from local weights you pass) and loads the prompt weights.

One room per role: :mod:`.schema` (``config.json`` and the errors), :mod:`.card` (``MODEL_CARD.md``),
:mod:`.bundle` (writing and reading bundles), :mod:`.predict` (image files in, probabilities out),
:mod:`.job` (a job's or a trial's result -> a bundle).
"""

from .bundle import bundle_bytes, load_config, load_exported, write_bundle, zip_bundle
from .card import model_card
from .job import dataset_record, export_job, write_trial_bundle
from .predict import predict_files, read_images
from .schema import (BUNDLE_FILES, BUNDLE_FORMAT, CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, BackboneRecord, BundleConfig,
                     ExportError, InputRecord, NothingToExport, UnknownTrial, backbone_record)

__all__ = [
    "BUNDLE_FILES", "BUNDLE_FORMAT", "CARD_FILE", "CONFIG_FILE", "WEIGHTS_FILE",
    "BackboneRecord", "BundleConfig", "ExportError", "InputRecord", "NothingToExport", "UnknownTrial",
    "backbone_record", "bundle_bytes", "dataset_record", "export_job", "load_config", "load_exported",
    "model_card", "predict_files", "read_images", "write_bundle", "write_trial_bundle", "zip_bundle",
]
