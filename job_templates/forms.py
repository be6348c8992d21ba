"""The form a person fills: one input per template field; a locked one is shown, never read from the post."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from job_templates import placeholders, values
from job_templates.models import JobTemplate, TemplateField

LOCKED_HELP = "Set by the template; it cannot be changed."


class FillForm(forms.Form):
    # Made once per form, so a double-clicked "Save and submit" saves and queues one job.
    idempotency_key = forms.CharField(max_length=64, widget=forms.HiddenInput)

    def __init__(
        self, *args: Any, job_template: JobTemplate, partitions: list[tuple[str, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.job_template = job_template
        self.template_fields = list(job_template.fields.all())
        for field in self.template_fields:
            self.fields[field.name] = _input(field, partitions)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for field in self.template_fields:
            # A locked field's value is its default, whatever was posted (Django also ignores the post
            # of a disabled field; this says it where the value is used).
            raw = field.default if field.locked else cleaned.get(field.name)
            if raw is None:
                continue  # the input itself already said why
            try:
                cleaned[field.name] = values.check(field, raw)
            except ValidationError as e:
                self.add_error(field.name, e)
        return cleaned

    def script(self) -> str:
        """The script as it will be saved: the body with every field's checked value in place."""
        kinds = {f.name: f.kind for f in self.template_fields}
        filled = {f.name: self.cleaned_data[f.name] for f in self.template_fields}
        return placeholders.fill(self.job_template.body, kinds, filled)


def _input(field: TemplateField, partitions: list[tuple[str, str]]) -> forms.Field:
    common: dict[str, Any] = {
        "label": field.label,
        "initial": field.default,
        "help_text": LOCKED_HELP if field.locked else field.help,
        "disabled": field.locked,
        # "Required" and every other rule are values.check's, in the field's own words (FillForm.clean).
        "required": False,
    }
    kind = field.kind
    if kind in (values.CHOICE, values.PARTITION):
        offered = [(c, c) for c in field.choice_list] if kind == values.CHOICE else list(partitions)
        if field.default and field.default not in dict(offered):
            # A locked (or preset) partition the person has no grant for is shown as it is: the policy
            # then says why it is refused, rather than the form pretending it was never asked for.
            offered.append((field.default, field.default))
        if not field.default:
            offered.insert(0, ("", "— choose —"))
        return forms.ChoiceField(choices=offered, **common)
    if kind in (values.INTEGER, values.GPUS):
        attrs = {"inputmode": "numeric"}
        least = field.minimum if field.minimum is not None else (0 if kind == values.GPUS else None)
        if least is not None:
            attrs["min"] = str(least)
        if field.maximum is not None:
            attrs["max"] = str(field.maximum)
        return forms.CharField(widget=forms.NumberInput(attrs=attrs), **common)
    if kind == values.TIME_LIMIT:
        common["help_text"] = common["help_text"] or "Minutes, or a Slurm time such as 1:30:00 or 2-00."
        return forms.CharField(widget=forms.TextInput(attrs={"maxlength": "20"}), **common)
    most = min(field.maximum or values.TEXT_MAX_LENGTH, values.TEXT_HARD_MAX)
    return forms.CharField(widget=forms.TextInput(attrs={"maxlength": str(most)}), strip=False, **common)
