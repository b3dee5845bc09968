"""Export bundles: one trained prompt configuration as a small, self-describing folder (or zip).

    promptsearch export JOB --pick knee --out exported/ && promptsearch predict exported/ scan.png

A bundle holds

* ``config.json``: the space (name, hash and full spec), the genome and architecture, the backbone
  and how to obtain its weights (never the weights themselves), the input the model expects, the
  training recipe (budget, seed), the objectives on validation and test, the dataset, the origin
  (job and trial ids);
* ``prompts.safetensors``: the prompt, fusion and head weights only (``PromptedModel.trainable_state_dict()``),
  as trained or compressed (``export --compress svd:4+int8``: :mod:`promptsearch.compress`, its manifest in
  the file's metadata; ``config.compression`` has the bytes and the metrics after compression);
* ``MODEL_CARD.md``: what it was trained for, its metrics, intended use and limits;
* ``examples/*.png`` (when asked for, ``export --examples N``): explanation maps of a few validation
  images, listed in ``config.examples``.

:func:`load_exported` rebuilds the :class:`~promptsearch.prompts.PromptedModel` from a bundle
(the backbone from the recorded spec, or from local weights you pass) and loads the prompt weights.

One room per role: :mod:`.schema` (``config.json`` and the errors), :mod:`.card` (``MODEL_CARD.md``),
:mod:`.bundle` (writing and reading bundles), :mod:`.predict` (image files in, probabilities out),
:mod:`.job` (a job's or a trial's result -> a bundle).
"""

from .bundle import bundle_bytes, bundle_files, load_config, load_exported, write_bundle, write_examples, zip_bundle
from .card import model_card
from .job import dataset_record, export_job, write_trial_bundle
from .predict import predict_files, read_images
from .schema import (BUNDLE_FILES, BUNDLE_FORMAT, CARD_FILE, CONFIG_FILE, EXAMPLES_DIR, WEIGHTS_FILE, BackboneRecord, BundleConfig,
                     ExportError, InputRecord, NothingToExport, UnknownTrial, backbone_record)

__all__ = [
    "BUNDLE_FILES", "BUNDLE_FORMAT", "CARD_FILE", "CONFIG_FILE", "EXAMPLES_DIR", "WEIGHTS_FILE",
    "BackboneRecord", "BundleConfig", "ExportError", "InputRecord", "NothingToExport", "UnknownTrial",
    "backbone_record", "bundle_bytes", "bundle_files", "dataset_record", "export_job", "load_config", "load_exported",
    "model_card", "predict_files", "read_images", "write_bundle", "write_examples", "write_trial_bundle", "zip_bundle",
]
