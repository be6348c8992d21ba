"""Job templates: a script with named fields that administrators define and people fill in."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q, QuerySet

from clusters.models import Cluster
from job_templates import placeholders, values

# Names the fill form uses for itself; a field may not take them.
RESERVED_NAMES = frozenset({"action", "idempotency_key", "csrfmiddlewaretoken"})


class JobTemplate(models.Model):
    """A script body with `{{ field }}` placeholders, offered on one cluster or on all of them."""

    cluster = models.ForeignKey(
        Cluster,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Leave empty to offer the template on every cluster.",
    )
    name = models.CharField(max_length=100)
    slug = models.SlugField(
        max_length=50,
        unique=True,
        help_text="Its address and the start of the saved script's file name, e.g. "
        "~/clusterra-jobs/<slug>-20260107-140501.sh.",
    )
    description = models.TextField(
        blank=True, help_text="What the template runs, for the people who fill it."
    )
    body = models.TextField(
        "script",
        help_text="The job script, starting with #!. Write a field's value as {{ name }}: the shell "
        "keeps its own $VAR and ${VAR}. Text fields are inserted as one quoted word, so place them where a "
        'shell word starts (NAME={{ name }}, then "$NAME"), not inside quotes or a here-document.',
    )
    groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="+",
        help_text="Who may use it. Leave empty for everyone allowed on the cluster.",
    )
    enabled = models.BooleanField(default=True, help_text="Disabled templates are not offered.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def where(self) -> str:
        return self.cluster.name if self.cluster_id else "every cluster"


class TemplateField(models.Model):
    """One named value of a template: how it is asked for, its default, and whether people may change it."""

    class Kind(models.TextChoices):
        TEXT = values.TEXT, "Text"
        INTEGER = values.INTEGER, "Whole number"
        CHOICE = values.CHOICE, "Choice"
        PARTITION = values.PARTITION, "Partition"
        TIME_LIMIT = values.TIME_LIMIT, "Time limit"
        GPUS = values.GPUS, "GPUs"

    template = models.ForeignKey(JobTemplate, on_delete=models.CASCADE, related_name="fields")
    name = models.CharField(
        max_length=40,
        validators=[
            RegexValidator(
                placeholders.FIELD_NAME,
                "A field's name is a lower-case word (letters, digits, _) starting with a letter.",
            )
        ],
        help_text="As written in the script: {{ name }}.",
    )
    label = models.CharField(max_length=100, help_text="What the person reads above the input.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TEXT)
    default = models.CharField(max_length=200, blank=True)
    choices = models.TextField(blank=True, help_text="For a choice: one value per line.")
    minimum = models.IntegerField(
        null=True, blank=True, help_text="Least number (minutes for a time limit; characters for text)."
    )
    maximum = models.IntegerField(
        null=True, blank=True, help_text="Most number (minutes for a time limit; characters for text)."
    )
    locked = models.BooleanField(
        default=False, help_text="Shown but not editable: the default is used whatever is posted."
    )
    help = models.CharField(max_length=200, blank=True, help_text="A hint under the input.")
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [models.UniqueConstraint(fields=["template", "name"], name="one_field_per_name")]

    def __str__(self) -> str:
        return f"{self.label} ({{{{ {self.name} }}}})"

    @property
    def choice_list(self) -> list[str]:
        return [line.strip() for line in self.choices.splitlines() if line.strip()]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.name in RESERVED_NAMES:
            errors["name"] = f"{self.name} is a name the form uses itself; choose another."
        if self.kind == self.Kind.CHOICE:
            problem = values.check_choice_values(self.choice_list)
            if problem:
                errors["choices"] = problem
        elif self.choices.strip():
            errors["choices"] = "Only a choice field has choices."
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            errors["maximum"] = "The most may not be less than the least."
        if self.locked and not self.default.strip():
            errors["default"] = "A locked field needs its default: it is the value always used."
        if self.default.strip() and not errors:
            try:
                values.check(self, self.default)
            except ValidationError as e:
                errors["default"] = f"The default does not fit: {' '.join(e.messages)}"
        if errors:
            raise ValidationError(errors)


def usable_by(person: object, cluster: Cluster) -> QuerySet[JobTemplate]:
    """The enabled templates offered on `cluster` to `person`: for everyone there, or for one of their groups.

    Whether the person may use the cluster at all is the policy's question (the views ask it first).
    """
    offered = JobTemplate.objects.filter(Q(cluster=cluster) | Q(cluster__isnull=True), enabled=True)
    groups = getattr(person, "groups", None)
    member = Q(groups__in=groups.all()) if groups is not None else Q(pk__in=[])
    with_groups = JobTemplate.groups.through.objects.values("jobtemplate_id")
    return offered.filter(~Q(pk__in=with_groups) | member).distinct().order_by("name")
