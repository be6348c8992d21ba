"""/accounts/3rdparty/: the person's identity provider accounts, on a page of the console's own."""

from __future__ import annotations

import re

import pytest
from allauth.socialaccount.models import SocialAccount, SocialApp

pytestmark = pytest.mark.django_db


def test_it_lists_the_person_s_idp_accounts_in_the_console_s_page(client, django_user_model):
    person = django_user_model.objects.create_user("lin", "lin@example.org")
    SocialApp.objects.create(
        provider="openid_connect",
        provider_id="company",
        name="Company sign-in",
        client_id="clusterra",
        settings={"server_url": "https://idp.example.org"},
    )
    account = SocialAccount.objects.create(user=person, provider="company", uid="lin-at-idp")
    client.force_login(person)

    html = client.get("/accounts/3rdparty/").content.decode()

    assert '<html lang="en"' in html
    assert '<link rel="stylesheet" href="/static/ui/console.css">' in html
    assert "<h1>Your sign-in connections</h1>" in html
    radio = f'<input type="radio" name="account" value="{account.pk}" id="id_account_{account.pk}">'
    assert re.search(rf'<label for="id_account_{account.pk}">{re.escape(radio)}', html)
    assert '<span class="badge info">Company sign-in</span>' in html
    assert "Connect your Company sign-in account" in html

    refused = client.post("/accounts/3rdparty/", {"account": account.pk})

    # The only way in cannot be removed: allauth says why, in the form's own alert box.
    assert refused.status_code == 200
    assert re.search(r'<div class="form-errors" role="alert"><p>[^<]+</p></div>', refused.content.decode())
    assert SocialAccount.objects.filter(pk=account.pk).exists()
