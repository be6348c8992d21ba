"""On PostgreSQL, the audit table itself refuses UPDATE and DELETE, so even raw SQL cannot change history.

The one update allowed is the one deleting a person makes: `actor` becomes NULL and
nothing else changes (the name stays in `actor_name`). The model's guard
(audit.models.AppendOnly) still stops the ORM first, with a clearer error.

SQLite, the one-machine default, gets no trigger: Django's test runner empties
tables there with DELETE, which a trigger would refuse. On PostgreSQL it uses
TRUNCATE, which row triggers do not see; TRUNCATE and DROP TRIGGER remain the table
owner's, so production should run the console as a role that does not own its tables
and ship the audit log off the machine (manage.py export_audit --s3).
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
       AND (to_jsonb(NEW) - 'actor_id') = (to_jsonb(OLD) - 'actor_id') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % of audit event % refused', TG_OP, OLD.id
        USING ERRCODE = 'restrict_violation';
END;
$$;
"""
TRIGGER = """
CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_append_only();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)  # None: its % are PL/pgSQL, not placeholders
        schema_editor.execute(TRIGGER, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
    ]
