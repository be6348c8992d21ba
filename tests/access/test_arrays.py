"""access.arrays: an --array expression read as Slurm's job_submit plugin reads it (tasks, at once)."""

from __future__ import annotations

import re

import pytest

from access.arrays import array_tasks, holds_task, without_throttle


@pytest.mark.parametrize(
    ("expression", "tasks", "at_once"),
    [
        ("0-99%10", 100, 10),
        ("1,3,5-9:2", 5, 5),
        ("7", 1, 1),
        ("0-3", 4, 4),
        ("0-3%2", 4, 2),
        ("0-9%20", 10, 10),  # a throttle above the task count lets them all run
        ("1-10:3", 4, 4),  # 1, 4, 7, 10
        ("0-10:3%2", 4, 2),  # 0, 3, 6, 9
        ("000-002", 3, 3),
        (" 0-2 ", 3, 3),
        ("0-1,0-1", 4, 4),  # counted as written: never less than Slurm runs
    ],
)
def test_it_counts_tasks_and_how_many_run_at_once(expression, tasks, at_once):
    assert array_tasks(expression) == (tasks, at_once)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("", "The array is empty"),
        ("x", "The array item 'x' in 'x' is not a task id"),
        ("1,,3", "has an empty item"),
        ("1,", "has an empty item"),
        ("5-1", "The array range 5-1 ends before it starts; write it as 1-5."),
        ("1-9:0", "has a step of 0"),
        ("0-9%0", "The array's throttle %0 would let no task run; use %1 or more, e.g. --array=0-9%4."),
        ("0-9%", "The array item '0-9%' in '0-9%' is not a task id"),
        ("0-9%2%3", "is not a task id"),
        ("\u0661-\u0663", "is not a task id"),  # Arabic-Indic digits are digits to Python, not to Slurm
        ("0-9\n,2", "is not a task id"),
    ],
)
def test_an_expression_it_cannot_read_is_refused_with_a_sentence_that_says_why(expression, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        array_tasks(expression)


def test_a_throttle_is_what_comes_after_the_percent_sign():
    assert without_throttle("0-99%10") == "0-99"
    assert without_throttle("1,3,5-9:2") == "1,3,5-9:2"


def test_it_tells_which_task_ids_an_expression_holds():
    assert holds_task("3-99:2%10", 5)
    assert not holds_task("3-99:2%10", 4)
    assert holds_task("1,7,10-12", 11)
    assert not holds_task("1,7,10-12", 13)
    assert not holds_task("not an array", 1)
