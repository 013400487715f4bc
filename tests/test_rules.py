"""Every transition of a job and a variation, legal and illegal, as a table:
no processes, no database, milliseconds."""

from __future__ import annotations

import pytest

from refresher import rules
from refresher.rules import IllegalTransition, Job, Settlement, Variation

V = Variation
RUNNING = Job("processing")
QUEUED_JOB = Job("queued")

# (variation before, event, expected variation after — or IllegalTransition)
VARIATION_TABLE = [
    # claim: only a queued variation of a job that may run
    (V("queued"), lambda v: rules.claim(v, QUEUED_JOB), V("processing", attempts=1)),
    (
        V("queued", attempts=1, failures=1, progress=40),
        lambda v: rules.claim(v, RUNNING),
        V("processing", attempts=2, failures=1, progress=40),  # what a client saw stays until passed
    ),
    (V("queued"), lambda v: rules.claim(v, Job("processing", cancel_requested=True)), IllegalTransition),
    (V("queued"), lambda v: rules.claim(v, Job("cancelled")), IllegalTransition),
    (V("queued"), lambda v: rules.claim(v, Job("completed")), IllegalTransition),
    *[
        (V(s), lambda v: rules.claim(v, RUNNING), IllegalTransition)
        for s in ("processing", "completed", "failed", "cancelled")
    ],
    # complete
    (V("processing", attempts=1, progress=80, error="old"), rules.complete, V("completed", attempts=1, progress=100)),
    *[(V(s), rules.complete, IllegalTransition) for s in ("queued", "completed", "failed", "cancelled")],
    # fail: once more, then for good
    (
        V("processing", attempts=1, progress=50),
        lambda v: rules.fail(v, "exit 1"),
        V("queued", attempts=1, failures=1, progress=50, error="exit 1"),
    ),
    (
        V("processing", attempts=2, failures=1),
        lambda v: rules.fail(v, "exit 1"),
        V("failed", attempts=2, failures=2, error="exit 1"),
    ),
    *[(V(s), lambda v: rules.fail(v, "x"), IllegalTransition) for s in ("queued", "completed", "failed", "cancelled")],
    # interrupt: back to the queue, but not forever; failures are not interruptions
    (V("processing", attempts=1, progress=30), rules.interrupt, V("queued", attempts=1, interruptions=1, progress=30)),
    (
        V("processing", attempts=3, failures=1, interruptions=1),
        rules.interrupt,
        V("queued", attempts=3, failures=1, interruptions=2),
    ),
    (
        V("processing", attempts=3, interruptions=2),
        rules.interrupt,
        V(
            "failed",
            attempts=3,
            interruptions=3,
            error="the encode was interrupted 3 times (restarts or crashes); giving up",
        ),
    ),
    *[(V(s), rules.interrupt, IllegalTransition) for s in ("queued", "completed", "failed", "cancelled")],
    # cancel: a running one is stopped, a queued one skipped
    (V("processing", attempts=1, progress=60), rules.stopped_by_cancel, V("cancelled", attempts=1, progress=60)),
    (V("queued"), rules.skip_for_cancel, V("cancelled")),
    *[(V(s), rules.stopped_by_cancel, IllegalTransition) for s in ("queued", "completed", "failed", "cancelled")],
    *[(V(s), rules.skip_for_cancel, IllegalTransition) for s in ("processing", "completed", "failed", "cancelled")],
    # retry a failed one with a fresh budget; resume a cancelled one
    (V("failed", attempts=2, failures=2, progress=70, error="exit 1"), rules.retry, V("queued", attempts=2)),
    (V("failed", attempts=3, interruptions=3, error="x"), rules.retry, V("queued", attempts=3)),
    *[(V(s), rules.retry, IllegalTransition) for s in ("queued", "processing", "completed", "cancelled")],
    (V("cancelled", attempts=1, progress=60), rules.resume, V("queued", attempts=1)),
    *[(V(s), rules.resume, IllegalTransition) for s in ("queued", "processing", "completed", "failed")],
    # progress only rises, and 100 is for finished outputs
    (V("processing", progress=40), lambda v: rules.progress(v, 55.7), V("processing", progress=55)),
    (V("processing", progress=40), lambda v: rules.progress(v, 12), V("processing", progress=40)),
    (V("processing", progress=40), lambda v: rules.progress(v, 140), V("processing", progress=99)),
    (V("processing"), lambda v: rules.progress(v, -5), V("processing")),
    *[
        (V(s), lambda v: rules.progress(v, 50), IllegalTransition)
        for s in ("queued", "completed", "failed", "cancelled")
    ],
    # a job that cannot run at all takes its unstarted variations with it
    (
        V("queued", attempts=2, failures=1, error="exit 1"),
        lambda v: rules.fail_with_job(v, "no disk"),
        V("failed", attempts=2, failures=1, error="no disk"),
    ),
    *[
        (V(s), lambda v: rules.fail_with_job(v, "x"), IllegalTransition)
        for s in ("processing", "completed", "failed", "cancelled")
    ],
]


def check(before, event, after):
    """`after` is the state the event leads to, or IllegalTransition."""
    if after is IllegalTransition:
        with pytest.raises(IllegalTransition):
            event(before)
    else:
        assert event(before) == after


@pytest.mark.parametrize("before, event, after", VARIATION_TABLE)
def test_variation_transitions(before, event, after):
    check(before, event, after)


def vs(*statuses: str, error: str | None = None) -> list[Variation]:
    return [V(s, error=error if s == "failed" else None) for s in statuses]


# (job, its variations, expected settlement or None)
SETTLE_TABLE = [
    (RUNNING, vs("completed", "completed"), Settlement("completed", 100)),
    (RUNNING, vs("completed", "processing"), None),
    (RUNNING, vs("completed", "queued"), None),
    # completion wins: a cancel that came too late stopped nothing
    (Job("processing", cancel_requested=True), vs("completed", "completed"), Settlement("completed", 100)),
    (Job("processing", cancel_requested=True), vs("completed", "cancelled", "cancelled"), Settlement("cancelled", 33)),
    (Job("processing", cancel_requested=True), vs("cancelled", "cancelled"), Settlement("cancelled", 0)),
    (Job("processing", cancel_requested=True), vs("cancelled", "processing"), None),
    # some failed: usable, each file says what failed; all failed: failed, with the first reason
    (RUNNING, vs("completed", "failed", error="exit 1"), Settlement("completed", 50)),
    (RUNNING, vs("failed", "failed", error="exit 1"), Settlement("failed", 0, "exit 1")),
    (RUNNING, vs("failed", "failed"), Settlement("failed", 0, "every variation failed")),
    (Job("processing", cancel_requested=True), vs("failed", "cancelled", error="x"), Settlement("cancelled", 0)),
    # a queued job cancelled before it started
    (Job("queued", cancel_requested=True), vs("cancelled", "cancelled"), Settlement("cancelled", 0)),
    # final jobs do not settle again
    *[(Job(s), vs("completed"), None) for s in ("completed", "failed", "cancelled")],
]


@pytest.mark.parametrize("job, variations, expected", SETTLE_TABLE)
def test_settlement(job, variations, expected):
    assert rules.settle(job, variations) == expected


# (job before, event, expected job after — or IllegalTransition)
JOB_TABLE = [
    (QUEUED_JOB, rules.start, RUNNING),
    *[(Job(s), rules.start, IllegalTransition) for s in ("processing", "completed", "failed", "cancelled")],
    (Job("queued", cancel_requested=True), rules.start, IllegalTransition),
    (QUEUED_JOB, rules.request_cancel, Job("queued", cancel_requested=True)),
    (RUNNING, rules.request_cancel, Job("processing", cancel_requested=True)),
    (Job("processing", cancel_requested=True), rules.request_cancel, Job("processing", cancel_requested=True)),
    *[(Job(s), rules.request_cancel, IllegalTransition) for s in ("completed", "failed", "cancelled")],
    (QUEUED_JOB, lambda j: rules.fail_job(j, "no disk"), Job("failed", error="no disk")),
    (Job("queued", progress=50), lambda j: rules.fail_job(j, "no disk"), Job("failed", progress=50, error="no disk")),
    *[
        (Job(s), lambda j: rules.fail_job(j, "x"), IllegalTransition)
        for s in ("processing", "completed", "failed", "cancelled")
    ],
    *[(Job(s, error="e"), rules.reopen, QUEUED_JOB) for s in ("completed", "failed", "cancelled")],
    *[(Job(s), rules.reopen, IllegalTransition) for s in ("queued", "processing")],
]


@pytest.mark.parametrize("before, event, after", JOB_TABLE)
def test_job_transitions(before, event, after):
    check(before, event, after)


def test_retry_and_resume_say_why_not():
    assert rules.can_retry(Job("completed"), vs("completed", "failed")) is None
    assert "no failed variations" in rules.can_retry(Job("completed"), vs("completed"))
    assert "still processing" in rules.can_retry(RUNNING, vs("failed"))
    assert rules.can_resume(Job("cancelled")) is None
    assert "only a cancelled job" in rules.can_resume(Job("completed"))
    assert "cancelled" in rules.can_resume(Job("processing", cancel_requested=True))


def test_a_running_percent_is_whole_and_below_100():
    """What the encode worker sends and the store records while ffmpeg runs."""
    assert [rules.running_percent(p) for p in (-5, 0, 12.9, 55.7, 99.99, 100, 140)] == [0, 0, 12, 55, 99, 99, 99]


def test_a_job_joins_the_queue_only_below_its_cap():
    assert rules.may_queue(0, 1) and rules.may_queue(1, 2)
    assert not rules.may_queue(2, 2) and not rules.may_queue(3, 2)


def test_only_finished_jobs_may_expire():
    assert [s for s in rules.JOB_STATUSES if rules.may_expire(Job(s))] == ["completed", "failed", "cancelled"]


def test_running_progress_is_weighted_never_backwards_and_below_100():
    short, long = 2.0, 10.0
    weighted = [(short, V("completed")), (long, V("processing", progress=50))]
    assert rules.running_progress(0, weighted) == int((2 * 100 + 10 * 50) / 12)
    assert rules.running_progress(90, weighted) == 90, "never backwards"
    assert rules.running_progress(0, [(1.0, V("completed")), (1.0, V("completed"))]) == 99
    assert rules.running_progress(0, [(1.0, V("cancelled")), (1.0, V("processing", progress=20))]) == 10


def test_progress_never_goes_backwards_while_a_cancel_settles():
    """One of four equal variations 40 % made when the cancel comes: the job
    showed 10 % and kept showing it until it settled (it jumped to 40 % as the
    three queued ones were skipped, then fell to 0 % as the running one was
    stopped); once settled, it shows the share it made (0 %, the contract's)."""
    running = [V("processing", attempts=1, progress=40), V("queued"), V("queued"), V("queued")]
    shown = [rules.running_progress(0, [(1.0, v) for v in running])]
    skipped = [running[0], *(rules.skip_for_cancel(v) for v in running[1:])]
    shown.append(rules.running_progress(shown[-1], [(1.0, v) for v in skipped]))
    stopped = [rules.stopped_by_cancel(skipped[0]), *skipped[1:]]
    assert stopped[0].progress == 40, "a stopped attempt keeps what it had made while its job settles"
    assert shown == [10, 10]
    settled = rules.settle(Job("processing", cancel_requested=True, progress=10), stopped)
    assert settled == Settlement("cancelled", 0)


def test_made_share_is_round_100_times_completed_over_total():
    assert rules.made_share(rules.count(vs("completed", "cancelled", "cancelled"))) == 33
    assert rules.made_share(rules.count(vs(*["completed"] * 22, *["cancelled"] * 38))) == 37
    assert rules.made_share(rules.count([])) == 0
