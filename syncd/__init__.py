"""syncd: keeps a LiteLLM proxy's users in step with SCIM identity providers and LDAP directories."""

__all__ = ["__version__"]

__version__ = "0.1.0"
