"""``MODEL_CARD.md`` of a bundle: what it was trained for, its metrics, intended use and limits.

    python -c "from promptsearch.export import load_config, model_card; print(model_card(load_config('exported/')))"
"""

from __future__ import annotations

import json
from typing import Any

from .schema import BundleConfig


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _library_section(cfg: BundleConfig) -> str:
    lib = cfg.library
    if not lib:
        return ""
    comps = ", ".join(f"`{c}`" for c in lib.get("components", [])) or "none"
    return (f"## Component library\n\nComponents {comps} started from library version `{lib.get('version')}` "
            f"(sha256 `{lib.get('sha256')}`, {lib.get('path')}) and were {lib.get('tuning', 'finetuned')} in training"
            + (f"; the job's shared version `{lib['started_from']}`" if lib.get("started_from") else "")
            + ". Their blocks are in this bundle's weights: the library is not needed to use it.\n\n")


def _compression_section(cfg: BundleConfig) -> str:
    """Size in bytes and the metrics after compression next to the uncompressed ones (both measured
    at export on the same splits and machine)."""
    c = cfg.compression
    if not c:
        size = cfg.prompts.get("file_bytes")
        return f"## Size\n\n`prompts.safetensors`: {size:,} bytes (stored as trained, float).\n\n" if size else ""
    ratio = c["uncompressed_file_bytes"] / max(1, c["file_bytes"])
    out = (f"## Compression for deployment\n\nWeights stored compressed with `{c['spec']}` (post-hoc, no retraining): "
           f"`prompts.safetensors` is {c['file_bytes']:,} bytes ({c['payload_bytes']:,} of tensors), "
           f"{c['uncompressed_file_bytes']:,} bytes uncompressed ({c['uncompressed_payload_bytes']:,} of tensors): "
           f"{ratio:.1f}x smaller. `load_exported` rebuilds full-size tensors from it.\n\n")
    after, before = c.get("metrics") or {}, c.get("reference") or {}
    if after:
        keys = [k for k in ("auc", "accuracy", "balanced_accuracy", "worst_class_recall") if k in after.get("validation", {})]
        out += ("Measured at export on the splits the trial was evaluated on (CPU, one thread):\n\n"
                "| metric | validation | validation, compressed | test | test, compressed |\n|---|---|---|---|---|\n")
        for k in keys:
            out += (f"| {k} | {_fmt(before.get('validation', {}).get(k, ''))} | {_fmt(after['validation'].get(k, ''))} "
                    f"| {_fmt(before.get('test', {}).get(k, ''))} | {_fmt(after.get('test', {}).get(k, ''))} |\n")
        out += "\n"
    else:
        out += "The compressed model was not evaluated at export (no dataset given).\n\n"
    return out


def _examples_section(cfg: BundleConfig) -> str:
    if not cfg.examples:
        return ""
    rows = "\n".join(f"| {e.get('image')} | {e.get('true_label', '')} | {e.get('label', e.get('prediction'))} | "
                     + ", ".join(f"[{k}]({f})" for k, f in e.get("maps", {}).items()) + " |" for e in cfg.examples)
    return ("## Example explanations\n\nWhere the model looks on a few validation images (Grad-CAM; on a ViT also the "
            "attention of the CLS and prompt tokens), overlays in `examples/`; `promptsearch explain THIS_FOLDER "
            "IMAGE...` makes them for any image.\n\n| image | true | predicted | maps |\n|---|---|---|---|\n"
            f"{rows}\n\n")


def _repeats_section(cfg: BundleConfig) -> str:
    """The seeds' mean ± sd (front_repeats): how much of the validation figure is the seed's luck."""
    r = cfg.repeats
    if not r:
        return ""
    keys = [k for k in ("auc", "accuracy", "balanced_accuracy", "worst_class_recall") if k in r.get("mean", {})]
    rows = "\n".join(f"| {k} | {_fmt(r['mean'][k])} ± {_fmt(r['sd'][k])} |" for k in keys)
    return (f"## Seed re-evaluation\n\nThe search re-trained this configuration with {r['n']} seeds "
            f"({', '.join(str(s) for s in r['seeds'])}; trials {', '.join(r['trials'])}) and ranked it by the mean. "
            f"Validation mean ± sd over the seeds (the weights here are seed {r['seeds'][0]}'s):\n\n"
            f"| metric | mean ± sd |\n|---|---|\n{rows}\n\n")


def model_card(cfg: BundleConfig) -> str:
    """``MODEL_CARD.md``: purpose, metrics, intended use and limits, in plain words."""
    val, test = cfg.metrics.get("validation", {}), cfg.metrics.get("test", {})
    keys = [k for k in ("auc", "accuracy", "balanced_accuracy", "worst_class_recall") if k in val or k in test]
    costs = [k for k in ("prompt_params", "adapter_params", "lora_params", "library_params", "head_params",
                         "trainable_params", "backbone_params", "latency_ms", "prompt_pixels", "prompt_tokens",
                         "prompted_layers") if k in val]
    rows = "\n".join(f"| {k} | {_fmt(val.get(k, ''))} | {_fmt(test.get(k, ''))} |" for k in keys)
    cost_rows = "\n".join(f"| {k} | {_fmt(val[k])} |" for k in costs)
    objectives = ", ".join(f"{o['name']} ({o.get('direction', '?')})" for o in cfg.objectives) or "not recorded"
    budget = cfg.recipe.get("budget", {})
    origin = ", ".join(f"{k} {v}" for k, v in cfg.origin.items() if v not in (None, "")) or "a single trial"
    return f"""# {cfg.dataset.get('name', 'dataset')}: prompt configuration `{cfg.candidate_key or 'exported'}`

A visual prompt ({cfg.architecture.get('module', '?')} prompt) and a linear head, learned on a **frozen**
`{cfg.backbone.name}` backbone for **{cfg.task}** classification of {cfg.dataset.get('name', 'the dataset')}
into {len(cfg.classes)} classes: {'; '.join(f'`{c}`' for c in cfg.classes)}.
Found by promptsearch {cfg.promptsearch_version} ({origin}) in search space `{cfg.space['name']}`
(hash {cfg.space['hash']}), selected on validation objectives: {objectives}.

    promptsearch predict THIS_FOLDER image.png

## Architecture

```json
{json.dumps(cfg.architecture, indent=2)}
```

## Metrics

Selection used the validation split only; the test split was evaluated once, after training,
and never used to choose this configuration.

| metric | validation | test |
|---|---|---|
{rows}

| cost | value |
|---|---|
{cost_rows}

## Training recipe

Seed {cfg.recipe.get('seed')}; {budget.get('epochs')} epoch(s), batch {budget.get('batch_size')},
{'all' if not budget.get('max_train_samples') else budget.get('max_train_samples')} training images;
{cfg.recipe.get('optimizer', '')}. Inputs: {cfg.input.channels}-channel images of
{cfg.input.size or 'any'} px, scaled to [0, 1]; the model resizes them to {cfg.backbone.image_size or 'the backbone default'} px.

{_repeats_section(cfg)}{_compression_section(cfg)}{_examples_section(cfg)}{_library_section(cfg)}## Backbone weights (not included)

`{cfg.backbone.name}`: {cfg.backbone.obtain}.
{f"Expected sha256: `{cfg.backbone.weights_sha256}`." if cfg.backbone.weights_sha256 else ""}
Load with `promptsearch.load_exported(THIS_FOLDER, backbone_weights=PATH)` if the recorded path
(`{cfg.backbone.weights}`) does not exist on your machine.

## Intended use and limits

- Research and method development on {cfg.dataset.get('name', 'this dataset')}-like images; **not a
  medical device** and not validated for clinical decisions.
- Metrics come from small public benchmark splits (validation {cfg.dataset.get('splits', {}).get('val', '?')} images,
  test {cfg.dataset.get('splits', {}).get('test', '?')} images) and carry wide uncertainty; re-validate on data from
  your own site, scanners and population before any use.
- Expect degraded performance on other modalities, resolutions, acquisition protocols or label
  definitions than the training data; the worst-class recall above is the figure to watch for
  missed findings.
"""
