"""What a spec's fields are written with, once: bounds the domain checks and both
schemas show (the API's OpenAPI and the CRD's), and where a field sits in its Kubernetes
resource. Bounds are markers pydantic leaves alone, so the domain reports them naming
the field the same way whichever door the value came in by."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from annotated_types import Interval
from pydantic import BaseModel, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ..errors import Invalid
from ..forget import Duration

JsonSchema = dict[str, Any]
# Numbers within what the catalog's bigint columns hold (a larger one is refused, not a
# database error): ids from 1.
INT64_MAX = 2**63 - 1
INT64_MIN = -INT64_MAX - 1
Int64 = Annotated[int, Interval(ge=INT64_MIN, le=INT64_MAX)]
Id = Annotated[int, Interval(ge=1, le=INT64_MAX)]
Spec = TypeVar("Spec", bound=BaseModel)


class Bound:
    """A rule on a field's value: checked by `check`, shown in the JSON schema."""

    def schema(self) -> JsonSchema:
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        for branch in schema.get("anyOf", [schema]):  # `X | None`: on X
            if branch.get("type") != "null":
                branch.update(self.schema())
        return schema


@dataclass(frozen=True)
class Floor(Bound):
    minimum: int
    message: str = ""

    def schema(self) -> JsonSchema:
        return {"minimum": self.minimum}

    def problem(self, value: int) -> str | None:
        return None if value >= self.minimum else self.message or f"must be at least {self.minimum}"


@dataclass(frozen=True)
class Span(Bound):
    minimum: int
    maximum: int
    message: str

    def schema(self) -> JsonSchema:
        return {"minimum": self.minimum, "maximum": self.maximum}

    def problem(self, value: int) -> str | None:
        return None if self.minimum <= value <= self.maximum else self.message


@dataclass(frozen=True)
class MaxLength(Bound):
    maximum: int

    def schema(self) -> JsonSchema:
        return {"maxLength": self.maximum}

    def problem(self, value: str) -> str | None:
        return None if len(value) <= self.maximum else f"at most {self.maximum} characters"


@dataclass(frozen=True)
class Pattern(Bound):
    pattern: str
    message: str

    def schema(self) -> JsonSchema:
        return {"pattern": self.pattern}

    def problem(self, value: str) -> str | None:
        return None if re.fullmatch(self.pattern, value) else self.message


DURATION_PATTERN = r"^(\d+[ymdh])+$"


class DurationText(Bound):
    """restic's duration (1y2m3d4h)."""

    def schema(self) -> JsonSchema:
        return {"pattern": DURATION_PATTERN}

    def problem(self, value: str) -> str | None:
        try:
            Duration.parse(value)
        except ValueError as error:
            return str(error)
        return None


@dataclass(frozen=True)
class Checked(Bound):
    """A rule of its own that raises Invalid naming the part it refuses (`rules.<name>`)."""

    check: Callable[[Any], object]

    def schema(self) -> JsonSchema:
        return {}

    def problem(self, value: Any) -> str | None:
        self.check(value)
        return None


@dataclass(frozen=True)
class Crd:
    """Where the field sits in the resource's spec (`scope.keyPrefix`), and how the
    resource writes it: `schema` replaces the JSON schema when the two differ (`more`
    adds to it), `read`
    turns the resource's value into the spec's (camelCase rule names) and `key_name`
    names a key of it back in the resource's words; `shown=False`: another field of the
    resource shows it (a bucket by name, not by id)."""

    path: str
    schema: JsonSchema | None = None
    more: JsonSchema | None = None  # added to the schema (CEL rules, say)
    read: Callable[[Any], Any] | None = None
    key_name: Callable[[str], str] = str
    shown: bool = True


def _markers(model: type[BaseModel], kind: type[Any]) -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, kind):
                yield name, marker


def check(spec: BaseModel) -> None:
    """Every bound of the spec's fields; the first broken one raises Invalid naming it."""
    for name, bound in _markers(type(spec), Bound):
        value = getattr(spec, name)
        if value is not None and (problem := bound.problem(value)) is not None:
            raise Invalid(problem, field=name)


def parse(model: type[Spec], values: Mapping[str, Any]) -> Spec:
    """A spec from plain values, a wrong type raising Invalid naming the field."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Invalid(first["msg"], field=where or None) from None


# --- the Kubernetes resource's side -----------------------------------------------------


def crd_path(model: type[BaseModel], field: str) -> str:
    """The resource's name of a spec field: `key_prefix` -> `scope.keyPrefix`,
    `rules.keep_last` -> `rules.keepLast`."""
    head, _, rest = field.partition(".")
    crd = dict(_markers(model, Crd)).get(head)
    if crd is None:
        return field
    return ".".join([crd.path, *(crd.key_name(part) for part in rest.split(".") if part)])


def read_resource(model: type[BaseModel], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's values of the fields the resource's spec holds, by their resource paths."""
    values: dict[str, Any] = {}
    for name, crd in _markers(model, Crd):
        node: Any = spec
        for part in crd.path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None and crd.shown:
            values[name] = crd.read(node) if crd.read else node
    return values


def crd_properties(*models: type[BaseModel]) -> JsonSchema:
    """The `properties` of a CRD's spec from the models' fields that the resource holds,
    each at its path, in the structural form the API server wants."""
    root: JsonSchema = {}
    for model in models:
        schema = model.model_json_schema()
        definitions = schema.get("$defs", {})
        for name, crd in _markers(model, Crd):
            if not crd.shown:
                continue
            field = structural(schema["properties"][name], definitions)
            if crd.schema is not None:  # the resource's own form, the spec's description
                described = {k: v for k, v in field.items() if k == "description"}
                field = {**described, **crd.schema}
            field.update(crd.more or {})
            *parents, leaf = crd.path.split(".")
            node = root
            for parent in parents:
                node = node.setdefault(parent, {"type": "object", "properties": {}})["properties"]
            node[leaf] = field
    return root


def structural(schema: JsonSchema, definitions: Mapping[str, JsonSchema]) -> JsonSchema:
    """pydantic's JSON Schema of a field as Kubernetes takes it: references inlined,
    `X | None` as X (an omitted field is the null), no titles, no null defaults."""
    if "$ref" in schema:
        schema = {**definitions[schema["$ref"].rsplit("/", 1)[1]], **schema}
        del schema["$ref"]
    if "anyOf" in schema:
        (branch,) = [b for b in schema["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        schema = {**structural(branch, definitions), **rest}
    out: JsonSchema = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in ("minimum", "maximum") and value in (INT64_MIN, INT64_MAX):
            continue  # what a Kubernetes integer (int64) holds anyway
        if key in ("items", "additionalProperties") and isinstance(value, dict):
            value = structural(value, definitions)
        elif key == "properties":
            value = {k: structural(v, definitions) for k, v in value.items()}
        out[key] = value
    return out


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
