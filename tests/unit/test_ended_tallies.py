"""atp.query.ended: the ended-task counter of the metrics, kept in tallies up to a mark."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from atp.models import EndTally, EndTallyMark, Status, TaskInstance
from atp.query import ended
from atp.query.ended import LAG, ended_totals
from tests.support.factories import TaskInstanceFactory, TaskTypeFactory
from tests.support.plans import plan


def end(task_type, status, at, n=1):
    """``n`` tasks of ``task_type`` that ended in ``status`` at ``at``."""
    return TaskInstanceFactory.create_batch(n, type=task_type, status=status, finished_at=at)


@pytest.fixture
def mail(db):
    return TaskTypeFactory(identifier="mail")


def test_the_first_scrape_counts_every_end_up_to_the_lag(mail):
    now = timezone.now()
    resize = TaskTypeFactory(identifier="resize")
    end(mail, Status.FINISHED, now - timedelta(days=3), n=3)
    end(mail, Status.FAILED, now - timedelta(hours=1))
    end(resize, Status.REVOKED, now - LAG - timedelta(seconds=1))
    end(resize, Status.FINISHED, now - LAG + timedelta(seconds=1))  # too recent: next time
    TaskInstanceFactory(type=mail, status=Status.RUNNING)  # not ended
    assert ended_totals(now) == {
        (mail.pk, Status.FINISHED): 3,
        (mail.pk, Status.FAILED): 1,
        (resize.pk, Status.REVOKED): 1,
    }
    assert EndTallyMark.objects.get().counted_through == now - LAG


def test_later_scrapes_add_the_new_ends_and_deleted_tasks_stay_counted(mail):
    now = timezone.now()
    old = end(mail, Status.FINISHED, now - timedelta(hours=2), n=2)
    recent = end(mail, Status.FINISHED, now - LAG / 2)  # after the first mark
    assert ended_totals(now) == {(mail.pk, Status.FINISHED): 2}
    TaskInstance.objects.filter(pk__in=[task.pk for task in old]).delete()  # retention
    later = now + timedelta(minutes=5)
    end(mail, Status.FAILED, later - LAG - timedelta(seconds=1))
    assert ended_totals(later) == {(mail.pk, Status.FINISHED): 2 + 1, (mail.pk, Status.FAILED): 1}
    assert recent[0].finished_at <= later - LAG
    # Nothing new: the same totals, whatever the number of scrapes.
    assert ended_totals(later + timedelta(seconds=15)) == ended_totals(later)


def test_an_end_committed_behind_the_mark_is_not_counted(mail):
    # The documented limit: the mark trails by LAG; an end recorded further back than the
    # mark by the time it commits is not counted.
    now = timezone.now()
    ended_totals(now)
    end(mail, Status.FINISHED, now - LAG - timedelta(seconds=1))
    assert ended_totals(now + timedelta(minutes=1)) == {}


def test_the_mark_never_moves_back(mail):
    now = timezone.now()
    end(mail, Status.FINISHED, now - timedelta(hours=1))
    assert ended.advance(now, connection.alias)
    assert not ended.advance(now - timedelta(minutes=1), connection.alias)
    assert not ended.advance(now, connection.alias)
    assert EndTallyMark.objects.get().counted_through == now
    assert EndTally.objects.get().total == 1


def test_the_tallies_survive_a_type_and_go_with_it(mail):
    now = timezone.now()
    end(mail, Status.FINISHED, now - timedelta(hours=1))
    ended_totals(now)
    TaskInstance.objects.all().delete()
    assert ended_totals(now + timedelta(minutes=1)) == {(mail.pk, Status.FINISHED): 1}
    mail.delete()
    assert ended_totals(now + timedelta(minutes=2)) == {}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_scrapes_at_once_count_each_end_once(monkeypatch):
    # Both scrapes read the same mark before either moves it (the barrier); the conditional
    # UPDATE lets one count and makes the other wait for its row lock, then count nothing.
    mail = TaskTypeFactory(identifier="mail")
    now = timezone.now()
    end(mail, Status.FINISHED, now - timedelta(hours=1), n=5)
    barrier = threading.Barrier(2, timeout=10)
    read = ended.read_mark

    def read_then_wait(using):
        since = read(using)
        barrier.wait()
        return since

    monkeypatch.setattr(ended, "read_mark", read_then_wait)
    EndTallyMark.objects.create(pk=1, counted_through=now - timedelta(days=1))
    results = []

    def scrape():
        try:
            results.append(ended.advance(now, "default"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scrape) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, True]
    assert EndTally.objects.get().total == 5


@pytest.mark.postgres
def test_a_scrape_reads_indexes_that_hold_no_history(mail):
    now = timezone.now()
    tail = ended.ended_rows(now - timedelta(minutes=1), now, connection.alias)
    assert "atp_task_retention" in plan(tail.values_list("type_id", "status"))
    assert "atp_task_live" in plan(TaskInstance.objects.order_by().live().values("status"))
