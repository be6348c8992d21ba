"""The new-token form of the API tokens page."""

from __future__ import annotations

from django import forms

from accounts import api_tokens


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. 'laptop CLI'.")
    days = forms.IntegerField(min_value=1, max_value=api_tokens.MAX_DAYS, help_text="How many days it works.")
