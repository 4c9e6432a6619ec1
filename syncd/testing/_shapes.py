"""Response templates of the fake LiteLLM: one per resource, every key LiteLLM 1.108.7 answers with.

Each template is built from the key order of a recorded response and the neutral value of each key; the fake
fills in the fields it models and leaves the rest at these defaults, so no recorded key is ever missing.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BUDGET_TABLE",
    "GENERATED_KEY",
    "KEY_AUTH_EXTRA",
    "KEY_INFO",
    "KEY_TABLE",
    "MEMBER_UPDATE",
    "NEW_USER",
    "ROUTER_SETTINGS",
    "TEAM_INFO_EXTRA",
    "TEAM_NEW",
    "TEAM_TABLE",
    "USER_LIST_ROW",
    "USER_ROW",
    "render",
]


def _template(keys: str, **defaults: Any) -> dict[str, Any]:
    """A template: every named key set to None unless a neutral default is given."""
    template: dict[str, Any] = dict.fromkeys(keys.split())
    unknown = set(defaults) - set(template)
    assert not unknown, f"defaults for keys not in the template: {unknown}"
    template.update(defaults)
    return template


def render(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A response dict from a template; a value for a key the template lacks is a bug in the fake."""
    unknown = set(values) - set(template)
    if unknown:
        raise KeyError(f"not in the template: {sorted(unknown)}")
    out = dict(template)
    out.update(values)
    return out


GENERATED_KEY = _template(
    "key_alias duration models spend max_budget user_id team_id agent_id max_parallel_requests metadata "
    "tpm_limit rpm_limit budget_duration budget_limits allowed_cache_controls config permissions "
    "model_max_budget budget_fallbacks model_rpm_limit model_tpm_limit mcp_rpm_limit tag_rpm_limit "
    "guardrails policies prompts blocked aliases object_permission key tpd_limit "
    "default_estimated_output_tokens default_estimated_output_tokens_per_model budget_id "
    "end_user_budget_id tags disable_global_guardrails enable_prompt_caching throttle_on_budget_exceeded "
    "enforced_params allowed_routes allowed_passthrough_routes denied_passthrough_routes "
    "allowed_vector_store_indexes rpm_limit_type tpm_limit_type router_settings access_group_ids key_name "
    "key_type expires token_id organization_id project_id litellm_budget_table token created_by "
    "updated_by created_at updated_at",
    spend=0.0,
    allowed_cache_controls=[],
    config={},
    permissions={},
    model_max_budget={},
    budget_fallbacks={},
    aliases={},
    allowed_routes=[],
    access_group_ids=[],
)
USER_ROW = _template(
    "verified_subjects user_id user_alias team_id sso_user_id organization_id object_permission_id "
    "password_reset_required last_breach_check_at teams user_role max_budget spend user_email models "
    "metadata max_parallel_requests tpm_limit rpm_limit budget_duration budget_reset_at "
    "allowed_cache_controls policies model_spend model_max_budget created_at updated_at "
    "litellm_organization_table organization_memberships invitations_created invitations_updated "
    "invitations_user object_permission",
    teams=[],
    spend=0.0,
    allowed_cache_controls=[],
    policies=[],
    model_spend={},
    model_max_budget={},
)
USER_LIST_ROW = _template(
    "user_id user_alias team_id sso_user_id organization_id object_permission_id password_reset_required "
    "last_breach_check_at teams user_role max_budget spend user_email models metadata "
    "max_parallel_requests tpm_limit rpm_limit budget_duration budget_reset_at allowed_cache_controls "
    "policies model_spend model_max_budget created_at updated_at organization_memberships "
    "object_permission key_count",
    teams=[],
    spend=0.0,
    models=[],
    metadata={},
    allowed_cache_controls=[],
    policies=[],
    model_spend={},
    model_max_budget={},
    key_count=0,
)
KEY_TABLE = _template(
    "token key_name key_alias spend total_spend max_budget expires models aliases config user_id team_id "
    "agent_id project_id max_parallel_requests metadata tpm_limit rpm_limit tpd_limit budget_duration "
    "budget_reset_at allowed_cache_controls allowed_routes key_type permissions model_spend "
    "model_max_budget budget_fallbacks soft_budget_cooldown blocked litellm_budget_table budget_id org_id "
    "created_at created_by updated_at updated_by settings_updated_at last_active object_permission_id "
    "object_permission access_group_ids rotation_count auto_rotate rotation_interval last_rotation_at "
    "key_rotation_at router_settings budget_limits",
    spend=0.0,
    total_spend=0.0,
    aliases={},
    config={},
    allowed_cache_controls=[],
    allowed_routes=[],
    permissions={},
    model_spend={},
    model_max_budget={},
    budget_fallbacks={},
    soft_budget_cooldown=False,
    access_group_ids=[],
    rotation_count=0,
    auto_rotate=False,
    router_settings={},
)
KEY_INFO = _template(
    "token key_name key_alias soft_budget_cooldown spend total_spend expires models aliases config "
    "router_settings user_id team_id agent_id project_id permissions max_parallel_requests metadata "
    "blocked tpm_limit rpm_limit tpd_limit max_budget budget_duration budget_reset_at "
    "allowed_cache_controls allowed_routes key_type policies access_group_ids model_spend "
    "model_max_budget budget_fallbacks budget_id organization_id object_permission_id created_at "
    "created_by updated_at updated_by settings_updated_at last_active rotation_count auto_rotate "
    "rotation_interval last_rotation_at key_rotation_at budget_limits litellm_budget_table "
    "litellm_organization_table litellm_project_table object_permission jwt_key_mappings",
    soft_budget_cooldown=False,
    spend=0.0,
    total_spend=0.0,
    aliases={},
    config={},
    router_settings={},
    permissions={},
    blocked=False,
    allowed_cache_controls=[],
    allowed_routes=[],
    policies=[],
    access_group_ids=[],
    model_spend={},
    model_max_budget={},
    budget_fallbacks={},
    rotation_count=0,
    auto_rotate=False,
)
KEY_AUTH_EXTRA = _template(
    "team_spend team_alias team_tpm_limit team_rpm_limit team_tpd_limit team_max_budget team_soft_budget "
    "team_model_max_budget team_models team_blocked soft_budget team_model_aliases team_member "
    "team_metadata team_object_permission_id team_member_spend team_member_tpm_limit "
    "team_member_rpm_limit end_user_id end_user_tpm_limit end_user_rpm_limit end_user_tpd_limit "
    "end_user_max_budget end_user_model_max_budget organization_alias organization_max_budget "
    "organization_tpm_limit organization_rpm_limit organization_metadata project_alias project_metadata "
    "last_refreshed_at api_key user_role allowed_model_region parent_otel_span rpm_limit_per_model "
    "tpm_limit_per_model user_tpm_limit user_rpm_limit user_email user_spend user_max_budget "
    "user_model_max_budget request_route is_session_token user created_by_user end_user_object_permission "
    "team_object_permission jwt_claims",
    team_models=[],
    team_blocked=False,
    is_session_token=False,
)
TEAM_NEW = _template(
    "team_alias team_id organization_id admins members members_with_roles team_member_permissions "
    "metadata tpm_limit rpm_limit tpd_limit max_budget soft_budget budget_duration budget_limits models "
    "blocked router_settings access_group_ids default_team_member_models spend max_parallel_requests "
    "budget_reset_at model_id model_spend model_max_budget policies allow_team_guardrail_config "
    "litellm_model_table object_permission object_permission_id updated_at created_at",
    admins=[],
    members=[],
    team_member_permissions=[],
    blocked=False,
    router_settings={},
    access_group_ids=[],
    default_team_member_models=[],
    spend=0.0,
    model_spend={},
    model_max_budget={},
    policies=[],
    allow_team_guardrail_config=False,
)
TEAM_TABLE = _template(
    "team_id team_alias organization_id object_permission_id admins members members_with_roles metadata "
    "max_budget soft_budget spend models max_parallel_requests tpm_limit rpm_limit tpd_limit "
    "budget_duration budget_reset_at blocked created_at updated_at model_spend model_max_budget "
    "router_settings team_member_permissions access_group_ids policies default_team_member_models "
    "budget_limits model_id allow_team_guardrail_config litellm_organization_table litellm_model_table "
    "object_permission projects",
    admins=[],
    members=[],
    spend=0.0,
    blocked=False,
    model_spend={},
    model_max_budget={},
    router_settings={},
    team_member_permissions=[],
    access_group_ids=[],
    policies=[],
    default_team_member_models=[],
    allow_team_guardrail_config=False,
)
TEAM_INFO_EXTRA = _template(
    "team_member_budget_table access_group_models access_group_mcp_server_ids access_group_agent_ids "
    "access_group_skill_names unresolved_access_group_ids access_group_details organization_models "
    "model_max_budget_usage caller_edit_access",
    model_max_budget_usage={},
)
MEMBER_UPDATE = _template(
    "user_id user_email team_id max_budget_in_team tpm_limit rpm_limit budget_duration allowed_models "
    "temp_budget_increase temp_budget_expiry model_max_budget",
)
BUDGET_TABLE = _template(
    "budget_id soft_budget max_budget max_parallel_requests tpm_limit rpm_limit tpd_limit "
    "model_max_budget budget_duration allowed_models temp_budget_increase temp_budget_expiry "
    "budget_reset_at created_at",
    model_max_budget={},
    allowed_models=[],
)

# The user-new answer is the generated-key answer plus the user's own fields.
NEW_USER = {**GENERATED_KEY, "user_email": None, "user_role": None, "teams": None, "user_alias": None}

ROUTER_SETTINGS = _template(
    "routing_strategy_args routing_strategy routing_groups retry_policy model_group_retry_policy "
    "model_group_affinity_config allowed_fails cooldown_time num_retries timeout max_retries retry_after "
    "fallbacks context_window_fallbacks model_group_alias enable_tag_filtering weights tag_routing_prefix "
    "optional_pre_call_checks fallback_on_unsupported_params",
    model_group_alias={},
)
