"""The generic importer's mapping: a YAML file, validated as a pydantic model.

A mapping names the source column behind each canonical event field, maps source event
type values to canonical types, and says how to read timestamps and build the catalog;
docs/importers.md documents every key. `examples/mappings/user-item-event.yaml` is an
annotated template; the mappings bundled with the package (`mappings/<name>.yaml`, e.g. the
one `--format rees46` reads with) are found with `bundled_mapping`.

An invalid mapping raises MappingError naming the mapping file and the key at fault
(`fields.buyer_id`, `catalog.title`), or the YAML line; the checks are the types below, each
with the message a user needs, and `GenericMapping._complete` for rules across keys.
"""

from __future__ import annotations

import math
import os
import string
import zoneinfo
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from simpersona.ingest.errors import MappingError
from simpersona.schema import EVENT_TYPES, EVENTS_SCHEMA, sanitize_shop_id

# Canonical event fields a mapping may fill (shop_id has its own keys).
MAPPABLE_FIELDS: tuple[str, ...] = tuple(f for f in EVENTS_SCHEMA if f != "shop_id")
REQUIRED_FIELDS: tuple[str, ...] = ("ts", "event_type", "buyer_id")
NUMERIC_FIELDS: tuple[str, ...] = ("quantity", "price", "order_value")  # quantity: whole
PER_TYPE_FIXED: tuple[str, ...] = ("event_type", "ts", "event_id")  # same for every type
UNMAPPABLE_VALUES = (None, "unmappable")
TEMPLATE_PARTS: tuple[str, ...] = ("last", "path")  # {column:last}, {column:path}


class Invalid(ValueError):
    """A check that failed at `at`: keys below the value being checked (a constant's name,
    or, from a rule across keys, the whole key path)."""

    def __init__(self, message: str, *at: str) -> None:
        super().__init__(message)
        self.at = at


# ---- values: one check each, with the message a user needs ---------------------------------
def _optional(check: Callable[[Any], Any], empty: Any = None) -> PlainValidator:
    return PlainValidator(lambda v: empty if v is None else check(v))


def _column(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must name a source column")
    return v.strip()


def _columns(v: Any) -> tuple[str, ...]:
    if isinstance(v, str) and v.strip():
        return (v.strip(),)
    if isinstance(v, list) and v and all(isinstance(c, str) and c.strip() for c in v):
        return tuple(c.strip() for c in v)
    raise ValueError("must name a column or a list of columns")


def template_parts(template: str) -> list[tuple[str, str | None, str | None]]:
    """(text, column, part) pieces of a catalog template: `"{brand} {category_code:last}"`
    -> `("", "brand", None), (" ", "category_code", "last")`."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"not a valid template ({e}): {template!r}") from e
    out: list[tuple[str, str | None, str | None]] = []
    for text, column, part, conversion in pieces:
        if column is not None and (
            not column.strip() or conversion is not None or (part and part not in TEMPLATE_PARTS)
        ):
            raise ValueError(
                f"bad placeholder in {template!r}: write {{column}}, {{column:last}} or "
                "{column:path}"
            )
        out.append((text, column.strip() if column is not None else None, part or None))
    return out


def _templates(v: Any) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise ValueError("must be a template or a list of templates")
    for t in items:
        template_parts(t)
    return tuple(items)


def _constants(per_type: bool) -> Callable[[Any], dict[str, Any]]:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of field: value")
        out: dict[str, Any] = {}
        for k, v in ((str(k), v) for k, v in value.items()):
            if k not in MAPPABLE_FIELDS or k == "ts":
                raise Invalid("not a canonical event field that can be constant", k)
            if per_type and k in PER_TYPE_FIXED:
                raise Invalid("not a field that can depend on the event type", k)
            if k in NUMERIC_FIELDS:
                ok = isinstance(v, int | float) and not isinstance(v, bool)
                ok = ok and not (isinstance(v, float) and not math.isfinite(v))
                if not ok or (k == "quantity" and not (isinstance(v, int) or v.is_integer())):
                    raise Invalid("must be a number", k)
            elif not isinstance(v, str | int) or isinstance(v, bool):
                raise Invalid("must be a string", k)
            out[k] = str(v) if k == "event_type" else v
        return out

    return check


def _field_key(k: Any) -> str:
    if str(k) == "shop_id":
        raise ValueError("use the top-level shop_id or shop_id_column keys")
    if str(k) not in MAPPABLE_FIELDS:
        raise ValueError(f"not a canonical event field; choose from {', '.join(MAPPABLE_FIELDS)}")
    return str(k)


def _per_type_field_key(k: Any) -> str:
    if str(k) not in MAPPABLE_FIELDS or str(k) in PER_TYPE_FIXED:
        raise ValueError("not a field that can depend on the event type")
    return str(k)


def _source_values(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError("must map source values to canonical event types")
    for k in v:
        if isinstance(k, bool) or k is None:  # named as YAML wrote it (`event_types.True`)
            raise Invalid("quote this key (YAML reads it as true/false/null)", str(k))
    return {str(k): value for k, value in v.items()}


def _type_or_unmappable(v: Any) -> str | None:
    if v in UNMAPPABLE_VALUES:
        return None
    if isinstance(v, str) and v in EVENT_TYPES:
        return v
    raise ValueError(
        f"{v!r} is not a canonical event type ({', '.join(EVENT_TYPES)}) nor null/unmappable"
    )


def _event_type(k: Any) -> str:
    if k not in EVENT_TYPES:
        raise ValueError(f"not a canonical event type ({', '.join(EVENT_TYPES)})")
    return k


def _shop(v: Any) -> str:
    if not isinstance(v, str | int) or isinstance(v, bool):
        raise ValueError("must be a string")
    return sanitize_shop_id(str(v))  # its ValueError says what is wrong


def _timestamp_format(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a strftime format or epoch_s/epoch_ms/epoch_us")
    return v


def _zone(v: Any) -> str:
    try:
        zoneinfo.ZoneInfo(str(v))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {v!r}") from e
    return str(v)


def _header(v: Any) -> bool | None:
    if not (isinstance(v, bool) or v == "auto"):
        raise ValueError("must be true, false or auto")
    return None if v == "auto" else v


def _column_list(v: Any) -> tuple[str, ...] | None:
    if not isinstance(v, list) or not all(isinstance(c, str) and c for c in v):
        raise ValueError("must be a list of column names")
    return tuple(v) or None


def _delimiter(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 1:
        raise ValueError("must be a single character")
    return v


def _separator(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _table(message: str) -> BeforeValidator:
    """A key holding `key: value` lines (null: none), else `message`."""

    def check(v: Any) -> dict:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(message)
        return v

    return BeforeValidator(check)


def _catalog(v: Any) -> Any:
    if v is False:
        return None
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError("must be a mapping (or false to write no catalog)")
    return v


Column = Annotated[str, PlainValidator(_column)]
OptionalColumn = Annotated[str | None, _optional(_column)]
Columns = Annotated[tuple[str, ...], _optional(_columns, ())]
Templates = Annotated[tuple[str, ...], _optional(_templates, ())]
Text = Annotated[str | None, _optional(str)]


# ---- the model -----------------------------------------------------------------------------
class _Keys(BaseModel):
    """A YAML mapping with known keys only; an unknown key is named with the known ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("must be a mapping (key: value lines)")
        for key in sorted(map(str, data)):
            if key not in cls.model_fields:
                known = ", ".join(sorted(cls.model_fields))
                raise Invalid(f"unknown key; known keys: {known}", key)
        return data


class CatalogMapping(_Keys):
    """How to build products/collections: `title`/`description` are columns (several are
    joined with spaces), or `title_format`/`description_format` templates (the first whose
    columns all have a value); `price` a column (default: last seen event price),
    `collection` a column whose values, split at `collection_separator`, give every level
    as a collection; `readable` turns `electronics.smartphone` / `sewing_machine` into Title
    Case words."""

    title: Columns = ()
    description: Columns = ()
    title_format: Templates = ()
    description_format: Templates = ()
    price: OptionalColumn = None
    collection: OptionalColumn = None
    collection_separator: Annotated[str | None, _optional(_separator)] = None
    readable: Annotated[bool, PlainValidator(_flag)] = False

    @model_validator(mode="after")
    def _one_way_per_text(self) -> CatalogMapping:
        for key in ("title", "description"):
            if getattr(self, key) and getattr(self, f"{key}_format"):
                raise Invalid(f"give {key} or {key}_format, not both", f"{key}_format")
        return self

    def template_columns(self) -> list[str]:
        """The columns the templates name, each once, in order."""
        cols = [
            c
            for t in (*self.title_format, *self.description_format)
            for _, c, _ in template_parts(t)
            if c is not None
        ]
        return list(dict.fromkeys(cols))


class TypeMapping(_Keys):
    """`by_event_type.<type>`: fields and constants for events of one canonical type."""

    fields: Annotated[
        dict[Annotated[str, PlainValidator(_per_type_field_key)], Column],
        _table("must be a mapping of field: column"),
    ] = {}
    constants: Annotated[dict[str, Any], _optional(_constants(per_type=True), {})] = {}


class GenericMapping(_Keys):
    """A parsed, validated mapping file (docs/importers.md documents the YAML keys);
    `source` is the file it was read from."""

    name: Text = None
    description: Text = None
    fields: Annotated[
        dict[Annotated[str, PlainValidator(_field_key)], Column],
        _table("must be a mapping of field: column"),
    ] = {}
    constants: Annotated[dict[str, Any], _optional(_constants(per_type=False), {})] = {}
    event_types: Annotated[
        dict[str, Annotated[str | None, PlainValidator(_type_or_unmappable)]],
        BeforeValidator(_source_values),
    ] = {}
    by_event_type: Annotated[
        dict[Annotated[str, PlainValidator(_event_type)], TypeMapping],
        _table("must map canonical event types to fields/constants"),
    ] = {}
    shop_id: Annotated[str | None, _optional(_shop)] = None
    shop_id_column: OptionalColumn = None
    timestamp_format: Annotated[str | None, _optional(_timestamp_format)] = None
    timezone: Annotated[str, PlainValidator(_zone)] = "UTC"
    header: Annotated[bool | None, PlainValidator(_header)] = None
    columns: Annotated[tuple[str, ...] | None, _optional(_column_list)] = None
    delimiter: Annotated[str, PlainValidator(_delimiter)] = ","
    catalog: Annotated[CatalogMapping | None, BeforeValidator(_catalog)] = CatalogMapping()

    _source: str = PrivateAttr("<mapping>")

    @model_validator(mode="after")
    def _complete(self) -> GenericMapping:
        for k in self.constants:
            if k in self.fields:
                raise Invalid("a field cannot be both a column and a constant", "constants", k)
        for k in REQUIRED_FIELDS:
            if k not in self.fields and not (k in self.constants and k != "ts"):
                raise Invalid("required: name the source column", "fields", k)
        if self.header is False and not self.columns:
            raise Invalid("header: false needs the column names in 'columns'", "columns")
        return self

    @property
    def source(self) -> str:
        return self._source

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GenericMapping:
        path = Path(path)
        if not path.is_file():
            raise MappingError("mapping file not found", file=path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MappingError(f"cannot read mapping file ({e})", file=path) from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            raise MappingError(f"not valid YAML{line}: {problem}", file=path) from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<mapping>") -> GenericMapping:
        if not isinstance(data, dict):
            raise MappingError("the mapping must be a YAML mapping (key: value lines)", file=source)
        try:
            mapping = cls.model_validate(data)
        except ValidationError as e:
            raise mapping_error(e, source) from e
        mapping._source = source
        return mapping

    # ---- columns ---------------------------------------------------------------------------
    def referenced_columns(self) -> list[str]:
        """Every source column the mapping names."""
        return [c for _, c in self.column_refs()]

    def column_refs(self) -> list[tuple[str, str]]:
        """(mapping key, source column) for every column the mapping names."""
        refs = [(f"fields.{k}", v) for k, v in self.fields.items()]
        for t, spec in self.by_event_type.items():
            refs += [(f"by_event_type.{t}.fields.{k}", v) for k, v in spec.fields.items()]
        if self.shop_id_column:
            refs.append(("shop_id_column", self.shop_id_column))
        if self.catalog:
            cat = self.catalog
            refs += [("catalog.title", c) for c in cat.title]
            refs += [("catalog.description", c) for c in cat.description]
            for key in ("title_format", "description_format"):
                for t in getattr(cat, key):
                    refs += [(f"catalog.{key}", c) for _, c, _ in template_parts(t) if c]
            if cat.price:
                refs.append(("catalog.price", cat.price))
            if cat.collection:
                refs.append(("catalog.collection", cat.collection))
        return refs


def mapping_error(error: ValidationError, source: str) -> MappingError:
    """The first problem pydantic found, as MappingError naming the file and the key path
    (`fields.colour`, `event_types.v`); further problems are listed after it."""
    problems = []
    for e in error.errors(include_url=False):
        at = [str(p) for p in e["loc"] if p != "[key]"]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, Invalid):
            at += cause.at
        message = str(cause) if isinstance(cause, ValueError) else e["msg"]
        problems.append((".".join(at) or None, message))
    (field, message), more = problems[0], problems[1:]
    if more:
        message += "; also " + "; ".join(f"{k or 'the mapping'}: {m}" for k, m in more)
    return MappingError(message, file=source, field=field)


def bundled_mapping(name: str) -> Path:
    """The mapping shipped with the package as `simpersona/ingest/mappings/<name>.yaml`."""
    return Path(str(files("simpersona.ingest") / "mappings" / f"{name}.yaml"))
