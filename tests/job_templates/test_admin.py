"""Templates in the admin: a script and its fields on one page, refused with a sentence if they do not fit."""

from __future__ import annotations

import pytest

from accounts.models import User
from audit.models import AuditEvent
from job_templates.models import JobTemplate, TemplateField

pytestmark = pytest.mark.django_db

ADD = "/admin/job_templates/jobtemplate/add/"
BODY = "#!/bin/bash\n#SBATCH --partition={{ partition }} --time={{ minutes }}\necho {{ greeting }}\n"


@pytest.fixture
def admin_client(client):
    root = User.objects.create_superuser("root", "root@example.org", "pw-root-123456")
    client.force_login(root)
    return client


def field(n: int, name: str, kind: str, **extra) -> dict[str, str]:
    data = {
        "name": name,
        "label": name.capitalize(),
        "kind": kind,
        "default": "",
        "choices": "",
        "order": str(n),
    }
    data.update(extra)
    return {f"fields-{n}-{key}": value for key, value in data.items()}


def post(client, body: str, *fields: dict[str, str], slug: str = "hello"):
    data = {
        "name": "Hello",
        "slug": slug,
        "cluster": "",
        "description": "Says hello.",
        "body": body,
        "enabled": "on",
        "fields-TOTAL_FORMS": str(len(fields)),
        "fields-INITIAL_FORMS": "0",
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
    }
    for f in fields:
        data.update(f)
    return client.post(ADD, data)


GOOD = (
    field(0, "partition", "partition", default="debug", locked="on"),
    field(1, "minutes", "time_limit", default="5", maximum="30"),
    field(2, "greeting", "text", default="hello world"),
)


def test_a_template_whose_fields_fit_its_script_is_saved_with_them(admin_client):
    r = post(admin_client, BODY, *GOOD)
    assert r.status_code == 302, r.content.decode()
    template = JobTemplate.objects.get(slug="hello")
    assert [(f.name, f.kind, f.default, f.locked) for f in template.fields.all()] == [
        ("partition", "partition", "debug", True),
        ("minutes", "time_limit", "5", False),
        ("greeting", "text", "hello world", False),
    ]
    # The admin's own log reaches the audit trail.
    assert AuditEvent.objects.filter(action="admin.add", actor__username="root").exists()


def test_a_script_naming_a_field_that_is_not_defined_is_refused_with_a_sentence(admin_client):
    r = post(admin_client, BODY + "echo {{ extra }}\n", *GOOD)
    assert r.status_code == 200
    assert (
        "The script uses {{ extra }}, but the template has no field named extra: add the field, or correct "
        "the name (names are lower-case)." in r.content.decode()
    )
    assert not JobTemplate.objects.exists()


def test_a_field_the_script_does_not_use_is_refused_with_a_sentence(admin_client):
    r = post(admin_client, BODY, *GOOD, field(3, "spare", "integer", default="1"))
    assert r.status_code == 200
    assert (
        "The field spare is not used in the script: write {{ spare }} where its value goes, "
        "or remove the field." in r.content.decode()
    )
    assert not JobTemplate.objects.exists()


def test_a_deleted_field_no_longer_counts_and_an_edit_is_checked_too(admin_client):
    assert post(admin_client, BODY, *GOOD).status_code == 302
    template = JobTemplate.objects.get()
    ids = list(template.fields.values_list("id", flat=True))
    change = f"/admin/job_templates/jobtemplate/{template.pk}/change/"
    data = {
        "name": "Hello",
        "slug": "hello",
        "cluster": "",
        "description": "",
        "body": BODY,
        "enabled": "on",
        "fields-TOTAL_FORMS": "3",
        "fields-INITIAL_FORMS": "3",
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
    }
    for n, (f, pk) in enumerate(zip(GOOD, ids, strict=True)):
        data.update(f)
        data.update({f"fields-{n}-id": str(pk), f"fields-{n}-template": str(template.pk)})
    data["fields-2-DELETE"] = "on"
    r = admin_client.post(change, data)
    assert r.status_code == 200
    assert "but the template has no field named greeting" in r.content.decode()
    assert template.fields.count() == 3
    # Taking the field out of the script too is a template that fits.
    data["body"] = BODY.replace("echo {{ greeting }}", "echo hi")
    assert admin_client.post(change, data).status_code == 302
    assert list(template.fields.values_list("name", flat=True)) == ["partition", "minutes"]


def test_a_text_field_inside_quotes_is_refused_with_its_line(admin_client):
    body = BODY.replace("echo {{ greeting }}", 'echo "Hello {{ greeting }}"')
    r = post(admin_client, body, *GOOD)
    assert r.status_code == 200
    html = r.content.decode()
    assert "Line 3: the text field greeting stands inside &quot;…&quot;." in html
    assert "GREETING={{ greeting }} on a line of its own, then &quot;$GREETING&quot;." in html
    assert not JobTemplate.objects.exists()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"locked": "on", "default": ""}, "A locked field needs its default: it is the value always used."),
        ({"default": "a; reboot"}, "The default does not fit: Greeting may not contain &#x27;;&#x27;"),
        ({"kind": "choice", "choices": "two words\nok"}, "The choice &#x27;two words&#x27; is not one word"),
        ({"kind": "choice"}, "A choice field needs its choices, one per line."),
        ({"choices": "a\nb"}, "Only a choice field has choices."),
        ({"minimum": "5", "maximum": "2"}, "The most may not be less than the least."),
        ({"name": "Greeting"}, "A field&#x27;s name is a lower-case word"),
        ({"name": "action"}, "action is a name the form uses itself; choose another."),
    ],
)
def test_a_field_that_cannot_work_is_refused_with_a_sentence(admin_client, extra, said):
    r = post(admin_client, BODY, GOOD[0], GOOD[1], field(2, **{"name": "greeting", "kind": "text", **extra}))
    assert r.status_code == 200
    assert said in r.content.decode()
    assert not JobTemplate.objects.exists()
    assert not TemplateField.objects.exists()


def test_the_pages_show_the_fields_inline_and_the_list_says_where_and_for_whom(admin_client):
    add = admin_client.get(ADD).content.decode()
    assert 'name="fields-TOTAL_FORMS"' in add
    assert "value as {{ name }}: the shell keeps its own $VAR" in add
    assert post(admin_client, BODY, *GOOD).status_code == 302
    template = JobTemplate.objects.get()
    change = admin_client.get(f"/admin/job_templates/jobtemplate/{template.pk}/change/").content.decode()
    assert 'value="greeting"' in change
    html = admin_client.get("/admin/job_templates/jobtemplate/").content.decode()
    assert "every cluster" in html
    assert "everyone on the cluster" in html
