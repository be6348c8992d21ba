"""Job templates in the admin: the script and its fields on one page, refused when they do not fit."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from audit.admin import AuditedModelAdmin
from job_templates import placeholders
from job_templates.models import JobTemplate, TemplateField


class FieldsFormSet(forms.BaseInlineFormSet):
    """The template's fields, checked against its script (the admin builds them with the unsaved template).

    Saving is refused as a whole when the script names a field that is not defined, or a field is not
    used, or a text field stands where its quoting would not hold (job_templates.placeholders).
    """

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return  # each field's own sentence first
        kinds: dict[str, str] = {}
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("name"):
                continue
            if data["name"] in kinds:
                raise ValidationError(f"Two fields are named {data['name']}; each name may be used once.")
            kinds[data["name"]] = data["kind"]
        problems = placeholders.problems(self.instance.body or "", kinds)
        if problems:
            raise ValidationError(problems)


class TemplateFieldInline(admin.StackedInline):
    model = TemplateField
    formset = FieldsFormSet
    extra = 0
    fields = [
        ("name", "label", "kind"),
        ("default", "locked"),
        "choices",
        ("minimum", "maximum"),
        "help",
        "order",
    ]
    formfield_overrides = {
        # Choices are short words, one a line; a smaller box than the admin's default.
        TemplateField._meta.get_field("choices"): {"widget": forms.Textarea(attrs={"rows": 3, "cols": 40})},
    }


@admin.register(JobTemplate)
class JobTemplateAdmin(AuditedModelAdmin):
    list_display = ["name", "slug", "where", "field_count", "groups_shown", "enabled", "updated"]
    list_filter = ["enabled", "cluster"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["groups"]
    fields = ["name", "slug", "cluster", "description", "body", "groups", "enabled"]
    inlines = [TemplateFieldInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("cluster").prefetch_related("groups", "fields")

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "body":
            # A script is read in a fixed-width font, and its lines must not wrap.
            kwargs["widget"] = forms.Textarea(
                attrs={"rows": 20, "cols": 100, "spellcheck": "false", "style": "font-family: monospace"}
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="where")
    def where(self, template: JobTemplate) -> str:
        return template.where

    @admin.display(description="fields")
    def field_count(self, template: JobTemplate) -> int:
        return len(template.fields.all())

    @admin.display(description="for")
    def groups_shown(self, template: JobTemplate) -> str:
        return ", ".join(g.name for g in template.groups.all()) or "everyone on the cluster"
