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
        "script": None,
        "options": None,
    }


def test_the_form_takes_a_written_script_and_more_options_as_on_an_sbatch_line():
    form = SubmitForm(
        {
            "script": "#!/bin/bash\nhostname\n",
            "options": "--ntasks-per-node=4 --exclusive --hold",
            "idempotency_key": "k",
        },
        partitions=[],
    )
    assert form.is_valid(), form.errors
    asked = SubmitRequest.model_validate(form.request_data())
    assert (asked.script, asked.script_path) == ("#!/bin/bash\nhostname\n", None)
    assert asked.options == {"ntasks-per-node": "4", "exclusive": True, "hold": True}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({}, "Give the path of a script on the cluster, or write the script."),
        ({"script_path": "/a.sh", "script": "#!/bin/sh\n"}, "not both"),
        ({"script_path": "/a.sh", "options": "--uid=0"}, "only root may submit as another user"),
    ],
)
def test_the_form_says_what_is_wrong(data, words):
    form = SubmitForm({**data, "idempotency_key": "k"}, partitions=[])
    assert not form.is_valid()
    assert words in str(form.errors)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "Give exactly one of script_path"),
        ({"script_path": "/a.sh", "script": "#!/bin/sh\n"}, "Give exactly one of script_path"),
        ({"script": 5}, "script must be the text of the job script"),
        ({"script_path": "/a.sh", "options": ["--exclusive"]}, "options must be an object"),
        ({"script_path": "/a.sh", "options": {"wrap": "hostname"}}, "options.wrap: --wrap is not used"),
        ({"script_path": "/a.sh", "options": {"mem": "lots"}}, "memory 'lots' is not a size"),
    ],
)
def test_script_and_options_are_checked_like_every_field(body, words):
    with pytest.raises(Refusal) as caught:
        SubmitRequest.model_validate(body)
    assert words in caught.value.message
    assert caught.value.code == "invalid_request"


def test_a_wrong_field_is_a_refusal_that_names_it():
    with pytest.raises(Refusal) as caught:
        SubmitRequest.model_validate({"script_path": "/home/ada/run.sh", "gpus": -1})
    assert (caught.value.message, caught.value.code, caught.value.status) == (
        "gpus must be a whole number, 0 or more, not -1.",
        "invalid_request",
        400,
    )
