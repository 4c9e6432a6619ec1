"""What the service provider serves: the resource models, the published discovery documents, the attribute table.

The same scim2-models schemas are published on /Schemas and read into `Attribute`s, so that what the filters, the
sorting and the attribute selection accept is exactly what the schemas describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from scim2_models import Attribute as SchemaAttribute
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Extension,
    Filter,
    Group,
    Patch,
    ResourceType,
    Schema,
    ScimPolicy,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models.resources.user import Email
from scim2_models.urn import URN

from syncd.model import email_problem

__all__ = [
    "CORE_GROUP",
    "CORE_USER",
    "ENTERPRISE",
    "GRANT_EXTENSION",
    "GROUP_MODEL",
    "POLICY",
    "USER_MODEL",
    "Attribute",
    "ResourceKind",
    "SyncdGroup",
    "discovery_documents",
    "resource_kinds",
]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GRANT_EXTENSION = "urn:ietf:params:scim:schemas:extension:syncd:2.0:Group"


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _list_as_text(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


class SyncdGroup(Extension):
    """syncd's Group extension: what the group's members get in LiteLLM (the fields of a config mapping)."""

    __schema__ = URN(GRANT_EXTENSION)

    role: str | None = None
    """proxy_admin, proxy_admin_viewer, internal_user or internal_user_viewer."""
    models: Annotated[str | None, BeforeValidator(_list_as_text)] = None
    """LiteLLM model names, separated by commas."""
    tpm_limit: int | None = None
    """Tokens per minute."""
    rpm_limit: int | None = None
    """Requests per minute."""
    max_budget: Annotated[str | None, BeforeValidator(_number_as_text)] = None
    """Maximum budget in USD, a decimal number (a string, so that clients that know no decimals can send it)."""
    budget_duration: str | None = None
    """Budget cycle: daily, weekly, monthly, yearly, or a duration such as 30d."""
    auto_create_keys: bool | None = None
    """LiteLLM generates a key when the user is created."""
    teams: Annotated[str | None, BeforeValidator(_list_as_text)] = None
    """LiteLLM team aliases the members join, separated by commas."""
    priority: int | None = None
    """The grant's priority: the highest wins scalar fields outright."""


def _email(value: str | None) -> str | None:
    problem = None if value is None else email_problem(value)
    if problem is not None:
        raise ValueError(f"value is not a valid email address: {problem}")
    return value


class SyncdEmail(Email):
    """An email as syncd takes it: any syntactically valid address (`.local` and other special-use domains too),
    its case kept as given; the same rule as for directory entries (syncd.model.email_problem)."""

    value: Annotated[str | None, AfterValidator(_email)] = None
    """Email addresses for the user."""


class SyncdUser(User):
    """The core User, its emails checked for syntax only (scim2-models' EmailStr refuses `@okta.local`)."""

    emails: list[SyncdEmail] | None = None  # type: ignore[assignment]
    """Email addresses for the User."""


USER_MODEL: Any = SyncdUser[EnterpriseUser]  # type: ignore[misc]  # extensions are a runtime parameter
GROUP_MODEL: Any = Group[SyncdGroup]  # type: ignore[misc]  # extensions are a runtime parameter

#: What identity providers really send: Entra's capitalised ops and value-list removes, an `Add` to
#: `emails[type eq "work"].value` that must create the entry, attributes and schema URNs syncd does not know.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute (or sub-attribute) as a schema publishes it; `path` is its lower-case storage path."""

    path: str
    name: str
    type: str  # string boolean decimal integer dateTime binary reference complex
    multi: bool = False
    case_exact: bool = False
    returned: str = "default"
    subs: dict[str, Attribute] = field(default_factory=dict)
    mutability: str = "readWrite"
    required: bool = False

    def sub(self, name: str) -> Attribute | None:
        """The sub-attribute `name` (any case), if any."""
        return self.subs.get(name.lower())


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """A resource type served: its model, endpoint, schemas and attribute table."""

    name: str  # User | Group
    endpoint: str  # /Users | /Groups
    model: Any
    core: str
    extensions: tuple[str, ...]
    attributes: dict[str, Attribute]  # lower name (core) or lower URN:name (extension) -> Attribute

    def resolve(self, name: str, uri: str | None = None) -> Attribute | None:
        """The top-level attribute `name` of the core schema, or of the schema `uri`."""
        if uri is None or uri.lower() == self.core.lower():
            return self.attributes.get(name.lower())
        return self.attributes.get(f"{uri}:{name}".lower())


def _attribute(spec: SchemaAttribute, prefix: str) -> Attribute:
    path = f"{prefix}{spec.name}".lower()
    subs = {str(sub.name).lower(): _attribute(sub, path + ".") for sub in spec.sub_attributes or []}
    return Attribute(
        path=path,
        name=str(spec.name),
        type=str(spec.type.value if spec.type else "string"),
        multi=bool(spec.multi_valued),
        case_exact=bool(spec.case_exact),
        returned=str(spec.returned.value if spec.returned else "default"),
        subs=subs,
        mutability=str(spec.mutability.value if spec.mutability else "readWrite"),
        required=bool(spec.required),
    )


def _common() -> dict[str, Attribute]:
    meta_subs = {
        name.lower(): Attribute(f"meta.{name.lower()}", name, kind, case_exact=kind != "dateTime")
        for name, kind in (
            ("resourceType", "string"),
            ("created", "dateTime"),
            ("lastModified", "dateTime"),
            ("location", "reference"),
            ("version", "string"),
        )
    }
    return {
        "id": Attribute("id", "id", "string", case_exact=True, returned="always", mutability="readOnly"),
        "externalid": Attribute("externalid", "externalId", "string", case_exact=True),
        "meta": Attribute("meta", "meta", "complex", subs=meta_subs, mutability="readOnly"),
    }


def _table(core: Schema, extensions: list[Schema]) -> dict[str, Attribute]:
    table = _common()
    for spec in core.attributes or []:
        table[str(spec.name).lower()] = _attribute(spec, "")
    for schema in extensions:
        for spec in schema.attributes or []:
            table[f"{schema.id}:{spec.name}".lower()] = _attribute(spec, f"{schema.id}:")
    return table


def _user_schema() -> Schema:
    # syncd keeps no password: the schema says so by not offering the attribute.
    schema = User.to_schema()
    schema.attributes = [spec for spec in schema.attributes or [] if spec.name != "password"]
    return schema


def resource_kinds() -> dict[str, ResourceKind]:
    """User (with the enterprise extension) and Group, by name."""
    user_schema, enterprise_schema, group_schema = _user_schema(), EnterpriseUser.to_schema(), Group.to_schema()
    grant_schema = SyncdGroup.to_schema()
    return {
        "User": ResourceKind(
            "User", "/Users", USER_MODEL, CORE_USER, (ENTERPRISE,), _table(user_schema, [enterprise_schema])
        ),
        "Group": ResourceKind(
            "Group", "/Groups", GROUP_MODEL, CORE_GROUP, (GRANT_EXTENSION,), _table(group_schema, [grant_schema])
        ),
    }


def _authentication_schemes(oauth: bool) -> list[AuthenticationScheme]:
    static = AuthenticationScheme(
        type=AuthenticationScheme.Type.oauthbearertoken,
        name="Bearer token",
        description="One static bearer token per identity provider (scim.tokens in the syncd config)",
        primary=True,
    )
    if not oauth:
        return [static]
    client_credentials = AuthenticationScheme(
        type=AuthenticationScheme.Type.oauthbearertoken,
        name="OAuth 2.0 client credentials",
        description="Short-lived access tokens from POST /oauth/token (grant_type=client_credentials, RFC 6749 "
        "section 4.4), for the clients of scim.oauth_clients in the syncd config",
        spec_uri="https://www.rfc-editor.org/rfc/rfc6749#section-4.4",
        primary=False,
    )
    return [static, client_credentials]


def _service_provider_config(max_results: int, oauth: bool) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        authentication_schemes=_authentication_schemes(oauth),
    )


def _with_meta(document: dict[str, Any], resource_type: str, base_url: str, path: str) -> dict[str, Any]:
    document["meta"] = {"resourceType": resource_type, "location": f"{base_url}{path}"}
    return document


def discovery_documents(base_url: str, max_results: int, *, oauth: bool = False) -> dict[str, Any]:
    """The bodies of /ServiceProviderConfig, /Schemas/{id} and /ResourceTypes/{id}, as JSON-ready dicts (`oauth`:
    the OAuth client credentials scheme is advertised beside the static tokens)."""
    ctx = Context.RESOURCE_QUERY_RESPONSE
    config = _service_provider_config(max_results, oauth).model_dump(scim_ctx=ctx)
    config = _with_meta(config, "ServiceProviderConfig", base_url, "/ServiceProviderConfig")
    schemas = {}
    for published in (_user_schema(), EnterpriseUser.to_schema(), Group.to_schema(), SyncdGroup.to_schema()):
        schema = published.model_dump(scim_ctx=ctx)
        schemas[schema["id"]] = _with_meta(schema, "Schema", base_url, f"/Schemas/{schema['id']}")
    types = {}
    for model in (USER_MODEL, GROUP_MODEL):
        resource_type = ResourceType.from_resource(model).model_dump(scim_ctx=ctx)
        name = resource_type["id"]
        types[name] = _with_meta(resource_type, "ResourceType", base_url, f"/ResourceTypes/{name}")
    return {"config": config, "schemas": schemas, "resource_types": types}
