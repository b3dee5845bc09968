"""Domain backbone pretraining: make a ViT backbone from local images, for sites without hub access.

    promptsearch pretrain --mode distill --dataset pneumoniamnist --data-root ../shared/data/medmnist \
        --teacher-weights ../shared/weights/mobilenet_v2-b0353104.pth --epochs 2 --out artifacts/pretrained/distill

Writes ``backbone.safetensors`` (the student's state dict, exactly the keys
``BackboneSpec(name, image_size, patch_size, weights=FILE)`` loads) and ``backbone.json`` (a sidecar:
architecture, sizes, the data it saw, epochs, final metrics, sha256 of the weights file) into the
output folder, plus ``checkpoint.pt`` after every epoch: rerunning the same command resumes from it.

Three modes (registry ``PRETRAIN_MODES``), each a :class:`~.modes.PretrainMode`: a module that owns
the student and whatever else trains with it, and maps a batch to a loss.

* ``supervised``: one linear head per labeled dataset (MedMNIST name or ``folder:PATH`` of class
  sub-folders); batches come from one dataset at a time; heads are dropped at export.
* ``mae``: masked-patch reconstruction (He et al., 2022). The stock timm ViT encodes the visible
  25% of patch tokens (plus its prefix tokens); a light decoder (2 blocks, width 128) fills in mask
  tokens and predicts each masked patch's normalised pixels. Needs no labels.
* ``distill``: feature distillation from a frozen teacher that exists offline (the ImageNet
  MobileNetV2): a linear projection of the student's *pooled* features (what probes and prompts
  read) regresses the teacher's standardised pooled features. Teacher features are computed once
  per image and cached in the output folder, so training costs no teacher forward passes (and
  images are not augmented in this mode: the cache holds un-augmented views). Feature rather
  than logit distillation: on grey medical images the teacher's 1000 ImageNet class scores are a
  low-entropy, domain-irrelevant signal, while its 1280-d pooled features are what transfers
  (the MobileNetV2 linear probe on BreastMNIST reaches AUC .84-.93).

Deterministic on CPU: initialisation draws from ``seed``; the data order, augmentation and masks
of epoch ``e`` draw from a generator seeded by (seed, e), so a resumed run reproduces an
uninterrupted one bit for bit (same thread count).

One room per role: :mod:`.config` (the request, its error, the output folder's files),
:mod:`.sources` (images in), :mod:`.batches` (epoch plans, augmentation), :mod:`.modes` (the three
objectives), :mod:`.hooks` (progress), :mod:`.loop` (training, checkpoints, the result),
:mod:`.sidecar` (the made backbone written and read back).
"""

from ..backbones import preprocess
from .batches import Batch, augment, epoch_plan, steps_per_epoch
from .config import CHECKPOINT, SIDECAR, TEACHER_CACHE, WEIGHTS, PretrainConfig, PretrainError
from .hooks import PretrainHooks
from .loop import CHECKPOINT_VERSION, PretrainResult, pretrain
from .modes import PRETRAIN_MODES, DistillMode, MAEMode, PretrainMode, SupervisedMode
from .sidecar import SIDECAR_VERSION, epoch_metrics, read_sidecar, use_flags, write_backbone
from .sources import Source, load_image_folder, load_sources

__all__ = [
    "CHECKPOINT", "CHECKPOINT_VERSION", "PRETRAIN_MODES", "SIDECAR", "SIDECAR_VERSION", "TEACHER_CACHE", "WEIGHTS",
    "Batch", "DistillMode", "MAEMode", "PretrainConfig", "PretrainError", "PretrainHooks", "PretrainMode",
    "PretrainResult", "Source", "SupervisedMode", "augment", "epoch_metrics", "epoch_plan", "load_image_folder",
    "load_sources", "preprocess", "pretrain", "read_sidecar", "steps_per_epoch", "use_flags", "write_backbone",
]
