"""/scim/v2/: the SCIM 2.0 endpoint IdPs provision people and groups through (see accounts.scim)."""

from __future__ import annotations

from django.urls import path, re_path

from accounts import scim

urlpatterns = [
    path("ServiceProviderConfig", scim.service_provider_config, name="scim_config"),
    path("ResourceTypes", scim.resource_types, name="scim_resource_types"),
    path("ResourceTypes/<str:name>", scim.resource_types, name="scim_resource_type"),
    path("Schemas", scim.schemas, name="scim_schemas"),
    path("Schemas/<str:urn>", scim.schemas, name="scim_schema"),
    path(".search", scim.search, name="scim_search"),
    path("Users/.search", scim.search, {"kind": "User"}, name="scim_users_search"),
    path("Groups/.search", scim.search, {"kind": "Group"}, name="scim_groups_search"),
    path("Users", scim.collection, {"kind": "User"}, name="scim_users"),
    path("Users/<str:resource_id>", scim.member, {"kind": "User"}, name="scim_user"),
    path("Groups", scim.collection, {"kind": "Group"}, name="scim_groups"),
    path("Groups/<str:resource_id>", scim.member, {"kind": "Group"}, name="scim_group"),
    re_path(r"^(?P<rest>.*)$", scim.not_found, name="scim_not_found"),
]
