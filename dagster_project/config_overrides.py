"""Typed, nested run config for a library config dataclass: every field optional, checked by
Dagster's config system (a misspelt or mistyped field fails the launch, naming it), so the
UI's launchpad offers each hyper-parameter instead of a JSON string.

    vqvae: VQVAEOverrides = Field(default_factory=VQVAEOverrides)
    config.vqvae.model_dump(exclude_none=True)  # the fields given, to apply on top
"""

import dataclasses
import types
import typing

import dagster as dg
from pydantic import Field, create_model


def _config_type(t: typing.Any) -> typing.Any:
    """The run-config type of a dataclass field's type (tuples as lists, literals as their
    strings, optionals as their type); None for what the config cannot express (dicts)."""
    origin = typing.get_origin(t)
    if origin is tuple:
        return list[typing.get_args(t)[0]]
    if origin is typing.Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return _config_type(args[0]) if len(args) == 1 else None
    if origin is dict:
        return None
    return t


def overrides_config(cls: type, name: str) -> type[dg.Config]:
    """A dg.Config class with each field of the dataclass `cls` as an optional override
    (default None: keep the library's value); its description names the field and default."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, typing.Any] = {}
    for f in dataclasses.fields(cls):
        t = _config_type(hints[f.name])
        if t is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else "computed"
        description = f"{cls.__name__}.{f.name} (library default: {default})"
        fields[f.name] = (t | None, Field(default=None, description=description))
    return create_model(name, __base__=dg.Config, **fields)
