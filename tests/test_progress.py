"""What a client sees of a job's progress (its JSON, the list, the events)
never goes backwards while the job lives; once it is cancelled it shows the
share of its variations that were made. The store is driven step by step as
a supervisor drives it, so every state in between is looked at."""

from __future__ import annotations

import time

from refresher.store.queue import JobNotStarted

from .support.api import login

TTL = 3600.0


def test_progress_never_goes_backwards_while_a_cancel_settles(app, client, media):
    headers = login(client)
    data = {"videos": [(open(media["clip"], "rb"), "ad.mp4")], "variations": "4"}
    job_id = client.post("/api/jobs", headers=headers, data=data, content_type="multipart/form-data").get_json()[
        "jobId"
    ]
    store = app.extensions["refresher"].store
    seen: list[tuple[str, int, int, int]] = []  # (status, overall, file, listed overall)

    def look():
        job = client.get(f"/api/jobs/{job_id}", headers=headers).get_json()
        listed = next(j for j in client.get("/api/jobs", headers=headers).get_json() if j["id"] == job_id)
        seen.append((job["status"], job["overallProgress"], job["files"][0]["progress"], listed["overallProgress"]))

    try:
        store.claim_next_variation("here", time.time())
    except JobNotStarted:
        store.start_job(job_id, time.time())
    first = store.claim_next_variation("here", time.time())
    second = store.claim_next_variation("here", time.time())
    assert first and second
    store.record_progress({first["id"]: 80, second["id"]: 40})
    store.roll_up_progress()
    look()  # 2 running of 4: (80 + 40) / 4
    store.request_cancel(job_id, time.time(), TTL)  # the two queued are skipped
    store.roll_up_progress()
    look()
    store.record_outcome(first["id"], "cancelled", time.time(), TTL, host="here")  # stopped; the other still runs
    store.roll_up_progress()
    look()
    store.record_outcome(second["id"], "cancelled", time.time(), TTL, host="here")  # the job settles
    look()

    assert [s[0] for s in seen] == ["processing"] * 3 + ["cancelled"], seen
    alive = seen[:-1]
    for column in (1, 2, 3):
        values = [s[column] for s in alive]
        assert values == sorted(values), f"went backwards while the job lived: {seen}"
    assert alive[0][1:] == (30, 30, 30), seen
    assert seen[-1][1:] == (0, 0, 0), "a cancelled job shows the share it made (none here)"
