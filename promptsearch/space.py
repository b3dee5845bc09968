"""Search spaces: YAML files validated into frozen, typed objects, and candidates in them.

    python -c "from promptsearch.space import load_space; s = load_space('search_spaces/medical.yaml'); print(s.size(), s.sample(0).architecture)"

A space is a list of *decisions* (each a named list of choices, optionally active only when
other decisions take given values) plus optional prompt *components* in groups, each an on/off
gene. A candidate's genome is a fixed-length list of ints: one gene per decision, in file order,
then one gene per component (0 = off, 1 = on). Strategies only ever manipulate genomes; the
architecture (a readable dict) is derived from it.

The "at least ``min_components`` components on" constraint is kept in two ways: samplers draw
with rejection (so sampling stays uniform over valid genomes), and variation operators call
:meth:`SearchSpace.repair`, which switches on randomly chosen components (seeded).

Component libraries (:mod:`promptsearch.library`): a space may name one (``library: PATH``; a job's
``library`` field overrides it) and list ``scratch`` components, which have no trained block and
always start fresh. The decisions ``source`` (library | scratch) and ``tuning`` (frozen | finetuned)
say where the chosen components' weights come from and whether library blocks train. A job binds
the library: the stored space then carries its path, version and sha256 (:class:`LibraryRef`).

*Equivalence* ("no trial spent twice"): :meth:`SearchSpace.canonical` maps genomes that build the
same model to one genome, hence one ``Candidate.key``. Always: inactive genes are zeroed (a
decision whose ``when`` is unmet). With ``equivalence: [scratch_components]`` in the file: blocks
that start from scratch are interchangeable (the model stacks library blocks first, then scratch
ones, and a scratch block's name enters nothing), so only *how many* scratch components are on
matters; the canonical genome switches on the first that many scratch-eligible components (all
components when ``source`` is scratch, the ``scratch`` list when it is library). With
``single_component_fusion``: a prompt of fewer than two components builds no fusion (the prompt
modules use the one block as it is), so every ``fusion`` value is one candidate there and the
canonical genome holds the first choice.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import random
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator,
                      model_validator)
from pydantic.fields import FieldInfo

from .files import bundled, find_named
from .yamlio import YamlError, parse_document

Scalar = int | float | str | bool

# --- the architecture vocabulary -------------------------------------------------------------
# Every decision name a space may use, with the type its choices must have. The model builder
# (promptsearch.prompts, promptsearch.adapters) implements exactly these values; tests check its
# registries match. Every field has a default, and the defaults of the adapter and LoRA fields
# mean "off", so a space that does not name them decodes and builds exactly as before.
Module = Literal["pixel", "token", "none"]  # prompts.PROMPT_MODULES; none: adapters/LoRA (or the head) alone
FusionName = Literal["concat", "attention", "gate"]  # prompts.FUSIONS implements each
Placement = Literal["prepend", "append", "insert", "replace"]
Init = Literal["normal", "xavier", "uniform", "zero"]
PixelPromptKind = Literal["frame", "overlay"]
AdapterKind = Literal["none", "bottleneck", "conv"]  # adapters.ADAPTER_KINDS implements all but none
LoraTarget = Literal["q", "k", "v", "proj"]  # adapters.LORA_TARGETS: slices of timm's fused qkv, and proj
ComponentSource = Literal["scratch", "library"]  # where a chosen component's block starts (promptsearch.library)
Tuning = Literal["finetuned", "frozen"]  # whether library blocks train in the trial
# SearchSpace.canonical: scratch blocks are interchangeable; the fusion of fewer than two blocks is moot
EquivalenceRule = Literal["scratch_components", "single_component_fusion"]
DEPTH_RE = re.compile(r"^(shallow|deep|first_[1-9][0-9]*)$")
BLOCKS_RE = re.compile(r"^(all|(first|last|every)_[1-9][0-9]*)$")  # adapters.BLOCK_SETS: all, first, last, every


def _depth(v: str) -> str:
    if not DEPTH_RE.match(v):
        raise ValueError("depth must be 'shallow', 'deep' or 'first_<k>' (k >= 1)")
    return v


def _blocks(v: str) -> str:
    if not BLOCKS_RE.match(v):
        raise ValueError("blocks must be 'all', 'first_<k>', 'last_<k>' or 'every_<k>' (k >= 1)")
    return v


def _lora_targets(v: str) -> str:
    order = typing.get_args(LoraTarget)
    parts = v.split("+")
    if not all(p in order for p in parts) or len(set(parts)) != len(parts) or parts != sorted(parts, key=order.index):
        raise ValueError(f"lora_targets must join distinct names of {', '.join(order)} with '+', in that order "
                         "(e.g. 'q+v')")
    return v


Depth = Annotated[str, AfterValidator(_depth)]
Blocks = Annotated[str, AfterValidator(_blocks)]
LoraTargets = Annotated[str, AfterValidator(_lora_targets)]


class Architecture(BaseModel):
    """A decoded candidate: what the model builder and the trainer read. Defaults apply to
    decisions a space does not make (e.g. ``vpt.yaml`` has no components and no fusion)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    module: Module = "token"
    components: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    tokens: int = Field(10, gt=0, le=512)  # tokens per component block (VPT: total tokens)
    pixel_prompt: PixelPromptKind = "frame"
    frame_width: int = Field(8, gt=0, le=64)  # pixels; VPT-style padding prompt width
    fusion: FusionName = "concat"
    depth: Depth = "shallow"
    placement: Placement = "prepend"
    init: Init = "xavier"  # VPT's default initialisation (adapters and LoRA: of the down/A factor)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lr: float = Field(0.01, gt=0.0, le=10.0)  # prompt + head learning rate
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    # inserts into the frozen backbone (promptsearch.adapters); the defaults are "off"
    adapter: AdapterKind = "none"  # bottleneck: in ViT blocks; conv: residual 1x1 convs after CNN stages
    adapter_reduction: int = Field(8, ge=1, le=1024)  # hidden width = width // reduction (AdaptFormer: 768/64)
    adapter_blocks: Blocks = "all"  # which ViT blocks or CNN stages get an adapter
    lora_rank: int = Field(0, ge=0, le=512)  # 0 = no LoRA
    lora_targets: LoraTargets = "q+v"  # the LoRA paper's choice for attention
    lora_blocks: Blocks = "all"  # which ViT blocks' attention gets LoRA
    # component weights (promptsearch.library); the defaults are "fresh blocks, trained", as before libraries
    source: ComponentSource = "scratch"  # library: each component starts from its library block (space.scratch excepted)
    tuning: Tuning = "finetuned"  # frozen: library blocks stay fixed; scratch blocks, fusion and head train
    # which frozen backbone: a name the job maps to a backbone ("": the job's one backbone)
    backbone: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")

    @property
    def component_names(self) -> list[str]:
        return [c for names in self.components.values() for c in names]


def _choice_type(info: FieldInfo) -> TypeAdapter:
    """A validator for one choice: the field's type with its constraints (bounds, patterns), so a
    space file with ``lora_targets: [q+q]`` or ``tokens: [0]`` fails at load with its line."""
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)


# decision name -> validator for one choice value (the Architecture field's own type)
DECISION_TYPES: dict[str, TypeAdapter] = {
    name: _choice_type(info) for name, info in Architecture.model_fields.items() if name != "components"
}


class SpaceError(YamlError):
    """An invalid space file (or candidate): the message names the file, line and field path."""


# --- the file schema ----------------------------------------------------------------------------
class Decision(BaseModel):
    """One categorical decision: ``choices`` in order; active only ``when`` every listed decision
    takes one of the listed values (inactive genes are zeroed in the canonical genome)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    choices: tuple[Scalar, ...] = Field(min_length=1)
    when: dict[str, tuple[Scalar, ...]] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Decision:
        if self.name not in DECISION_TYPES:
            raise ValueError(f"unknown decision {self.name!r}; known: {', '.join(DECISION_TYPES)}")
        adapter = DECISION_TYPES[self.name]
        for value in self.choices:
            try:
                adapter.validate_python(value, strict=not isinstance(value, int | float))
            except ValidationError as e:
                raise ValueError(f"@choices: choice {value!r} is not valid: {e.errors()[0]['msg']}") from None
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError("@choices: duplicate choices")
        return self


class LibraryRef(BaseModel):
    """A component library a space draws its blocks from. In a space file: ``library: PATH`` (a folder
    holding ``library.json`` + ``library.safetensors``, relative to the space file). A job binds it
    (:func:`promptsearch.library.bind_library`): ``version`` and ``sha256`` (of library.safetensors)
    and ``components`` (the names with a trained block) are filled, so a trial loads the exact file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)
    version: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    components: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v


# SpaceFile fields added after spaces were first stored: left out of the hash and of to_dict() while
# they hold their default, so every older space keeps its hash and its stored form
_LATER_FIELDS: dict[str, Any] = {"library": None, "scratch": [], "equivalence": []}


class SpaceFile(BaseModel):
    """The YAML document, validated as a whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = 1
    description: str = ""
    components: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    min_components: int = Field(0, ge=0)
    decisions: dict[str, Decision]
    library: LibraryRef | None = None  # the component library (a job's library field overrides it)
    scratch: tuple[str, ...] = ()  # components with no trained block: they start fresh even when source=library
    equivalence: tuple[EquivalenceRule, ...] = ()  # what SearchSpace.canonical treats as one candidate

    @field_validator("decisions", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: ({"name": k, **d} if isinstance(d, Mapping) else d) for k, d in v.items()}
        return v

    @field_validator("components")
    @classmethod
    def _components(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        seen: set[str] = set()
        for group, names in v.items():
            if not names:
                raise ValueError(f"component group {group!r} is empty")
            for n in names:
                if n in seen:
                    raise ValueError(f"duplicate component name {n!r}")
                seen.add(n)
        return v

    @model_validator(mode="after")
    def _cross(self) -> SpaceFile:
        n_comp = sum(len(v) for v in self.components.values())
        if self.min_components > n_comp and not (self.library is not None and not self.components):  # else: the library's
            raise ValueError(f"@min_components: min_components={self.min_components} but only {n_comp} components")
        names = list(self.decisions)
        for d in self.decisions.values():
            for ref, values in d.when.items():
                if ref not in self.decisions or names.index(ref) >= names.index(d.name):
                    raise ValueError(f"@decisions.{d.name}.when.{ref}: 'when' refers to {ref!r}, "
                                     "which must be a decision listed before it")
                bad = [x for x in values if x not in self.decisions[ref].choices]
                if bad:
                    raise ValueError(f"@decisions.{d.name}.when.{ref}: values {bad} are not choices of {ref!r}")
        names = {c for group in self.components.values() for c in group}
        for i, c in enumerate(self.scratch):
            if c not in names:
                raise ValueError(f"@scratch.{i}: {c!r} is not a component of this space")
        return self

    def dump(self) -> dict[str, Any]:
        """The stored form (hash input): fields added later are left out while at their default."""
        out = self.model_dump(mode="json")
        for k, default in _LATER_FIELDS.items():
            if out.get(k) == default:
                out.pop(k, None)
        return out


# --- the space ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gene:
    """One position of the genome: a decision or a component on/off switch."""

    name: str
    choices: tuple[Scalar, ...]
    group: str | None = None  # component group, None for decisions

    @property
    def is_component(self) -> bool:
        return self.group is not None


class SearchSpace:
    """A validated space. Immutable; equal spaces have equal :attr:`hash`."""

    def __init__(self, spec: SpaceFile, source: str = "<memory>"):
        self.spec = spec
        self.source = source
        self.genes: tuple[Gene, ...] = tuple(
            [Gene(d.name, d.choices) for d in spec.decisions.values()]
            + [Gene(c, (0, 1), group) for group, names in spec.components.items() for c in names]
        )
        self._index = {g.name: i for i, g in enumerate(self.genes)}
        self.n_decisions = len(spec.decisions)

    # identity
    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def hash(self) -> str:
        blob = json.dumps(self.spec.dump(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, genes={len(self.genes)}, size={self.size()}, hash={self.hash})"

    def to_dict(self) -> dict:
        return self.spec.dump()

    # structure
    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(g.choices) for g in self.genes)

    @property
    def component_slice(self) -> slice:
        return slice(self.n_decisions, len(self.genes))

    def choices(self) -> dict[str, tuple[Scalar, ...]]:
        """Each decision's (and component's) choices, by name."""
        return {g.name: g.choices for g in self.genes}

    def active(self, genome: Sequence[int]) -> list[bool]:
        """Which genes matter for this genome (a decision's ``when`` may switch it off)."""
        values = {g.name: g.choices[genome[i]] for i, g in enumerate(self.genes[: self.n_decisions])}
        out = []
        for g in self.genes:
            d = self.spec.decisions.get(g.name) if not g.is_component else None
            out.append(d is None or all(values[r] in allowed for r, allowed in d.when.items()))
        return out

    def _check_shape(self, genome: Sequence[int]) -> None:
        if len(genome) != len(self.genes):
            raise SpaceError(f"genome has {len(genome)} genes, space {self.name!r} has {len(self.genes)}")
        for g, v in zip(self.genes, genome):
            if not (isinstance(v, int) and 0 <= v < len(g.choices)):
                raise SpaceError(f"gene {g.name!r}={v!r} out of range 0..{len(g.choices) - 1}")

    def n_components_on(self, genome: Sequence[int]) -> int:
        return sum(genome[self.component_slice])

    def is_valid(self, genome: Sequence[int]) -> bool:
        try:
            self._check_shape(genome)
        except SpaceError:
            return False
        return self.n_components_on(genome) >= self.spec.min_components

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """One genome per model: inactive genes set to 0, and (``equivalence: [scratch_components]``)
        the scratch components on replaced by the first that many scratch-eligible ones (see the
        module docstring), so equivalent genomes share one ``Candidate.key``."""
        self._check_shape(genome)
        g = [int(v) if a else 0 for v, a in zip(genome, self.active(genome))]
        if "scratch_components" in self.spec.equivalence:
            eligible = self._scratch_eligible(g)
            k = sum(g[i] for i in eligible)
            for j, i in enumerate(eligible):
                g[i] = int(j < k)
        if "single_component_fusion" in self.spec.equivalence and "fusion" in self._index \
                and self.n_components_on(g) < 2:
            g[self._index["fusion"]] = 0
        return tuple(g)

    def _source(self, genome: Sequence[int]) -> str:
        """The ``source`` decision's value for a genome (the Architecture default without one)."""
        i = self._index.get("source")
        if i is None or i >= self.n_decisions or not self.active(genome)[i]:
            return Architecture.model_fields["source"].default
        return str(self.genes[i].choices[genome[i]])

    def _scratch_eligible(self, genome: Sequence[int]) -> list[int]:
        """Gene indices of the components that start from scratch in this genome, in genome order."""
        scratch = set(self.spec.scratch) if self._source(genome) == "library" else None
        return [i for i in range(self.n_decisions, len(self.genes))
                if scratch is None or self.genes[i].name in scratch]

    def repair(self, genome: Sequence[int], rng: random.Random) -> tuple[int, ...]:
        """Switch on random components until the ``min_components`` constraint holds."""
        g = list(int(x) for x in genome)
        off = [i for i in range(self.n_decisions, len(g)) if g[i] == 0]
        rng.shuffle(off)
        while self.n_components_on(g) < self.spec.min_components:
            g[off.pop()] = 1
        return self.canonical(g)

    # sampling and counting
    def sample(self, seed: int | random.Random | None = None) -> Candidate:
        """A uniform draw over decisions (rejection keeps the component constraint)."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        if self.spec.min_components > sum(len(v) for v in self.spec.components.values()):
            raise SpaceError(f"space {self.name!r} takes its components from its library: bind it first "
                             f"(a job does; promptsearch.library.bind_library)")
        while True:
            g = [rng.randrange(len(gene.choices)) for gene in self.genes]
            if self.is_valid(g):
                return self.candidate(g)

    def _controllers(self) -> list[str]:
        refs = {r for d in self.spec.decisions.values() for r in d.when}
        if "scratch_components" in self.spec.equivalence and "source" in self.spec.decisions:
            refs.add("source")  # the component count depends on it
        return sorted(refs, key=self._index.__getitem__)

    def _component_counts(self, source: str | None = None) -> dict[int, int]:
        """Distinct component sets (canonical) with at least ``min_components`` on, by how many are on."""
        n = sum(len(v) for v in self.spec.components.values())
        lo = self.spec.min_components
        if "scratch_components" not in self.spec.equivalence:
            return {k: math.comb(n, k) for k in range(lo, n + 1)}
        if (source or Architecture.model_fields["source"].default) != "library":
            return {k: 1 for k in range(lo, n + 1)}  # only how many are on matters
        s = len(self.spec.scratch)  # scratch-eligible: only how many; the library-backed ones by name
        out: dict[int, int] = {}
        for j in range(n - s + 1):
            for k in range(s + 1):
                if j + k >= lo:
                    out[j + k] = out.get(j + k, 0) + math.comb(n - s, j)
        return out

    def size(self) -> int:
        """The number of distinct valid architectures (canonical genomes)."""
        ctrl = self._controllers()
        moot = "single_component_fusion" in self.spec.equivalence and "fusion" in self.spec.decisions
        total = 0
        for combo in itertools.product(*(self.spec.decisions[c].choices for c in ctrl)):
            fixed = dict(zip(ctrl, combo))
            n, fusions = 1, 1  # ways of the other decisions; of the fusion (counted apart: moot for < 2 components)
            for d in self.spec.decisions.values():
                if d.name in fixed:
                    continue
                if all(fixed[r] in allowed for r, allowed in d.when.items()):
                    if moot and d.name == "fusion":
                        fusions = len(d.choices)
                    else:
                        n *= len(d.choices)
            # a combination whose controllers are themselves inactive is counted once, not per value
            g = [0] * len(self.genes)
            for name, value in fixed.items():
                g[self._index[name]] = self.spec.decisions[name].choices.index(value)
            act = self.active(g)
            if any(not act[self._index[c]] and fixed[c] != self.spec.decisions[c].choices[0] for c in ctrl):
                continue
            counts = self._component_counts(self._source(g))
            few = sum(c for k, c in counts.items() if k < 2)
            many = sum(counts.values()) - few
            if not moot:
                total += n * (many + few)
            elif "fusion" in fixed:  # the fusion is itself a controller: a moot one counts at its first value only
                total += n * (many + (few if g[self._index["fusion"]] == 0 else 0))
            else:
                total += n * (fusions * many + few)
        return total

    def enumerate(self) -> Iterator[Candidate]:
        """Every distinct valid candidate, in genome order (only sensible for small spaces)."""
        seen: set[tuple[int, ...]] = set()
        for g in itertools.product(*(range(len(x.choices)) for x in self.genes)):
            if self.is_valid(g):
                c = self.canonical(g)
                if c not in seen:
                    seen.add(c)
                    yield self.candidate(c)

    # genome <-> architecture
    def candidate(self, genome: Sequence[int]) -> Candidate:
        self._check_shape(genome)
        if self.n_components_on(genome) < self.spec.min_components:
            raise SpaceError(f"space {self.name!r} needs at least {self.spec.min_components} component(s) on")
        return Candidate(self.canonical(genome), self)

    def decode(self, genome: Sequence[int]) -> dict[str, Any]:
        """Genome -> readable architecture dict (active decisions and the components on)."""
        genome = self.canonical(genome)
        act = self.active(genome)
        arch: dict[str, Any] = {}
        for i, g in enumerate(self.genes[: self.n_decisions]):
            if act[i]:
                arch[g.name] = g.choices[genome[i]]
        if self.spec.components:
            arch["components"] = {
                group: [n for n in names if genome[self._index[n]]]
                for group, names in self.spec.components.items()
            }
        return arch

    def encode(self, arch: Mapping[str, Any]) -> tuple[int, ...]:
        """Architecture dict -> canonical genome; unknown keys or values are a SpaceError."""
        genome = [0] * len(self.genes)
        for key, value in arch.items():
            if key == "components":
                for group, names in (value or {}).items():
                    for n in names:
                        if n not in self._index or self.genes[self._index[n]].group != group:
                            raise SpaceError(f"component {group}.{n} is not in space {self.name!r}")
                        genome[self._index[n]] = 1
                continue
            if key not in self.spec.decisions:
                raise SpaceError(f"decision {key!r} is not in space {self.name!r}")
            choices = self.spec.decisions[key].choices
            if value not in choices:
                raise SpaceError(f"{key}={value!r} is not a choice of space {self.name!r}: {list(choices)}")
            genome[self._index[key]] = choices.index(value)
        return self.candidate(genome).genome

    def architecture(self, genome: Sequence[int]) -> Architecture:
        arch = self.decode(genome)
        arch["components"] = {k: tuple(v) for k, v in arch.get("components", {}).items() if v}
        return Architecture(**arch)

    def fix(self, **values: Scalar) -> SearchSpace:
        """A copy of this space with some decisions pinned to one choice (e.g. ``module='pixel'``
        for a CNN backbone, which cannot take token prompts)."""
        decisions = dict(self.spec.decisions)
        for name, value in values.items():
            if name not in decisions:
                continue
            d = decisions[name]
            if value not in d.choices:
                raise SpaceError(f"cannot fix {name}={value!r}: not a choice of space {self.name!r}")
            decisions[name] = d.model_copy(update={"choices": (value,)})
        # drop 'when' values no longer possible
        cleaned = {}
        for k, d in decisions.items():
            when = {r: tuple(x for x in a if x in decisions[r].choices) for r, a in d.when.items()}
            cleaned[k] = d.model_copy(update={"when": when})
        spec = self.spec.model_copy(update={"decisions": cleaned})
        return SearchSpace(SpaceFile.model_validate(spec.model_dump()), self.source)


@dataclass(frozen=True)
class Candidate:
    """A point in a space: its canonical genome, with the architecture derived from it."""

    genome: tuple[int, ...]
    space: SearchSpace = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "genome", tuple(int(x) for x in self.genome))

    @property
    def architecture(self) -> dict[str, Any]:
        return self.space.decode(self.genome)

    @property
    def arch(self) -> Architecture:
        return self.space.architecture(self.genome)

    @property
    def key(self) -> str:
        """A stable hash for de-duplication: same space, same architecture -> same key."""
        return hashlib.sha256(f"{self.space.hash}:{list(self.genome)}".encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space.name, "space_hash": self.space.hash, "genome": list(self.genome),
                "architecture": self.architecture, "key": self.key}

    @classmethod
    def from_json(cls, space: SearchSpace, data: Mapping[str, Any] | str) -> Candidate:
        """Accepts ``{"genome": [...]}`` or ``{"architecture": {...}}`` (or the bare architecture)."""
        if isinstance(data, str):
            data = json.loads(data)
        if data.get("space_hash") not in (None, space.hash):
            raise SpaceError(f"candidate was made for space hash {data['space_hash']}, not {space.hash}")
        if "genome" in data:
            return space.candidate(list(data["genome"]))
        arch = data.get("architecture", data)
        return space.candidate(space.encode(arch))


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    spec, _ = parse_document(text, source, SpaceFile, SpaceError, "a space file is a mapping with 'name' and 'decisions'")
    return SearchSpace(spec, source)


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a space file; a name without a path looks in the bundled ``search_spaces/``."""
    p = resolve_space_path(path)
    return parse_space(p.read_text(), str(path))


SPACES_DIR = bundled("search_spaces")  # the bundled spaces: medical, pixel, vpt, ...


def resolve_space_path(path: str | Path) -> Path:
    """A space file, or the name of a bundled space."""
    found = find_named(path, SPACES_DIR)
    if found is None:
        raise SpaceError(f"space file {str(path)!r} not found (looked in the current directory and {SPACES_DIR})")
    return found


def list_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
