"""The submit fields are declared once, by SubmitRequest; the form and /v1 take exactly those."""

from __future__ import annotations

import pytest

from clusters.refusal import Refusal
from jobs.forms import SubmitForm
from jobs.submit_request import SubmitRequest


def test_the_form_offers_exactly_the_fields_the_api_takes():
    assert set(SubmitForm.base_fields) - {"idempotency_key"} == set(SubmitRequest.model_fields)


def test_the_form_sends_only_what_the_person_filled_in():
    form = SubmitForm(
        {"script_path": " /home/ada/run.sh ", "nodes": "2", "time_limit": "1:30:00", "idempotency_key": "k"},
        partitions=[],
    )
    assert form.is_valid(), form.errors
    asked = SubmitRequest.model_validate(form.request_data())
    assert asked.model_dump() == {
        "script_path": "/home/ada/run.sh",
        "partition": None,
        "time_limit": 90,
        "nodes": 2,
        "cpus_per_task": None,
        "gpus": None,
        "name": None,
        "working_directory": None,
    }


def test_a_wrong_field_is_a_refusal_that_names_it():
    with pytest.raises(Refusal) as caught:
        SubmitRequest.model_validate({"script_path": "/home/ada/run.sh", "gpus": -1})
    assert (caught.value.message, caught.value.code, caught.value.status) == (
        "gpus must be a whole number, 0 or more, not -1.",
        "invalid_request",
        400,
    )
