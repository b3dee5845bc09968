"""YAML with line numbers, and pydantic errors as ``file:line: field: reason`` — the one helper
that space files, job files, catalogues and request bodies share.

    python -c "from promptsearch.yamlio import compose_yaml; print(compose_yaml('a:\n  b: 1\n', 'x.yaml'))"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:  # imported where YAML is read: the job state's readers need only the errors
    import yaml

M = TypeVar("M", bound=BaseModel)


class YamlError(ValueError):
    """Text that is not valid YAML, or a document that fails validation; the message names the
    source, line and field."""


class JobError(YamlError):
    """An invalid job (file, field or override): the message names the file, line and field.
    (Here, not in :mod:`promptsearch.jobs`, so the job state's readers — ``promptsearch jobs`` —
    need not import the job schema; ``promptsearch.jobs`` re-exports it.)"""


def compose_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML into plain data plus a map from field path to 1-based line; duplicate keys fail."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise YamlError(f"{source}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)  # a mapping entry keeps its key's line
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for k, v in node.value:
                key = yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), k) if isinstance(k, yaml.ScalarNode) else str(k)
                if key in out:
                    raise YamlError(f"{source}:{k.start_mark.line + 1}: {'.'.join(map(str, path + (key,)))}: duplicate key")
                lines[path + (key,)] = k.start_mark.line + 1
                out[key] = walk(v, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(v, path + (i,)) for i, v in enumerate(node.value)]
        return yaml.SafeLoader("").construct_object(node, deep=True)

    if root is None:
        raise YamlError(f"{source}: the file is empty")
    return walk(root, ()), lines


def parse_document(text: str, source: str, model: type[M], error: type[Exception], what: str) -> tuple[M, dict[tuple, int]]:
    """YAML text -> a validated pydantic ``model`` and its line map; every problem raises ``error``
    naming ``source:line: field``. ``what`` says what the top level must be (for a non-mapping)."""
    try:
        data, lines = compose_yaml(text, source)
    except YamlError as e:
        raise error(str(e)) from None
    if not isinstance(data, dict):
        raise error(f"{source}:1: {what}")
    try:
        return model.model_validate(data), lines
    except ValidationError as e:
        raise error(format_validation(e, source, lines)) from None


def error_line(loc: tuple, lines: dict[tuple, int]) -> int | None:
    """The line of the nearest enclosing field of ``loc`` that has one."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def where(source: str, lines: dict[tuple, int], *path: Any) -> str:
    """``source:line: dotted.path`` for a field."""
    line = error_line(tuple(path), lines)
    return f"{source}{f':{line}' if line else ''}: {'.'.join(map(str, path))}"


def error_messages(e: ValidationError, source: str | None = None, lines: dict[tuple, int] | None = None) -> list[str]:
    """One ``[source[:line]: ]field: reason`` per pydantic error. A validator's message that starts
    with ``@a.b: ...`` names its own field path below the one pydantic reports."""
    lines = lines or {}
    msgs = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith("@"):  # a cross-field check names its own field path
            path, _, msg = msg[1:].partition(": ")
            loc = loc + tuple(path.split("."))
        field = ".".join(str(x) for x in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        if source is None:
            msgs.append(f"{field}: {msg}")
        else:
            line = error_line(loc, lines)
            msgs.append(f"{source}{f':{line}' if line else ''}: {field}: {msg}")
    return msgs


def format_validation(e: ValidationError, source: str, lines: dict[tuple, int] | None = None) -> str:
    """Every error of ``e``, one per line, each naming the source, line and field."""
    return "\n".join(error_messages(e, source, lines))


def first_error(e: ValidationError) -> str:
    """The first error as ``field: reason`` (for one-line replies: an HTTP 422, a nested option)."""
    return error_messages(e)[0]
