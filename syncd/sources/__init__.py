"""Directory sources that are pulled on a schedule (LDAP); SCIM pushes are in syncd.scim."""
