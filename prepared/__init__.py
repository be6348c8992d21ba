"""Queries compiled once: the SQL of a fixed query shape, written by the ORM the first time and reused.

Why: building a QuerySet and compiling it is most of what a small query costs in Python: on the 2-core
bench machine ~0.2-0.5 ms a query, ~16 % of a web worker's samples in SQLCompiler.as_sql alone (bench
row 8). The queries nearly every request makes (the signed-in person, an API token, a cluster by its
slug) have the same shape every time; only their values differ.

How: a Prepared query is an ordinary `.values()` QuerySet, built once from marker values, so its SQL is
the ORM's own for whatever database is configured. The markers' places among the compiled parameters
are noted; a call sends the same SQL with its own values in those places, and its rows come back through
the converters the ORM would apply (JSON, decimals, ...).

What it takes: values the ORM hands to the database as they are: an int or a str compared with `=`
(`filter(pk=…)`, `filter(slug=…)`, a foreign key's id), or an aware datetime compared with a datetime
field (`filter(ended_at__gte=…)`), which goes out as the backend adapts a datetime field's value (as it
is to PostgreSQL, as text in UTC to SQLite). Compiling checks that each marker comes out as a parameter
and refuses the query otherwise (a lookup that rewrites its value would); a value the query uses in
several places (one period's bounds in a filter and in two sums) goes into each of them. LIMIT and OFFSET are
part of the SQL text, so a slice is fixed where the query is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import ValuesIterable

# Values told apart from every other parameter of a query by type and value. The int is within a 32-bit
# positive field's range: Django compiles an exact lookup beyond the field's range to "no rows" instead.
_MARKERS: dict[type, Callable[[int], Any]] = {
    int: lambda n: 2_118_654_321 + n,
    str: lambda n: f"\x1eprepared marker {n}\x1e",
    # A microsecond apart, in 1970: no bound a query of the console compares with.
    datetime: lambda n: datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) + timedelta(microseconds=n),
}


def _as_sent(kind: type, value: Any, connection: Any) -> Any:
    """The value as the ORM hands a field's value of this kind to the database."""
    if kind is datetime:
        return connection.ops.adapt_datetimefield_value(value)
    return value


class NotPreparable(TypeError):
    """The query's values do not reach the database as plain parameters (a programming error)."""


@dataclass(frozen=True)
class _Compiled:
    alias: str
    sql: str
    params: tuple[Any, ...]
    # Per argument, in order: each place it goes among the params, with the type the backend gave it there.
    slots: tuple[tuple[tuple[int, type], ...], ...]
    names: tuple[str, ...]
    converters: dict[int, Any]


class Prepared:
    """`build(*markers)` compiled on first use; `rows(*values)` runs it with the values instead.

    `kinds` are the types of build's arguments (int or str), in order.
    """

    def __init__(self, build: Callable[..., QuerySet], *kinds: type) -> None:
        self.build = build
        self.kinds = kinds
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()

    def rows(self, *values: Any) -> list[dict[str, Any]]:
        """The rows for these values, as `.values()` gives them."""
        compiled = self._compiled or self._compile()
        if len(values) != len(compiled.slots):
            raise TypeError(f"{len(compiled.slots)} values expected, {len(values)} given")
        params = list(compiled.params)
        connection = connections[compiled.alias]
        for places, value, kind in zip(compiled.slots, values, self.kinds, strict=True):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TypeError(f"{value!r} is not a {kind.__name__}")
            if kind is datetime:
                if value.tzinfo is None:
                    raise TypeError(f"{value!r} is a naive datetime; the console compares aware ones")
                value = _as_sent(kind, value, connection)
            for place, wrap in places:
                params[place] = value if wrap is type(value) else wrap(value)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            found = cursor.fetchall()
        names, converters = compiled.names, compiled.converters
        if converters:
            found = [_converted(row, converters, connection) for row in found]
        return [dict(zip(names, row, strict=True)) for row in found]

    def _compile(self) -> _Compiled:
        with self._lock:
            if self._compiled is None:
                self._compiled = self._make()
            return self._compiled

    def _make(self) -> _Compiled:
        markers = [_MARKERS[kind](n) for n, kind in enumerate(self.kinds)]
        queryset = self.build(*markers)
        if queryset._iterable_class is not ValuesIterable:
            raise NotPreparable("a prepared query is a .values() query (dicts, no model instances)")
        query = queryset.query
        compiler = query.get_compiler(queryset.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet as e:
            raise NotPreparable("the ORM compiled the query to no rows at all (a value out of range?)") from e
        slots = []
        connection = connections[queryset.db]
        for marker, kind in zip(markers, self.kinds, strict=True):
            # The backend may hand a value over in a type of its own (psycopg's Int8 for a big integer
            # field): that type is kept, and a call's value goes out wrapped the same way.
            sent = _as_sent(kind, marker, connection)
            places = [i for i, p in enumerate(params) if isinstance(p, type(sent)) and p == sent]
            if not places:
                raise NotPreparable("an argument's value does not reach the SQL as it is")
            slots.append(tuple((place, type(params[place])) for place in places))
        fields = [column[0] for column in compiler.select[0 : compiler.col_count]]
        converters = compiler.get_converters(fields)
        names = (*query.extra_select, *query.values_select, *query.annotation_select)
        return _Compiled(queryset.db, sql, tuple(params), tuple(slots), names, converters)


def _converted(row: tuple[Any, ...], converters: dict[int, Any], connection: Any) -> list[Any]:
    # What SQLCompiler.apply_converters does to a row, with this request's connection.
    values = list(row)
    for position, (functions, expression) in converters.items():
        value = values[position]
        for function in functions:
            value = function(value, expression, connection)
        values[position] = value
    return values


def instance(model: type[Model], row: dict[str, Any], alias: str = "default") -> Model:
    """A model instance from a row holding every concrete field by attname, as the ORM would make it."""
    names = fields_of(model)
    return model.from_db(alias, names, [row[name] for name in names])


def fields_of(model: type[Model]) -> list[str]:
    """The attnames of the model's concrete fields: what `.values()` needs for `instance`."""
    return [field.attname for field in model._meta.concrete_fields]
