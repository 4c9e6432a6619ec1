"""Directory sources that are pulled on a schedule (LDAP: `syncd.sources.ldap`); SCIM pushes are in syncd.scim."""

__all__: list[str] = []
