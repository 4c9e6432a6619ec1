"""Load the YAML config: `${VAR}` / `${VAR:-default}` from the environment, then validation with key paths in errors.

`load_settings(path)` returns a frozen `Settings` or raises `ConfigError`, whose message lists every problem as
`key.path[2].name: what is wrong`; secrets are `SecretStr` and never appear in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from syncd.mapping import ambiguous_sources
from syncd.settings._base import Strict
from syncd.settings.core import (
    DatabaseSettings,
    DefaultsSettings,
    IdentitySettings,
    LiteLLMSettings,
    MappingSettings,
    PolicySettings,
    ServerSettings,
    TeamSettings,
)
from syncd.settings.ldap import LdapSourceSettings
from syncd.settings.notify import WebhookSettings
from syncd.settings.scim import SECRETS_UNSET, ScimSettings

__all__ = ["ConfigError", "Settings", "load_settings", "settings_from_dict"]

#: a problem that starts with the key it is about (`mappings[0].group: ...`)
_KEY_PATH = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: ")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The config file cannot be used; `problems` lists each one as `key.path: message`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(
            f"{source}: " + "; ".join(problems)
            if len(problems) == 1
            else f"{source}: {len(problems)} problems:\n  " + "\n  ".join(problems)
        )


class Settings(Strict):
    """The whole config file."""

    database: DatabaseSettings = DatabaseSettings()
    litellm: LiteLLMSettings = LiteLLMSettings()
    server: ServerSettings = ServerSettings()
    ldap: list[LdapSourceSettings] = Field(default_factory=list)
    scim: ScimSettings = ScimSettings()
    mappings: list[MappingSettings] = Field(default_factory=list)
    defaults: DefaultsSettings = DefaultsSettings()
    policy: PolicySettings = PolicySettings()
    teams: list[TeamSettings] = Field(default_factory=list)
    identity: IdentitySettings = IdentitySettings()
    #: webhooks told about held plans, conflicts, failed and recovered runs, drift corrected
    notify: list[WebhookSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [source.name for source in self.ldap] + [token.name for token in self.scim.tokens]
        names += sorted({c.source for c in self.scim.oauth_clients} - {t.name for t in self.scim.tokens})
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        aliases = [team.alias.lower() for team in self.teams]
        repeated = sorted({alias for alias in aliases if aliases.count(alias) > 1})
        if repeated:
            raise ValueError(f"team aliases must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _known_sources(self) -> Settings:
        known = {source.name for source in self.ldap} | set(self.scim.source_names)
        named = [(f"mappings[{i}].sources", m.sources or []) for i, m in enumerate(self.mappings)]
        named.append(("identity.merge_sources", self.identity.merge_sources or []))
        for where, names in named:
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"{where}: no source is named {', '.join(map(repr, unknown))}")
        return self

    @model_validator(mode="after")
    def _mappings_say_their_sources(self) -> Settings:
        """A mapping by name that a tenant's group and another source's could both match must say which it means."""
        directories = [source.name for source in self.ldap]
        tenants = self.scim.source_names  # OAuth clients' sources are tenants too
        problems = []
        for i, mapping in enumerate(self.mappings):
            found = ambiguous_sources(mapping.group, mapping.sources, directories=directories, tenants=tenants)
            if found:
                kinds = [f"{n} ({'SCIM' if n in tenants else 'LDAP'})" for n in found]
                where = f"{', '.join(kinds[:-1])} and {kinds[-1]}"
                problems.append(
                    f"mappings[{i}].group: {mapping.group!r} is a group name, not a DN, and a group of that name may "
                    f"come from {where}: say which with `sources:` (e.g. sources: [{found[0]}]), or map the LDAP "
                    "group by its DN"
                )
        if problems:
            raise ValueError("\n".join(problems))  # each line a problem of its own (see _problems)
        return self

    @property
    def source_priorities(self) -> dict[str, int]:
        """Each source's priority: when one person is in two sources, the higher wins."""
        priorities = {source.name: source.priority for source in self.ldap}
        priorities.update(self.scim.source_priorities)
        return priorities


#: the keys holding secrets: with `secrets=False` an unset variable there leaves the secret unset instead of failing
_SECRET_KEYS = frozenset({"master_key", "bind_password", "admin_token", "token", "signing_key"})


def _substitute(value: Any, env: Mapping[str, str], path: str, problems: list[str], *, secrets: bool = True) -> Any:
    if isinstance(value, str):
        unset: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env and (env[name] != "" or default is None):
                return env[name]
            if default is not None:
                return default
            unset.append(name)
            return ""

        text = _VAR.sub(replace, value)
        if unset and not secrets and path.rsplit(".", 1)[-1] in _SECRET_KEYS:
            return None
        problems.extend(f"{path or '<top>'}: environment variable {name} is not set" for name in unset)
        return text
    if isinstance(value, dict):
        return {key: _substitute(item, env, _join(path, key), problems, secrets=secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, env, f"{path}[{i}]", problems, secrets=secrets) for i, item in enumerate(value)]
    return value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = _join(text, part)
    return text or "<top>"


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "is required"
    if error["type"].startswith("literal_error"):
        return f"{error['input']!r} is not one of: {message.removeprefix('Input should be ')}"
    return message


def _problems(error: Mapping[str, Any]) -> list[str]:
    """One error's problems, `key.path: message` each; a whole-file check's lines name their own keys."""
    lines = _message(error).splitlines()
    if not error["loc"] and all(_KEY_PATH.match(line) for line in lines):
        return lines
    return [f"{_location(error['loc'])}: {_message(error)}"]


def settings_from_dict(
    raw: Any, *, source: str = "<config>", env: Mapping[str, str] | None = None, secrets: bool = True
) -> Settings:
    """Validate an already parsed config document.

    `secrets=False` is for commands that use no secret (`explain --offline`): a secret whose environment variable is
    unset is loaded as None (off) instead of being an error.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["<top>: the config must be a mapping of sections"])
    problems: list[str] = []
    data = _substitute(raw, os.environ if env is None else env, "", problems, secrets=secrets)
    if problems:
        raise ConfigError(source, problems)
    try:
        return Settings.model_validate(data, context={SECRETS_UNSET: not secrets})
    except ValidationError as exc:
        raise ConfigError(source, [line for e in exc.errors() for line in _problems(e)]) from None


def load_settings(path: str | Path, *, env: Mapping[str, str] | None = None, secrets: bool = True) -> Settings:
    """Read, substitute and validate the YAML config file at `path` (`secrets`: see `settings_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"]
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    return settings_from_dict(raw, source=str(path), env=env, secrets=secrets)
