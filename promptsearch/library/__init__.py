"""The component library: prompt blocks learned from data that shows an anatomy, a modality or a
pathology, kept on disk, composed for new tasks, shared across trials and tasks.

    promptsearch library build --datasets brain_tumor_mri kidney_ct eye_fundus --folders-root ../shared/data/folders \
        --backbone torchvision:mobilenet_v2 --backbone-weights ../shared/weights/mobilenet_v2-b0353104.pth \
        --image-size 32 --epochs 3 --out artifacts/library/mnv2-32
    promptsearch library show artifacts/library/mnv2-32

A library folder holds ``library.safetensors`` (one tensor per component: a full-image pixel
pattern (3, S, S), or token blocks (L, T, D)), ``library.json`` (:mod:`.manifest`), and beside
them the build's ``checkpoint.pt`` and ``tasks.safetensors`` (each source's fusion and head: not
part of the library). Roles: :mod:`.manifest` (the JSON schema), :mod:`.store` (reading, writing,
a job's versions), :mod:`.model` and :mod:`.build` (learning blocks), :mod:`.use` (spaces, trials,
bundles), :mod:`.guard` (the job check with the leakage guard).
"""

from .build import BuildConfig, BuildHooks, BuildResult, add_to_library, build_library, composition
from .manifest import (CHECKPOINT, GENERIC, KINDS, LIBRARY_FORMAT, MANIFEST, TASKS, WEIGHTS, LibraryError, Manifest,
                       read_manifest)
from .store import Library, LibraryVersions, open_library, tensor_sha256, write_library
from .use import (TrialLibrary, bind_library, library_components, library_record, placeholder_blocks,
                  trained_blocks, trial_library, write_back)

__all__ = [
    "CHECKPOINT", "GENERIC", "KINDS", "LIBRARY_FORMAT", "MANIFEST", "TASKS", "WEIGHTS",
    "BuildConfig", "BuildHooks", "BuildResult", "Library", "LibraryError", "LibraryVersions", "Manifest",
    "TrialLibrary", "add_to_library", "bind_library", "build_library", "composition", "library_components",
    "library_record", "open_library", "placeholder_blocks", "read_manifest", "tensor_sha256", "trained_blocks",
    "trial_library", "write_back", "write_library",
]
