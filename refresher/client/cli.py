"""`python -m refresher.client`: the argument parser and the exit-code contract."""

from __future__ import annotations

import argparse
import os
import sys

from .. import contract
from . import commands, credentials
from .api import Server
from .errors import AUTH, INTERRUPTED, USAGE, ClientError
from .progress import Reporter

PROG = "python -m refresher.client"
JOB_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
FORCE = ("-f", "--force", "--overwrite")

EPILOG = f"""\
environment:
  REFRESHER_URL       server URL (default {credentials.DEFAULT_URL})
  REFRESHER_TOKEN     bearer token: an API token or a session token
  REFRESHER_PASSWORD  the shared password, for `login`
  without --token or REFRESHER_TOKEN, the token saved by `login --save` is used

exit codes:
  0    done (with --wait: the job completed)
  1    the server refused the request (bad input, wrong job state, server error)
  2    usage error (bad options, unreadable file, a file a download would replace without --force)
  3    the job failed
  4    the job was cancelled
  5    no token, or the token or password was refused (401/403)
  6    unknown or expired job (404/410)
  7    cannot reach the server
  8    download: the job has no outputs (none were made, or it has not finished)
  130  interrupted (Ctrl-C)
"""


def _variations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not contract.MIN_VARIATIONS <= value <= contract.MAX_VARIATIONS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from {contract.MIN_VARIATIONS} to {contract.MAX_VARIATIONS}"
        )
    return value


def _name(text: str) -> str:
    if not contract.MIN_JOB_NAME_LENGTH <= len(text.strip()) <= contract.MAX_JOB_NAME_LENGTH:
        raise argparse.ArgumentTypeError(
            f"must be {contract.MIN_JOB_NAME_LENGTH} to {contract.MAX_JOB_NAME_LENGTH} characters"
        )
    return text


def _webhook(text: str) -> str:
    if not text.strip().lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError("must be an http:// or https:// URL")
    return text.strip()


def _limit(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= contract.MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {contract.MAX_LIST_LIMIT}")
    return int(text)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    # The shared options work before or after the subcommand; SUPPRESS keeps a
    # subcommand from resetting a value given before it.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"server URL (default: $REFRESHER_URL or {credentials.DEFAULT_URL})"
    )
    shared.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token (default: $REFRESHER_TOKEN, else the one `login --save` kept)",
    )
    shared.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON on stdout"
    )

    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[shared],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit videos to Video Refresher, follow jobs, cancel them and download the results. "
        "Results go to stdout; progress and messages to stderr (progress bars only at a terminal).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[shared], help=help, description=help)

    login = command("login", "exchange the shared password for a session token (valid 24 h)")
    login.add_argument(
        "--save",
        action="store_true",
        help=f"keep the token in {credentials.token_file()} (mode 0600) instead of printing it",
    )
    login.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    login.set_defaults(run=commands.login, needs_token=False)

    logout = command("logout", "end the token's session on the server at once, and forget it if it was saved")
    logout.add_argument(
        "--all",
        action="store_true",
        help="end every session (every browser and session token), not only this one; API tokens stay",
    )
    logout.set_defaults(run=commands.logout)

    submit = command("submit", f"upload 1-{contract.MAX_FILES} MP4/MOV files as a new job; prints the job id")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument(
        "-n",
        "--variations",
        type=_variations,
        default=5,
        metavar="N",
        help=f"variations per file, {contract.MIN_VARIATIONS}-{contract.MAX_VARIATIONS} "
        f"(default {contract.DEFAULT_VARIATIONS})",
    )
    submit.add_argument("--seed", help="same seed and files give the same effects")
    submit.add_argument(
        "--name",
        type=_name,
        help=f"the job's name, {contract.MIN_JOB_NAME_LENGTH}-"
        f"{contract.MAX_JOB_NAME_LENGTH} characters (default: "
        f"named after its files)",
    )
    submit.add_argument(
        "--webhook",
        type=_webhook,
        metavar="URL",
        help="an http(s) URL the server POSTs to, signed, when the job ends (the server needs WEBHOOK_SECRET)",
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the job until it finishes; the exit code tells how it ended"
    )
    submit.add_argument("--download", metavar="ZIP", help="when it finishes, save its ZIP here (implies --wait)")
    submit.add_argument(*FORCE, action="store_true", help="let --download replace a file that exists")
    submit.set_defaults(run=commands.submit)

    status = command("status", "show a job's status")
    status.add_argument("job", metavar="JOB")
    status.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    status.set_defaults(run=commands.status)

    list_ = command("list", "list jobs, newest first")
    list_.add_argument(
        "--limit",
        type=_limit,
        help=f"at most this many (1-{contract.MAX_LIST_LIMIT}, server default {contract.DEFAULT_LIST_LIMIT})",
    )
    list_.add_argument("--status", choices=JOB_STATUSES, help="only jobs with this status")
    list_.set_defaults(run=commands.list_jobs)

    cancel = command("cancel", "cancel a job; finished variations are kept")
    cancel.add_argument("job", metavar="JOB")
    cancel.set_defaults(run=commands.cancel)

    retry = command("retry", "queue a finished job's failed variations again, with their recorded effects")
    retry.add_argument("job", metavar="JOB")
    retry.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    retry.set_defaults(run=commands.retry)

    resume = command("resume", "make the variations a cancel left unmade (same seed and effects)")
    resume.add_argument("job", metavar="JOB")
    resume.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    resume.set_defaults(run=commands.resume)

    rerun = command(
        "rerun",
        "run a job's videos again with new effects, as a new job, without uploading "
        "them again; prints the new job's id",
    )
    rerun.add_argument("job", metavar="JOB")
    rerun.add_argument(
        "-n", "--variations", type=_variations, metavar="N", help="variations per file (default: as the job had)"
    )
    rerun.add_argument("--seed", help="a seed of your choosing (default: a new one)")
    rerun.add_argument("--name", help="the new job's name (default: the job's; \"\" names it after its files)")
    rerun.add_argument(
        "--wait", action="store_true", help="follow the new job until it finishes; the exit code tells how it ended"
    )
    rerun.add_argument("--download", metavar="ZIP", help="when it finishes, save its ZIP here (implies --wait)")
    rerun.add_argument(*FORCE, action="store_true", help="let --download replace a file that exists")
    rerun.set_defaults(run=commands.rerun)

    download = command("download", "save a finished job's outputs as one ZIP")
    download.add_argument("job", metavar="JOB")
    download.add_argument(
        "-o", "--output", metavar="ZIP", help="file (or folder) to write (default: the server's name, here)"
    )
    download.add_argument(*FORCE, action="store_true", help="replace the file if it exists (else it is refused)")
    download.set_defaults(run=commands.download)

    delete = command("delete", "delete a finished job and all its files on the server (cancel a running one first)")
    delete.add_argument("job", metavar="JOB")
    delete.set_defaults(run=commands.delete)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    reporter = Reporter.for_this_terminal()
    out = commands.Output(as_json=getattr(args, "json", False))
    try:
        url = credentials.server_url(getattr(args, "url", None))
    except credentials.BadURL as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    try:
        token = credentials.find_token(getattr(args, "token", None))
    except credentials.BadToken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return AUTH
    server = Server(url, token)
    try:
        return args.run(args, server, reporter, out)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def console() -> None:
    """The `refresher` command an install puts on PATH."""
    sys.exit(main(prog="refresher"))
