"""One function per subcommand. Each returns the exit code or raises a ClientError.

Results go to stdout through `Output` (JSON with `--json`); notes and progress
go to stderr through the `Reporter`.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from . import credentials
from .. import contract
from .api import Server, refuse_existing
from .errors import FINAL_STATUS_CODES, INTERRUPTED, NO_OUTPUTS, OK, REFUSED, USAGE, ClientError
from .progress import Reporter, human_size, job_line
from .waiting import FINAL_STATUSES, ask_to_cancel, follow, settle


class Output:
    """stdout: the result, as text for people or as one JSON document."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, data, text: str | None) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)
        elif text:
            print(text, flush=True)


def describe(job: dict) -> str:
    lines = [f"job {job['jobId']}: {job_line(job)}"]
    if job.get("name"):
        lines.append(f"  name: {job['name']}")
    for f in job["files"]:
        detail = f"{f['status']} {f['progress']}% ({f['completedVariations']} of {f.get('totalVariations', '?')} done)"
        if f.get("error"):
            detail += f": {f['error']}"
        lines.append(f"  {f['name']}: {detail}")
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    hook = job.get("webhook")
    if hook:
        tries = f"{hook['attempts']} attempt{'' if hook['attempts'] == 1 else 's'}"
        state = f"delivered {hook['deliveredAt']} ({tries})" if hook["deliveredAt"] else f"not delivered yet ({tries})"
        if hook.get("lastError"):
            state += f"; last error: {hook['lastError']}"
        lines.append(f"  webhook {hook['url']}: {state}")
    lines.append(f"  created {job['createdAt']}, expires {job['expiresAt']}")
    return "\n".join(lines)


def _outcome(job: dict) -> str:
    if job["status"] == "failed":
        return f"job {job['jobId']} failed: {job.get('error') or 'see its status for each file'}"
    return (
        f"job {job['jobId']} was cancelled ({job['completedVariations']} of {job['totalVariations']} variations kept)"
    )


def _cancel_summary(job: dict) -> dict:
    """A job in the shape POST /api/jobs/<id>/cancel answers with."""
    return {
        "jobId": job["jobId"],
        "status": job["status"],
        "completedVariations": job["completedVariations"],
        "totalVariations": job["totalVariations"],
        "cancelledAt": job.get("cancelledAt"),
    }


def _cancel(server: Server, job_id: str) -> dict:
    """Cancel and return the settled result; a job that was already cancelled is
    fine (cancelling twice is safe), one that completed or failed is not."""
    try:
        result = server.cancel(job_id)
    except ClientError as exc:
        if exc.status != 409:
            raise
        already = (exc.body or {}).get("status")
        if already != "cancelled":
            raise ClientError(
                REFUSED, f"job {job_id} is already {already or 'finished'}; nothing to cancel (HTTP 409)", 409, exc.body
            ) from None
        return _cancel_summary(server.job(job_id))
    if result["status"] not in FINAL_STATUSES:
        result = _cancel_summary(settle(server, job_id))
    return result


def _cancel_text(result: dict) -> str:
    return (
        f"job {result['jobId']} {result['status']}: {result['completedVariations']} of "
        f"{result['totalVariations']} variations kept"
    )


def _save_zip(
    server: Server, job_id: str, destination: Path | None, reporter: Reporter, overwrite: bool = False
) -> Path:
    return server.download(
        job_id, destination, lambda total: reporter.transfer("downloading the ZIP", total), overwrite
    )


def _wait(
    server: Server,
    job_id: str,
    download: Path | None,
    reporter: Reporter,
    out: Output,
    print_status: bool,
    overwrite: bool = False,
) -> int:
    """Follow the job to its end, download it if asked, and turn its final
    status into the exit code."""
    try:
        job = follow(server, job_id, reporter)
    except KeyboardInterrupt:
        ask_to_cancel(job_id)  # raises unless the answer is yes
        result = _cancel(server, job_id)
        out.result(result, _cancel_text(result))
        job = server.job(job_id)
        if job["status"] != "completed":
            raise ClientError(FINAL_STATUS_CODES[job["status"]], _outcome(job)) from None
        return OK
    if download is not None:
        if job["completedVariations"]:
            path = _save_zip(server, job_id, download, reporter, overwrite)
            size = path.stat().st_size
            reporter.note(f"saved {path} ({human_size(size)})")
            job = {**job, "download": {"path": str(path), "size": size}}
        else:
            reporter.note(f"nothing to download: job {job_id} has no outputs")
    out.result(job, describe(job) if print_status else None)
    code = FINAL_STATUS_CODES[job["status"]]
    if code != OK:
        raise ClientError(code, _outcome(job))
    return OK


# --- the subcommands ---------------------------------------------------------------


def login(args, server: Server, reporter: Reporter, out: Output) -> int:
    password = os.environ.get("REFRESHER_PASSWORD")
    if password is None:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
        else:
            raise ClientError(USAGE, "no password: set REFRESHER_PASSWORD, use --password-stdin, or run at a terminal")
    session = server.login(password)
    if not args.save:
        out.result(session, session["token"])
        return OK
    path = credentials.save_token(session["token"])
    reporter.note(f"token saved to {path} (valid until {session['expiresAt']})")
    out.result({"expiresAt": session["expiresAt"], "savedTo": str(path)}, None)
    return OK


def logout(args, server: Server, reporter: Reporter, out: Output) -> int:
    server.logout(every_session=args.all)
    assert server.token is not None  # logout() refuses to run without one
    forgotten = credentials.forget_token(server.token)
    if forgotten is not None:
        reporter.note(f"signed out; removed the token saved in {forgotten}")
    else:
        reporter.note("signed out" + (": every session has ended" if args.all else ""))
    out.result({"signedOut": True, "allSessions": args.all, "removed": str(forgotten) if forgotten else None}, None)
    return OK


def submit(args, server: Server, reporter: Reporter, out: Output) -> int:
    paths = [Path(p) for p in args.files]
    for path in paths:
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ClientError(USAGE, f"{path}: no such readable file")
    if len(paths) > contract.MAX_FILES:
        raise ClientError(USAGE, f"at most {contract.MAX_FILES} files per job (got {len(paths)})")
    if args.download is not None and not args.force:
        refuse_existing(Path(args.download))  # before the upload, not after the wait
    server.check_token()  # fail fast, before a long upload
    uploader = server.uploader()
    try:
        if uploader.speaks_tus():
            created = _upload_resumably(args, paths, server, uploader, reporter)
        else:  # a server from before resumable uploads: one multipart request
            label = f"uploading {len(paths)} file{'s' if len(paths) > 1 else ''}"
            created = server.create_job(
                paths,
                args.variations,
                args.seed,
                lambda total: reporter.transfer(label, total),
                name=args.name,
                webhook_url=args.webhook,
            )
    except KeyboardInterrupt:
        raise ClientError(
            INTERRUPTED, "interrupted during the upload; run the same command again to go on where it stopped"
        ) from None
    reporter.note(
        f"job {created['jobId']} queued: {created['variationsPerVideo']} variations of "
        f"{len(created['files'])} file(s), {created['totalVariations']} in all"
    )
    return _queued(created, args, server, reporter, out)


def _upload_resumably(args, paths: list[Path], server: Server, uploader, reporter: Reporter) -> dict:
    """Each file as a resumable upload, with a progress bar of its own; then the job."""
    sent = []
    for path in paths:
        with reporter.transfer(path.name, path.stat().st_size) as progress:
            sent.append(uploader.send(path, progress))
    created = server.create_job_from_uploads(
        [upload_id for upload_id, _ in sent], args.variations, args.seed, args.name, args.webhook
    )
    uploader.ledger.forget([key for _, key in sent])
    return created


def _queued(created: dict, args, server: Server, reporter: Reporter, out: Output) -> int:
    """A job just made: its answer, or (--wait, --download) its end."""
    job_id = created["jobId"]
    download = Path(args.download) if args.download is not None else None
    if not (args.wait or download is not None):
        out.result(created, job_id)
        return OK
    if not out.as_json:
        out.result(None, job_id)  # the id first, so a script has it even if the wait is interrupted
    return _wait(server, job_id, download, reporter, out, print_status=False, overwrite=args.force)


def status(args, server: Server, reporter: Reporter, out: Output) -> int:
    if args.wait:
        return _wait(server, args.job, None, reporter, out, print_status=True)
    job = server.job(args.job)
    out.result(job, describe(job))
    return OK


def list_jobs(args, server: Server, reporter: Reporter, out: Output) -> int:
    jobs = server.jobs(args.limit, args.status)
    lines = [
        f"{j['id']}  {j['status']:<10} {j['overallProgress']:>3}%  "
        f"{j['completedVariations']}/{j['totalVariations']}  {j['createdAt']}  "
        f"{j.get('name') or ', '.join(j['fileNames'])}"
        for j in jobs
    ]
    if not jobs and not out.as_json:
        reporter.note("no jobs")
    out.result(jobs, "\n".join(lines))
    return OK


def cancel(args, server: Server, reporter: Reporter, out: Output) -> int:
    result = _cancel(server, args.job)
    out.result(result, _cancel_text(result))
    if result["status"] != "cancelled":
        raise ClientError(
            REFUSED, f"job {args.job} {result['status']} before the cancel took effect; nothing was cancelled"
        )
    return OK


def _again(args, server: Server, reporter: Reporter, out: Output, job: dict, what: str) -> int:
    reporter.note(
        f"job {job['jobId']} {what}: {job['totalVariations'] - job['completedVariations']} "
        f"variation(s) to make, {job['completedVariations']} kept"
    )
    if not args.wait:
        out.result(job, describe(job))
        return OK
    return _wait(server, job["jobId"], None, reporter, out, print_status=True)


def retry(args, server: Server, reporter: Reporter, out: Output) -> int:
    return _again(args, server, reporter, out, server.retry(args.job), "queued again")


def resume(args, server: Server, reporter: Reporter, out: Output) -> int:
    return _again(args, server, reporter, out, server.resume(args.job), "resumed")


def rerun(args, server: Server, reporter: Reporter, out: Output) -> int:
    if args.download is not None and not args.force:
        refuse_existing(Path(args.download))
    created = server.rerun(args.job, args.variations, args.seed, args.name)
    reporter.note(
        f"job {created['jobId']} queued from the videos of job {args.job}: "
        f"{created['variationsPerVideo']} variations of {len(created['files'])} file(s), "
        f"seed {created['seed']!r}"
    )
    return _queued(created, args, server, reporter, out)


def download(args, server: Server, reporter: Reporter, out: Output) -> int:
    destination = Path(args.output) if args.output else None
    if destination is not None and not args.force:
        refuse_existing(destination)  # before asking the server (a folder is looked at once its name is known)
    try:
        path = _save_zip(server, args.job, destination, reporter, args.force)
    except ClientError as exc:
        if exc.status != 404:
            raise
        job = server.job(args.job)  # an unknown job raises its own 404 here
        why = (
            "it has not finished yet"
            if job["status"] not in FINAL_STATUSES
            else f"it ended {job['status']} before any variation was made"
        )
        raise ClientError(
            NO_OUTPUTS, f"job {args.job} has no outputs to download: {why} (HTTP 404)", 404, exc.body
        ) from None
    size = path.stat().st_size
    out.result({"jobId": args.job, "path": str(path), "size": size}, str(path))
    return OK


def delete(args, server: Server, reporter: Reporter, out: Output) -> int:
    server.delete(args.job)  # a queued or processing job: 409, which says to cancel it first
    reporter.note(f"job {args.job} and its files are deleted")
    out.result({"jobId": args.job, "deleted": True}, None)
    return OK
