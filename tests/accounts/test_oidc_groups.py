"""IdP group sync: managed groups follow the claim, hand-made groups and other IdPs' groups are left alone."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import groups
from accounts.models import IdpGroup

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(db):
    return get_user_model().objects.create_user("ada", "ada@example.org")


def names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_it_adds_the_claimed_groups_as_idp_managed(ada):
    result = groups.sync(ada, "okta", ["hpc-users", "gpu"])

    assert names(ada) == {"hpc-users", "gpu"}
    assert result.added == ("gpu", "hpc-users")
    assert IdpGroup.objects.get(group__name="gpu").claim_value == "gpu"
    assert IdpGroup.objects.get(group__name="gpu").provider == "okta"


def test_it_removes_groups_the_idp_no_longer_claims(ada):
    groups.sync(ada, "okta", ["hpc-users", "gpu"])

    result = groups.sync(ada, "okta", ["hpc-users"])

    assert names(ada) == {"hpc-users"}
    assert result.removed == ("gpu",)
    assert Group.objects.filter(name="gpu").exists()


def test_it_never_touches_a_hand_made_group(ada):
    lab = Group.objects.create(name="lab-admins")
    ada.groups.add(lab)

    groups.sync(ada, "okta", ["lab-admins"])
    groups.sync(ada, "okta", [])

    assert names(ada) == {"lab-admins"}
    assert not IdpGroup.objects.filter(group=lab).exists()
    assert not Group.objects.get(name="lab-admins (okta)").user_set.exists()


def test_a_name_taken_by_hand_gets_the_provider_as_suffix(ada):
    Group.objects.create(name="gpu")
    Group.objects.create(name="gpu (okta)")

    groups.sync(ada, "okta", ["gpu"])

    assert names(ada) == {"gpu (okta 2)"}


def test_two_idps_with_the_same_group_name_stay_apart(ada):
    groups.sync(ada, "okta", ["ops"])
    groups.sync(ada, "entra", ["ops"])

    assert names(ada) == {"ops", "ops (entra)"}
    groups.sync(ada, "entra", [])
    assert names(ada) == {"ops"}


def test_a_renamed_idp_group_keeps_its_members_in_sync(ada):
    groups.sync(ada, "entra", ["6f1b-guid"])
    Group.objects.filter(name="6f1b-guid").update(name="HPC users")

    groups.sync(ada, "entra", ["6f1b-guid"])

    assert names(ada) == {"HPC users"}
    assert Group.objects.count() == 1


def test_an_unknown_group_list_changes_nothing(ada):
    groups.sync(ada, "entra", ["a", "b"])

    result = groups.sync(ada, "entra", None)

    assert names(ada) == {"a", "b"}
    assert result.kept_because


@pytest.mark.parametrize(
    ("claims", "values"),
    [
        ({"groups": ["a", " b ", "a", "", None, 7, True, {"x": 1}]}, ["a", "b", "7"]),
        ({"groups": "solo"}, ["solo"]),
        ({}, []),
        ({"groups": {"not": "a list"}}, []),
        ({"groups": ["x" * 256, "ok"]}, ["ok"]),
        # Entra's overage: the list exists but was left out of the token.
        ({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}}, None),
    ],
)
def test_claim_values_are_cleaned(claims, values):
    assert groups.claim_values(claims, "groups") == values


people = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logins=st.lists(st.sets(st.sampled_from(["a", "b", "c", "hand"]), max_size=4), min_size=1, max_size=4))
def test_after_any_sequence_of_logins_the_managed_groups_are_the_last_claim(db, logins):
    person = get_user_model().objects.create_user(f"p{next(people)}")
    hand, _ = Group.objects.get_or_create(name="hand")
    person.groups.add(hand)

    for claimed in logins:
        groups.sync(person, "okta", sorted(claimed))

    managed = set(person.groups.filter(idp__provider="okta").values_list("idp__claim_value", flat=True))
    assert managed == logins[-1]
    assert person.groups.filter(pk=hand.pk).exists()
    assert not IdpGroup.objects.filter(group=hand).exists()
