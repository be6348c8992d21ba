"""The submit form; what it sends goes through the API's own request class (jobs.submit_request)."""

from __future__ import annotations

from typing import Any

from django import forms

from clusters.refusal import Refusal
from jobs import directives, present
from jobs.submit_request import SubmitRequest


class SubmitForm(forms.Form):
    script_path = forms.CharField(
        required=False,
        max_length=4096,
        help_text="The absolute path of the script on the cluster, e.g. /home/you/run.sh.",
        widget=forms.TextInput(attrs={"placeholder": "/home/you/job.sh", "autofocus": True}),
    )
    script = forms.CharField(
        required=False,
        strip=False,
        label="Or the script itself",
        help_text="Paste or write the script here instead of giving a path; it runs in your home folder "
        "unless it says --chdir.",
        widget=forms.Textarea(attrs={"rows": 8, "placeholder": "#!/bin/bash\n#SBATCH --time=10\n"}),
    )
    partition = forms.ChoiceField(
        required=False, help_text="Empty: the script's --partition, else Slurm's default."
    )
    time_limit = forms.CharField(
        required=False,
        max_length=20,
        help_text="Minutes or a Slurm time (1:30:00, 2-00). "
        "Empty: the script's --time, else the partition's default.",
    )
    nodes = forms.IntegerField(required=False, min_value=1)
    cpus_per_task = forms.IntegerField(required=False, min_value=1, label="CPUs per task")
    gpus = forms.IntegerField(required=False, min_value=0, label="GPUs", help_text="For the whole job.")
    name = forms.CharField(required=False, max_length=200, label="Job name")
    working_directory = forms.CharField(
        required=False, max_length=4096, help_text="Empty: the script's --chdir, else the script's folder."
    )
    options = forms.CharField(
        required=False,
        max_length=4000,
        label="More sbatch options",
        help_text="As on an #SBATCH line, e.g. --ntasks-per-node=4 --exclusive --hold; they override the "
        "script's lines.",
    )
    # Made once per form, so a double-clicked Submit queues one job.
    idempotency_key = forms.CharField(max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args: Any, partitions: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["partition"].choices = [("", "— from the script, or the default —"), *partitions]

    def clean_options(self) -> dict[str, Any] | None:
        text = self.cleaned_data.get("options") or ""
        try:
            return directives.options_from_text(text) or None
        except directives.DirectiveError as e:
            raise forms.ValidationError(e.message.removeprefix("line 1: ")) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        has_path = bool((cleaned.get("script_path") or "").strip())
        has_text = bool((cleaned.get("script") or "").strip())
        if has_path and has_text:
            raise forms.ValidationError("Give a script path or write the script, not both.")
        if not has_path and not has_text:
            raise forms.ValidationError("Give the path of a script on the cluster, or write the script.")
        if not has_text:
            cleaned["script"] = None
        if not self.errors:
            self._check_as_the_api_does()
        return cleaned

    def _check_as_the_api_does(self) -> None:
        """The API's own checks of each field, their sentences under the field they are about.

        A time limit such as "1:xx" passes the form's fields but not SubmitRequest; saying so here marks
        the right input (aria-invalid) and names it as the form does ("Time limit", not time_limit).
        """
        try:
            SubmitRequest.model_validate(self.request_data())
        except Refusal as e:
            field = present.field_named(e.message)
            self.add_error(field if field in self.fields else None, present.for_people(e.message))

    def request_data(self) -> dict[str, Any]:
        """The fields the API takes (SubmitRequest's), leaving out what the person left empty."""
        return {
            n: self.cleaned_data[n]
            for n in SubmitRequest.model_fields
            if self.cleaned_data.get(n) not in (None, "")
        }
