"""Search spaces: validation errors name file, line and field; genome <-> architecture round trips.

    python -m pytest tests/test_space.py -q
"""

from __future__ import annotations

import json
import random
import textwrap
import typing
from pathlib import Path

import pytest

from promptsearch.space import (Architecture, Candidate, SearchSpace, SpaceError, list_spaces, load_space,
                                parse_space)

GOOD = textwrap.dedent("""\
    name: tiny
    components:
      anatomical: [lung, heart]
      modality: [xray]
    min_components: 1
    decisions:
      module:
        choices: [pixel, token]
      tokens:
        choices: [2, 4]
        when: {module: [token]}
      fusion:
        choices: [concat, gate]
    """)


def test_good_space_loads_into_frozen_typed_objects():
    s = parse_space(GOOD, "tiny.yaml")
    assert [g.name for g in s.genes] == ["module", "tokens", "fusion", "lung", "heart", "xray"]
    assert s.cardinalities == (2, 2, 2, 2, 2, 2)
    with pytest.raises(Exception):
        s.spec.name = "other"  # frozen


@pytest.mark.parametrize("text, line, field, reason", [
    (GOOD.replace("min_components: 1", "min_components: 1\ncolour: red"), 6, "colour", "unknown key"),
    (GOOD.replace("    choices: [concat, gate]", "    choices: [concat, gate]\n    colour: red"),
     14, "decisions.fusion.colour", "unknown key"),
    (GOOD.replace("choices: [2, 4]", "choices: [2, many]"), 10, "decisions.tokens.choices", "'many' is not valid"),
    (GOOD.replace("choices: [2, 4]", "choices: [2, 2]"), 10, "decisions.tokens.choices", "duplicate choices"),
    (GOOD.replace("choices: [concat, gate]", "choices: []"), 13, "decisions.fusion.choices", "at least 1"),
    (GOOD.replace("modality: [xray]", "modality: [lung]"), 2, "components", "duplicate component name 'lung'"),
    (GOOD.replace("choices: [concat, gate]", "choices: [concat, sum]"), 13, "decisions.fusion.choices", "'sum'"),
    (GOOD.replace("  fusion:", "  colour:"), 12, "decisions.colour", "unknown decision 'colour'"),
    (GOOD.replace("when: {module: [token]}", "when: {fusion: [gate]}"), 11, "decisions.tokens.when.fusion",
     "listed before it"),
    (GOOD.replace("when: {module: [token]}", "when: {module: [cnn]}"), 11, "decisions.tokens.when.module",
     "not choices"),
    (GOOD.replace("min_components: 1", "min_components: 5"), 5, "min_components", "only 3 components"),
    (GOOD.replace("name: tiny", "name: 7"), 1, "name", "string"),
    (GOOD.replace("choices: [2, 4]", "choices: yes"), 10, "decisions.tokens.choices", "tuple"),
    (GOOD + "  fusion:\n    choices: [gate]\n", 14, "decisions.fusion", "duplicate key"),
    (GOOD.replace("    choices: [2, 4]", "    choices: [2, 4]\n   bad: ["), 11, "", "not valid YAML"),
    (GOOD.replace("decisions:", "decision:"), 1, "decisions", "missing"),
])
def test_bad_space_names_file_line_field_and_reason(text, line, field, reason):
    with pytest.raises(SpaceError) as e:
        parse_space(text, "bad.yaml")
    msg = str(e.value)
    assert f"bad.yaml:{line}" in msg, msg
    assert field in msg and reason in msg, msg
    assert "Traceback" not in msg


def test_empty_file_and_non_mapping():
    with pytest.raises(SpaceError, match="bad.yaml: the file is empty"):
        parse_space("", "bad.yaml")
    with pytest.raises(SpaceError, match="bad.yaml:1: a space file is a mapping"):
        parse_space("- a\n- b\n", "bad.yaml")


def test_missing_file_says_where_it_looked():
    with pytest.raises(SpaceError, match="not found.*search_spaces"):
        load_space("no_such_space")


@pytest.mark.parametrize("name", list_spaces())
def test_every_shipped_space_round_trips(name):
    s = load_space(name)
    rng = random.Random(0)
    for _ in range(200):
        c = s.sample(rng)
        assert s.is_valid(c.genome)
        assert s.encode(c.architecture) == c.genome  # architecture -> genome -> same
        again = Candidate.from_json(s, json.loads(json.dumps(c.to_json())))
        assert again == c and again.key == c.key
        assert isinstance(c.arch, Architecture)
        assert len(c.arch.component_names) >= s.spec.min_components


def test_seeded_sampling_is_reproducible_and_varied():
    s = load_space("medical")
    a = [s.sample(random.Random(7)).genome for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng1, rng2 = random.Random(3), random.Random(3)
    seq1 = [s.sample(rng1).genome for _ in range(50)]
    assert seq1 == [s.sample(rng2).genome for _ in range(50)]
    assert len(set(seq1)) == 50


def test_inactive_genes_are_canonicalised_so_duplicates_share_a_key():
    s = parse_space(GOOD, "tiny.yaml")
    pixel_a = s.candidate([0, 0, 1, 1, 0, 0])
    pixel_b = s.candidate([0, 1, 1, 1, 0, 0])  # tokens is inactive for pixel prompts
    assert pixel_a.genome == pixel_b.genome == (0, 0, 1, 1, 0, 0)
    assert pixel_a.key == pixel_b.key
    assert "tokens" not in pixel_a.architecture
    token = s.candidate([1, 1, 1, 1, 0, 0])
    assert token.architecture["tokens"] == 4 and token.key != pixel_a.key


def test_size_equals_enumeration():
    s = parse_space(GOOD, "tiny.yaml")
    all_ = list(s.enumerate())
    # (pixel: 2 fusions + token: 2 tokens * 2 fusions) * 7 non-empty component sets
    assert s.size() == len(all_) == (2 + 4) * 7
    assert len({c.key for c in all_}) == len(all_)
    vpt = load_space("vpt")
    assert vpt.size() == len(list(vpt.enumerate())) == 4 * 2 * 2 * 1 * 3


def test_single_component_fusion_makes_one_candidate_of_every_fusion_of_one_block():
    # the prompt modules build no fusion for fewer than two blocks: a pixel prompt of one component
    # is the same model under every fusion (same parameters, same output), so the rule folds them
    import torch

    from promptsearch.prompts import PixelPrompt, TokenPrompt

    plain = parse_space(GOOD, "tiny.yaml")
    s = parse_space(GOOD + "equivalence: [single_component_fusion]\n", "tiny.yaml")
    one = {"module": "pixel", "components": {"anatomical": ["lung"]}}
    a, b = (s.candidate(s.encode({**one, "fusion": f})) for f in ("concat", "gate"))
    assert a.key == b.key and a.architecture["fusion"] == "concat"
    two = {"module": "pixel", "components": {"anatomical": ["lung", "heart"]}}
    assert len({s.candidate(s.encode({**two, "fusion": f})).key for f in ("concat", "gate")}) == 2
    for module, build, x in (("pixel", lambda arch: PixelPrompt(arch, 32).eval(), torch.rand(2, 3, 32, 32)),  # (B, 3, S, S)
                             ("token", lambda arch: TokenPrompt(arch, 16, 2, 48).eval(), None)):
        built = []
        for f in ("concat", "gate"):
            torch.manual_seed(0)
            built.append(build(plain.candidate(plain.encode({**one, "module": module, "fusion": f})).arch))
        assert [p.shape for p in built[0].parameters()] == [p.shape for p in built[1].parameters()]
        assert torch.equal(built[0](x) if x is not None else built[0](), built[1](x) if x is not None else built[1]())
    # pixel: 2 fusions x 4 sets of two or more + 3 single sets; token: 2 tokens x as many
    assert s.size() == len(list(s.enumerate())) == (2 * 4 + 3) + 2 * (2 * 4 + 3) < plain.size()


def test_component_constraint_and_repair():
    s = load_space("medical")
    g = list(s.sample(0).genome)
    for i in range(s.n_decisions, len(g)):
        g[i] = 0
    assert not s.is_valid(g)
    with pytest.raises(SpaceError, match="at least 1 component"):
        s.candidate(g)
    fixed = s.repair(g, random.Random(0))
    assert s.is_valid(fixed) and s.n_components_on(fixed) == 1
    assert fixed[: s.n_decisions] == s.canonical(g)[: s.n_decisions]


def test_encode_rejects_unknown_values():
    s = load_space("medical")
    with pytest.raises(SpaceError, match="fusion='sum' is not a choice"):
        s.encode({"module": "token", "fusion": "sum", "components": {"modality": ["xray"]}})
    with pytest.raises(SpaceError, match="component anatomical.xray"):
        s.encode({"components": {"anatomical": ["xray"]}})
    with pytest.raises(SpaceError, match="space hash"):
        Candidate.from_json(s, {"genome": list(s.sample(0).genome), "space_hash": "0" * 16})


def test_fix_pins_a_decision_for_cnn_backbones():
    s = load_space("medical").fix(module="pixel")
    assert s.spec.decisions["module"].choices == ("pixel",)
    assert all(s.sample(i).architecture["module"] == "pixel" for i in range(30))
    assert s.size() < load_space("medical").size()
    with pytest.raises(SpaceError):
        load_space("vpt").fix(module="pixel")


def test_vocabulary_matches_model_registries():
    from promptsearch.prompts import FUSIONS, INITS, PLACEMENTS
    from promptsearch.space import FusionName as Fusion
    from promptsearch.space import Init, Placement

    assert set(FUSIONS) == set(typing.get_args(Fusion))
    assert set(PLACEMENTS) == set(typing.get_args(Placement))
    assert set(INITS) == set(typing.get_args(Init))


def test_space_hash_is_stable_and_content_based():
    a, b = load_space("medical"), load_space("medical")
    assert a.hash == b.hash and a == b
    assert a.hash != load_space("pixel").hash
    assert isinstance(a, SearchSpace)


# --- the adapter / LoRA vocabulary ------------------------------------------------------------------
# hashes of the shipped spaces before the adapter and LoRA decisions were added: new vocabulary
# must not change them (a workspace's trials are keyed by the space hash)
HASHES_BEFORE_ADAPTERS = {"medical": "737d86f37fc02354", "pixel": "56af391d73e0a495", "vpt": "3b3f25a17930a237"}
# medical.yaml itself became the library-backed space (issue #11: new components, scratch, equivalence,
# source/tuning decisions); its first version, kept as a fixture, must still hash and decode as before
OLD_FILES = {"medical": Path(__file__).parent / "fixtures" / "spaces" / "medical_v1.yaml"}


@pytest.mark.parametrize("name", sorted(HASHES_BEFORE_ADAPTERS))
def test_new_decisions_default_to_off_and_keep_old_spaces_as_they_were(name):
    s = load_space(OLD_FILES.get(name, name))
    assert s.hash == HASHES_BEFORE_ADAPTERS[name]
    new = {"adapter", "adapter_reduction", "adapter_blocks", "lora_rank", "lora_targets", "lora_blocks",
           "source", "tuning"}
    rng = random.Random(0)
    for _ in range(50):
        c = s.sample(rng)
        assert not new & set(c.architecture)  # the decoded dict is what it was
        assert c.arch.adapter == "none" and c.arch.lora_rank == 0 and c.arch.module in ("token", "pixel")


def test_peft_space_size_equals_enumeration_and_covers_the_family():
    s = load_space("peft")
    all_ = list(s.enumerate())
    assert s.size() == len(all_) == len({c.key for c in all_})
    kinds = {(a.module, a.adapter, a.lora_rank > 0) for a in (c.arch for c in all_)}
    assert {("token", "none", False), ("token", "none", True), ("none", "bottleneck", False), ("none", "none", True),
            ("pixel", "none", False), ("none", "conv", False)} <= kinds
    cnn = s.fix(module="none", adapter="conv", lora_rank=0)
    assert {c.arch.adapter for c in cnn.enumerate()} == {"conv"}


@pytest.mark.parametrize("decision, choices, reason", [
    ("lora_targets", "[v+q]", "in that order"), ("lora_targets", "[q+q]", "distinct"),
    ("lora_targets", "[qkv]", "lora_targets must join"), ("adapter_blocks", "[last_0]", "blocks must be"),
    ("lora_blocks", "[some]", "blocks must be"), ("lora_rank", "[-1]", "greater than or equal to 0"),
    ("adapter", "[lora]", "'lora' is not valid"), ("adapter_reduction", "[0]", "greater than or equal to 1"),
    ("depth", "[deepest]", "depth must be"),
])
def test_new_decisions_are_checked_at_load_with_their_line(decision, choices, reason):
    text = f"name: x\ndecisions:\n  module:\n    choices: [none]\n  {decision}:\n    choices: {choices}\n"
    with pytest.raises(SpaceError) as e:
        parse_space(text, "bad.yaml")
    msg = str(e.value)
    assert "bad.yaml:6" in msg and f"decisions.{decision}.choices" in msg and reason in msg, msg
