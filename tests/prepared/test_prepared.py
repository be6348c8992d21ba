"""prepared: a query compiled once answers what the ORM answers, its values only ever parameters."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db.models import Q
from django.utils import timezone

from accounts.demo import membership
from accounts.models import DemoMember, User
from clusters.models import Cluster, cluster_by_slug, enabled_clusters
from jobs import present
from jobs.models import JobRecord
from prepared import NotPreparable, Prepared, fields_of, instance

pytestmark = pytest.mark.django_db


def cluster(slug: str, **fields) -> Cluster:
    return Cluster.objects.create(slug=slug, name=f"Cluster {slug}", **fields)


def test_a_cluster_by_slug_is_the_orms_cluster_field_for_field():
    made = cluster("alpha", allowed_script_roots="/home\n/scratch")
    cluster("beta")
    found = cluster_by_slug("alpha")
    assert found is not None
    assert not found._state.adding
    assert found._state.db == "default"
    assert {f: getattr(found, f) for f in fields_of(Cluster)} == {
        f: getattr(Cluster.objects.get(pk=made.pk), f) for f in fields_of(Cluster)
    }
    assert cluster_by_slug("gamma") is None


@pytest.mark.parametrize(
    "slug", ["alpha' OR '1'='1", 'alpha"; DROP TABLE clusters_cluster; --', "%", "alpha\\"]
)
def test_a_value_is_a_parameter_never_sql(slug):
    cluster("alpha")
    assert cluster_by_slug(slug) is None
    assert Cluster.objects.filter(slug="alpha").exists()


def test_rows_come_back_through_the_orms_converters():
    person = User.objects.create(username="ada@example.test", email="ada@example.test")
    where = cluster("alpha")
    summary = {"counts": {"RUNNING": 2}, "array": "0-1"}
    for n in range(3):
        JobRecord.objects.create(
            cluster=where,
            person=person,
            posix_user="ada",
            slurm_job_id=100 + n,
            name=f"j{n}",
            state="RUNNING",
            array_summary=summary if n == 1 else {},
        )
    rows = present._first_page(2).rows(person.pk, where.pk)
    expected = list(
        present.jobs_of(person, where).order_by("-created", "-id").values(*present.LIST_COLUMNS)[:2]
    )
    assert rows == expected
    assert {type(r["array_summary"]) for r in rows} == {dict}
    assert present._COUNT.rows(person.pk, where.pk) == [{"person_id": person.pk, "total": 3}]
    assert present._COUNT.rows(person.pk + 1000, where.pk) == []


def test_the_first_page_of_a_list_is_the_same_through_either_path():
    person = User.objects.create(username="ada@example.test", email="ada@example.test")
    other = User.objects.create(username="bob@example.test", email="bob@example.test")
    where, elsewhere = cluster("alpha"), cluster("beta")
    for n, (who, at) in enumerate([(person, where)] * 7 + [(other, where), (person, elsewhere)]):
        JobRecord.objects.create(cluster=at, person=who, posix_user="x", slurm_job_id=200 + n, name=f"j{n}")
    fast = present.page_of(person, where, states=[], partition=None, page=1, per_page=5)
    # An "active or finished" filter matches every job, and takes the ORM's own path.
    slow = present.page_of(person, where, states=["ACTIVE", "FINISHED"], partition=None, page=1, per_page=5)
    assert (fast.jobs, fast.total, fast.page, fast.pages) == (slow.jobs, slow.total, slow.page, slow.pages)
    assert fast.total == 7
    assert len(fast.jobs) == 5
    empty = present.page_of(other, elsewhere, states=[], partition=None, page=1, per_page=5)
    assert (empty.jobs, empty.total, empty.pages) == ([], 0, 1)


def test_an_api_token_comes_with_its_owner():
    from accounts import api_tokens

    person = User.objects.create(username="ada@example.test", email="ada@example.test", first_name="Ada")
    token, raw = api_tokens.issue(person, name="laptop")
    found = api_tokens._by_digest(api_tokens.digest(raw))
    assert found.pk == token.pk
    assert found.name == "laptop"
    assert found.expires == token.expires
    assert found.user.pk == person.pk
    assert found.user.first_name == "Ada"
    assert found.user.is_active
    assert api_tokens._by_digest(api_tokens.digest(raw + "x")) is None


def test_queries_whose_values_do_not_reach_the_sql_as_they_are_are_refused():
    contains = Prepared(lambda name: Cluster.objects.filter(name__icontains=name).values("id"), str)
    with pytest.raises(NotPreparable):
        contains.rows("a")
    models = Prepared(lambda slug: Cluster.objects.filter(slug=slug), str)
    with pytest.raises(NotPreparable):
        models.rows("a")
    unused = Prepared(lambda slug: Cluster.objects.values("id"), str)
    with pytest.raises(NotPreparable):
        unused.rows("a")


def test_a_value_of_the_wrong_kind_is_refused_before_any_query():
    by_pk = Prepared(lambda pk: Cluster.objects.filter(pk=pk).values("slug"), int)
    for wrong in ("1", True, 1.0, None):
        with pytest.raises(TypeError):
            by_pk.rows(wrong)
    with pytest.raises(TypeError):
        by_pk.rows()
    made = cluster("alpha")
    assert by_pk.rows(made.pk) == [{"slug": "alpha"}]


@pytest.mark.django_db(transaction=True)
def test_many_threads_at_once_compile_it_once_and_each_get_their_own_rows():
    made = [cluster(f"c{n}") for n in range(8)]
    by_pk = Prepared(lambda pk: Cluster.objects.filter(pk=pk).values("slug"), int)
    compiled = []
    real_make = by_pk._make
    by_pk._make = lambda: compiled.append(1) or real_make()
    answers: dict[int, list] = {}
    start = threading.Barrier(len(made))

    def ask(c: Cluster) -> None:
        from django.db import connection

        start.wait()
        try:
            answers[c.pk] = by_pk.rows(c.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(c,)) for c in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert compiled == [1]
    assert answers == {c.pk: [{"slug": c.slug}] for c in made}


def test_an_instance_needs_every_field():
    made = cluster("alpha")
    row = Cluster.objects.filter(pk=made.pk).values(*fields_of(Cluster)).get()
    assert instance(Cluster, row).pk == made.pk
    del row["name"]
    with pytest.raises(KeyError):
        instance(Cluster, row)


def test_a_big_integer_goes_out_as_the_backend_types_it():
    # PostgreSQL's backend hands a big integer field's value over as psycopg's Int8: the prepared query
    # finds the marker inside that type and sends every value the same way.
    person = User.objects.create(username="ada@example.test", email="ada@example.test")
    where = cluster("alpha")
    JobRecord.objects.create(
        cluster=where, person=person, posix_user="ada", slurm_job_id=5_000_000_000, name="big"
    )
    by_id = Prepared(lambda job_id: JobRecord.objects.filter(slurm_job_id=job_id).values("name"), int)
    assert by_id.rows(5_000_000_000) == [{"name": "big"}]
    assert by_id.rows(705_032_704) == []  # the same number cut to 32 bits


def test_a_datetime_bound_answers_as_the_orms_on_either_side_of_it():
    person = User.objects.create(username="ada@example.test", email="ada@example.test")
    where = cluster("alpha")
    made = [
        JobRecord.objects.create(cluster=where, person=person, posix_user="ada", slurm_job_id=n, name=f"j{n}")
        for n in range(3)
    ]
    since = Prepared(
        lambda at: JobRecord.objects.filter(created__gte=at).order_by("id").values("id"), datetime
    )
    middle = made[1].created
    elsewhere = ZoneInfo("Pacific/Auckland")
    for at in (
        middle,  # a row's own time: >= keeps it
        middle + timedelta(microseconds=1),
        middle.astimezone(elsewhere),  # the same moment in another zone
        made[0].created - timedelta(days=400),
        made[2].created + timedelta(seconds=1),
    ):
        expected = list(JobRecord.objects.filter(created__gte=at).order_by("id").values("id"))
        assert since.rows(at) == expected, at
    with pytest.raises(TypeError):
        since.rows(middle.replace(tzinfo=None))


def test_a_value_used_in_several_places_goes_into_each():
    cluster("alpha")
    Cluster.objects.create(slug="beta", name="alpha")
    cluster("gamma")
    either = Prepared(
        lambda word: Cluster.objects.filter(Q(slug=word) | Q(name=word)).order_by("slug").values("slug"), str
    )
    assert either.rows("alpha") == [{"slug": "alpha"}, {"slug": "beta"}]
    assert either.rows("gamma") == [{"slug": "gamma"}]
    assert either.rows("delta") == []


def test_the_dashboards_lookups_answer_as_the_orm():
    cluster("beta", enabled=False)
    made = [cluster("gamma"), cluster("alpha")]
    assert [c.pk for c in enabled_clusters()] == [
        c.pk for c in Cluster.objects.filter(enabled=True).order_by("name")
    ]
    assert enabled_clusters()[0].slug == "alpha"
    ada = User.objects.create(username="ada@example.test", email="ada@example.test")
    bob = User.objects.create(username="bob@example.test", email="bob@example.test")
    for n, state in enumerate(["RUNNING", "PENDING", "COMPLETED", "FAILED", "CANCELLED", "PENDING"]):
        JobRecord.objects.create(
            cluster=made[n % 2], person=ada, posix_user="ada", slurm_job_id=n + 1, name=f"j{n}", state=state
        )
    for where in made:
        for who in (ada, bob):
            expected = present.jobs_of(who, where).exclude(state__in=present.FINISHED_JOB_STATES).count()
            assert present.active_count(who, where) == expected
    assert (present.active_count(ada, made[0]), present.active_count(ada, made[1])) == (1, 2)
    JobRecord.objects.filter(slurm_job_id=6).update(partition="gpu")
    JobRecord.objects.filter(slurm_job_id=4).update(partition="cpu")
    for where in made:
        for who in (ada, bob):
            expected = sorted(set(present.jobs_of(who, where).values_list("partition", flat=True)) - {""})
            assert present.partitions_used(who, where) == expected
    assert present.partitions_used(ada, made[1]) == ["cpu", "gpu"]
    assert membership.current(ada) is None
    member = DemoMember.objects.create(user=ada, via="email", expires=timezone.now())
    assert membership.current(ada).pk == member.pk
    assert membership.current(bob) is None
    DemoMember.objects.filter(pk=member.pk).update(ended=timezone.now())
    assert membership.current(ada) is None
