"""ui/field.html, ui/form.html and ui/confirm.html: labels, help and errors attached to their inputs."""

from __future__ import annotations

import re

import pytest
from django import forms
from django.template.loader import render_to_string
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


class JobForm(forms.Form):
    name = forms.CharField(label="Job name", help_text="Shown in the job list.")
    time_limit = forms.IntegerField(label="Time limit", min_value=1)
    exclusive = forms.BooleanField(label="Whole nodes only", required=False, help_text="No sharing.")
    key = forms.CharField(widget=forms.HiddenInput, label="Idempotency key")

    def clean(self):
        raise forms.ValidationError("Partition debug is closed.")


def ids_in(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def tag_of(html: str, name: str) -> str:
    found = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert found, html
    return found.group(0)


def test_a_bound_field_with_an_error_is_described_by_its_help_and_its_error():
    form = JobForm({"name": "", "time_limit": "0", "key": ""})
    assert not form.is_valid()

    html = render_to_string("ui/form.html", {"form": form})

    name = tag_of(html, "name")
    assert 'aria-invalid="true"' in name
    described = re.search(r'aria-describedby="([^"]+)"', name).group(1).split()
    assert described == ["id_name-help", "id_name-error"]
    assert set(described) <= ids_in(html)  # every id it points at is on the page
    assert '<label for="id_name">Job name</label>' in html
    assert '<p class="field-error" id="id_name-error">This field is required.</p>' in html
    assert '<p class="help" id="id_name-help">Shown in the job list.</p>' in html

    limit = tag_of(html, "time_limit")
    assert 'aria-invalid="true"' in limit
    assert 'aria-describedby="id_time_limit-error"' in limit
    assert "id_time_limit-error" in ids_in(html)


def test_non_field_and_hidden_field_errors_go_in_one_alert_box():
    form = JobForm({"name": "x", "time_limit": "5", "key": ""})
    assert not form.is_valid()

    html = render_to_string("ui/form.html", {"form": form})

    box = re.search(r'<div class="form-errors" role="alert">(.*?)</div>', html, re.S).group(1)
    assert "Partition debug is closed." in box
    assert "Idempotency key: This field is required." in box
    assert '<input type="hidden" name="key"' in html
    # A field without an error is not marked invalid, and points only at its help.
    name = tag_of(html, "name")
    assert "aria-invalid" not in name
    assert 'aria-describedby="id_name-help"' in name


def test_a_valid_form_says_nothing_and_a_checkbox_has_its_label_after_it():
    form = JobForm()
    html = render_to_string("ui/form.html", {"form": form})

    assert "form-errors" not in html
    assert "field-error" not in html
    assert re.search(
        r'<div class="field field-check">\s*<input type="checkbox"[^>]*>\s*<label for="id_exclusive">', html
    )
    assert 'aria-describedby="id_exclusive-help"' in tag_of(html, "exclusive")


def test_the_confirmation_page_posts_with_a_danger_button_and_offers_a_way_back(django_user_model):
    request = RequestFactory().get("/")
    request.user = django_user_model.objects.create(username="lin")
    html = render_to_string(
        "ui/confirm.html",
        {
            "title": "Cancel job 42?",
            "consequences": ["Slurm stops job 42 at once.", "Its output so far is kept."],
            "action": "/clusters/c/jobs/42/cancel",
            "confirm_label": "Cancel job 42",
            "back": "/clusters/c/jobs/42/",
            "hidden": {"back": "42"},
        },
        request=request,
    )

    assert html.count("<h1>") == 1
    assert "<h1>Cancel job 42?</h1>" in html
    assert "<li>Slurm stops job 42 at once.</li>" in html
    form = re.search(
        r'<form method="post" action="/clusters/c/jobs/42/cancel">(.*?)</form>', html, re.S
    ).group(1)
    assert 'name="csrfmiddlewaretoken"' in form
    assert '<input type="hidden" name="back" value="42">' in form
    assert '<button type="submit" class="btn btn-danger">Cancel job 42</button>' in form
    assert '<a class="btn btn-secondary" href="/clusters/c/jobs/42/">Keep it</a>' in form


def test_a_help_text_left_out_is_not_pointed_at():
    form = JobForm({"name": "", "time_limit": "5", "key": "k"})
    form.is_valid()

    html = render_to_string("ui/field.html", {"field": form["name"], "hide_help": True})

    assert "Shown in the job list." not in html
    assert 'aria-describedby="id_name-error"' in tag_of(html, "name")
