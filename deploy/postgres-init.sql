-- one server, two databases: LiteLLM's and syncd's
CREATE DATABASE litellm;
CREATE DATABASE syncd;
