"""atp.query.search: the query language (parsing, errors) and every search form on a data set."""

import re
from importlib import import_module

import pytest
from django.db import connection

from atp import query
from atp.exceptions import InvalidInput, InvalidSearch
from atp.models import LogRecord, TaskInstance
from atp.query import search
from atp.query.search import And, Or, Term, parse_search_terms, satisfies_search_terms
from tests.support.plans import plan
from tests.unit.query_dataset import build


@pytest.fixture
def tasks(db):
    return build()


def found(text, **filters):
    return {task.identifier for task in query.iter_tasks(search=text, **filters)}


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [None, "", "   ", "\t\n"])
def test_blank_query_means_no_search(blank):
    assert parse_search_terms(blank) is None


def test_adjacent_terms_are_anded_and_prefixes_recognised():
    assert parse_search_terms("name:resize state:failure alpha") == And(
        (Term("name", "resize"), Term("state", "FAILURE"), Term("any", "alpha"))
    )


def test_explicit_and_equals_adjacency():
    assert parse_search_terms("abc AND def") == parse_search_terms("abc def")


def test_and_binds_tighter_than_or():
    assert parse_search_terms("abc def OR ghi") == Or(
        (And((Term("any", "abc"), Term("any", "def"))), Term("any", "ghi"))
    )


def test_parentheses_group():
    assert parse_search_terms("abc (def OR ghi)") == And(
        (Term("any", "abc"), Or((Term("any", "def"), Term("any", "ghi"))))
    )
    assert parse_search_terms("((abc))") == Term("any", "abc")


def test_quotes_keep_phrases_and_values_together():
    assert parse_search_terms('"disk full"') == Term("any", "disk full")
    assert parse_search_terms('result:"no space left"') == Term("result", "no space left")
    assert parse_search_terms('kwargs:path="/a b.tif"') == Term("kwargs", ("path", "/a b.tif"))
    assert parse_search_terms(r'"say \"hi\" now"') == Term("any", 'say "hi" now')
    # Parentheses and operators inside quotes are text.
    assert parse_search_terms('"(a OR b)"') == Term("any", "(a OR b)")


def test_a_fully_quoted_term_is_free_text_even_with_a_prefix_or_operator_name():
    assert parse_search_terms('"state:FAILURE"') == Term("any", "state:FAILURE")
    assert parse_search_terms('"AND" xyz') == And((Term("any", "AND"), Term("any", "xyz")))
    assert parse_search_terms('"-abc"') == Term("any", "-abc")


def test_unknown_prefix_is_free_text_and_prefixes_ignore_case():
    assert parse_search_terms("http://example.org") == Term("any", "http://example.org")
    assert parse_search_terms("NAME:resize") == Term("name", "resize")


def test_lower_case_operators_are_search_text():
    assert parse_search_terms("abc and def") == And(
        (Term("any", "abc"), Term("any", "and"), Term("any", "def"))
    )


def test_state_and_kwargs_terms_are_exact_and_may_be_short():
    assert parse_search_terms("state:success kwargs:n=5") == And(
        (Term("state", "SUCCESS"), Term("kwargs", ("n", "5")))
    )
    assert parse_search_terms("kwargs:n=") == Term("kwargs", ("n", ""))


@pytest.mark.parametrize(
    "text, message",
    [
        ("(abc", "never closed"),
        ("abc)", "unbalanced"),
        ("abc OR", "ends after"),
        ("OR abc", "needs a term"),
        ("abc AND", "ends after"),
        ("abc AND OR def", "needs a term"),
        ("abc ()", r"unexpected '\)'"),
        ("NOT abc", "NOT"),
        ("abc -def", "negation"),
        ('"abc', "unterminated quote"),
        ("name:", "no value"),
        ('args:""', "no value"),
        ("ab", "at least 3"),
        ("name:ab", "at least 3"),
        ("state:DONE", "unknown task state"),
        ("kwargs:novalue", "key=value"),
        ("kwargs:=5", "key=value"),
        ("(" * 6 + "abc" + ")" * 6, "deeper than 5"),
        (" ".join(["abc"] * 129), "129 tokens"),
        ("x" * 2049, "2049 characters"),
    ],
)
def test_malformed_queries_raise_a_clear_invalid_search(text, message):
    with pytest.raises(InvalidSearch, match=message):
        parse_search_terms(text)


def test_invalid_search_is_invalid_input_and_limits_are_inclusive():
    assert issubclass(InvalidSearch, InvalidInput)
    assert parse_search_terms("(" * 5 + "abc" + ")" * 5) == Term("any", "abc")
    assert isinstance(parse_search_terms(" ".join(["abc"] * 128)), And)
    assert parse_search_terms("x" * 2048) == Term("any", "x" * 2048)


def test_malformed_search_is_refused_by_iter_tasks_before_any_query(db):
    with pytest.raises(InvalidSearch):
        query.iter_tasks(search="(abc")


# --- prefixed terms ---------------------------------------------------------------------


def test_name_is_a_case_insensitive_substring_of_the_type(tasks):
    assert found("name:resize") == {"resize-1", "resize-2", "resize-3"}
    assert found("name:IMG.") == found("name:img.resize") | found("name:thumbnail")
    assert found("name:nosuchtype") == set()


def test_state_is_exact_with_celery_or_atp_names(tasks):
    assert found("state:FAILURE") == found("state:failed") == {"resize-2"}
    assert found("state:RECEIVED") == {"mail-4"}
    assert found("state:RETRY") == set()


def test_worker_matches_host_name_or_server_id(tasks):
    assert found("worker:node-a") == {"resize-1", "thumb-1", "mail-4", "thumb-3"}
    assert found("worker:NODE-B") == {"resize-2", "mail-2"}
    # 0xCCC never registered: found by its server id alone, on the task rows (not through
    # the task-received records, which the search index leaves out).
    LogRecord.objects.filter(event="task-received").delete()
    assert found("worker:0xccc") == {"thumb-2", "mail-3"}
    assert found("0xccc") == {"thumb-2", "mail-3"}  # free text too


def test_the_task_rows_server_ids_are_read_one_each(tasks):
    TaskInstance.objects.filter(server_id="0xCCC").update(server_id="0xDDD-z")
    assert search._task_server_ids() == sorted(
        set(TaskInstance.objects.exclude(server_id="").values_list("server_id", flat=True))
    )
    assert found("worker:ddd-Z") == {"thumb-2", "mail-3"}


@pytest.mark.postgres
def test_the_task_rows_server_ids_are_read_by_a_loose_index_scan(tasks):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {search._DISTINCT_SERVER_IDS}")
        text = "\n".join(row[0] for row in cursor.fetchall())
    assert "Recursive Union" in text and "Index Only Scan" in text, text


def test_args_is_a_substring_of_the_args_repr(tasks):
    # resize-1 has alpha in its kwargs, not its args.
    assert found("args:alpha") == {"thumb-1", "thumb-3"}
    assert found("args:\"'/data/delta.png', 128\"") == {"thumb-2"}
    assert found("args:hello") == {"mail-4"}


@pytest.mark.parametrize(
    "term, expected",
    [
        ("kwargs:width=640", {"resize-1", "resize-3"}),
        ("kwargs:width=64", set()),  # exact, not a substring
        ("kwargs:to=ops@example.org", {"mail-1", "mail-3"}),
        ('kwargs:path="/data/beta.tif"', {"resize-2"}),
        ("kwargs:urgent=True", {"mail-1"}),
        ("kwargs:urgent=false", {"mail-2"}),
        ("kwargs:count=5", {"mail-3"}),
        ("kwargs:retries=5", {"mail-2"}),
        ("kwargs:missing=5", set()),
    ],
)
def test_kwargs_key_value_is_exact(tasks, term, expected):
    assert found(term) == expected


def test_kwargs_pairs_combine(tasks):
    assert found("kwargs:to=ops@example.org kwargs:count=5") == {"mail-3"}


def test_result_is_a_substring_of_the_result_repr(tasks):
    assert found("result:1234") == {"resize-1"}
    assert found("result:SMALL") == {"thumb-3"}
    assert found("result:disk") == set()  # an exception, not a result


# --- free text --------------------------------------------------------------------------


def test_free_text_finds_identifier_and_uuid(tasks):
    assert found("resize-2") == {"resize-2"}
    assert found(str(tasks["mail-2"].uuid)) == {"mail-2"}
    assert found(tasks["mail-3"].uuid.hex[:8]) == {"mail-3"}


def test_free_text_finds_name_state_and_worker(tasks):
    assert found("thumbnail") == {"thumb-1", "thumb-2", "thumb-3"}
    assert found("failure") == {"resize-2"}
    assert found("node-b") == {"resize-2", "mail-2"}
    assert found("0xccc") == {"thumb-2", "mail-3"}


def test_free_text_finds_args_kwargs_result_and_exception(tasks):
    assert found("alpha") == {"resize-1", "thumb-1", "thumb-3"}
    assert found("gamma") == {"resize-3"}
    assert found("1234}") == {"resize-1"}
    assert found('"disk full"') == {"resize-2"}


def test_free_text_is_case_insensitive_and_treats_like_wildcards_literally(tasks):
    assert found("ALPHA") == found("alpha")
    assert found("a%a") == set()
    assert found("___") == set()


def test_quoted_phrase_must_appear_as_a_whole(tasks):
    assert found('"disk full"') == {"resize-2"}
    assert found('"full disk"') == set()


# --- combinations -------------------------------------------------------------------------


def test_and_or_and_parentheses_combine(tasks):
    assert found("name:resize state:FAILURE") == {"resize-2"}
    assert found("name:resize AND state:FAILURE") == {"resize-2"}
    assert found("name:resize OR name:mail") == found("name:resize") | found("name:mail")
    assert found("name:mail AND (state:PAUSED OR state:REVOKED)") == {"mail-1", "mail-3"}
    assert found("(name:mail state:PAUSED) OR result:1234") == {"mail-3", "resize-1"}
    assert found("alpha (state:RUNNING OR (worker:node-a result:small))") == {
        "thumb-1",
        "thumb-3",
    }


def test_search_combines_with_filters_sorting_and_paging(tasks):
    matches = query.iter_tasks(search="name:img", state="SUCCESS", sort_by="-received", limit=2)
    assert [task.identifier for task in matches] == ["thumb-3", "thumb-2"]
    page2 = query.iter_tasks(search="name:img", state="SUCCESS", sort_by="-received", offset=2)
    assert [task.identifier for task in page2] == ["resize-1"]


def test_no_match_is_an_empty_result(tasks):
    assert found("zzzzzz") == set()
    assert found("alpha state:REVOKED") == set()


# --- satisfies_search_terms -------------------------------------------------------------------


def test_satisfies_search_terms_checks_one_task(tasks):
    task = tasks["resize-2"]
    assert satisfies_search_terms(task, "name:resize state:FAILURE")
    assert satisfies_search_terms(task.pk, parse_search_terms('"disk full"'))
    assert not satisfies_search_terms(task, "state:SUCCESS")
    assert satisfies_search_terms(task, None) and satisfies_search_terms(task, "")


# --- indexes (PostgreSQL) ---------------------------------------------------------------------


@pytest.mark.postgres
def test_free_text_uses_the_log_trigram_index_and_no_task_text_index(tasks):
    text = plan(query.filter_tasks(search="alpha"), gin=True)
    assert "atp_log_q_text" in text
    # The task rows carry no text index any more (migration 0012): every status change
    # would re-insert their trigrams.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'atp_taskinstance'")
        assert "atp_task_q_text" not in {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
def test_only_the_longest_word_goes_to_the_trigram_index(tasks):
    # Common words ("job" in every identifier) would make the index read every row's entry.
    text = plan(query.filter_tasks(search="job-00654321"), gin=True)
    assert "'%00654321%'" in text and "'%job-00654321%'" not in text
    assert "strpos" in text and "atp_log_q_text" in text


def test_the_whole_term_must_still_match(tasks):
    assert found("resize-2") == {"resize-2"}  # the index finds every "resize"
    assert found("resize-9") == set()
    assert found("data/alpha.tif") == {"resize-1", "thumb-1", "thumb-3"}
    assert found("data/alpha.png") == set()


@pytest.mark.postgres
def test_kwargs_uses_the_input_index_and_prefixes_the_log_index(tasks):
    assert "atp_task_q_input" in plan(query.filter_tasks(search="kwargs:width=640"), gin=True)
    assert "atp_log_q_text" in plan(query.filter_tasks(search="result:small"), gin=True)


@pytest.mark.postgres
def test_state_and_type_sorted_by_received_walks_one_index(tasks):
    tasks_ = query.sort_tasks(query.filter_tasks(type="img.resize", state="SUCCESS"), "-received")
    text = plan(tasks_[:100], ordered=True)
    # An index in (…, received_at NULLS FIRST, id) order, read backwards: no sort step.
    assert "Index Scan Backward using atp_task_q_" in text and "Sort" not in text


def test_log_index_covers_exactly_the_searched_events():
    # The partial index serves a query only if the query's events are among the indexed.
    migration = import_module("atp.migrations.0013_no_received_records_in_the_search_index")
    assert "task-received" not in search.SEARCHED_EVENTS  # one per claim: kept off the index
    where = migration.LOG_INDEX.split("WHERE")[1]
    assert sorted(re.findall(r"'([^']+)'", where)) == sorted(search.SEARCHED_EVENTS)
    assert migration.SEARCHED_FIELDS == search.SEARCHED_FIELDS


def _log_index_definition() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'atp_log_q_text'")
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_migration_0013_takes_the_received_records_out_of_the_index_and_back(
    transactional_db,
):
    from django.core.management import call_command
    from django.db.migrations.executor import MigrationExecutor

    assert "task-received" not in _log_index_definition()
    try:
        MigrationExecutor(connection).migrate([("atp", "0012_search_text_in_the_log")])
        assert "'task-received'" in _log_index_definition()
        assert "server_id" in _log_index_definition()
    finally:
        call_command("migrate", "atp", verbosity=0)
    definition = _log_index_definition()
    assert "task-received" not in definition and "server_id" not in definition
    assert "'task-sent'" in definition and "gin_trgm_ops" in definition
