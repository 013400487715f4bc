"""`flask --app app …` for the person who runs the service: `tokens`
(create, list, revoke API tokens without the web page) and `password`."""

from __future__ import annotations

import time

import click
from flask.cli import with_appcontext

from . import auth, contract
from .extensions import refresher
from .shapes import iso


@click.group("tokens", help="Create, list and revoke API tokens.")
def tokens_cli():
    pass


@tokens_cli.command("create")
@click.argument("name")
@with_appcontext
def create(name: str):
    """Create a token named NAME and print its secret (shown once)."""
    cleaned = auth.clean_token_name(name)
    if cleaned is None:
        raise click.BadParameter(
            f"the name must be 1 to {contract.MAX_TOKEN_NAME_LENGTH} printable characters", param_hint="NAME"
        )
    token_id, secret = auth.new_api_token()
    refresher().store.create_api_token(token_id, cleaned, auth.hash_api_token(secret), time.time())
    click.echo(f"id: {token_id}\nname: {cleaned}\ntoken: {secret}")
    click.echo("Keep the token now: it is not shown again.", err=True)


@tokens_cli.command("list")
@with_appcontext
def list_():
    """List tokens (never their secrets)."""
    rows = refresher().store.list_api_tokens()
    if not rows:
        click.echo("no API tokens")
    for t in rows:
        click.echo(
            f"{t['id']}\t{t['name']}\tcreated {iso(t['created_at'])}\tlast used {iso(t['last_used_at']) or 'never'}"
        )


@tokens_cli.command("revoke")
@click.argument("token_id")
@with_appcontext
def revoke(token_id: str):
    """Revoke the token with id TOKEN_ID; it stops working at once."""
    found = refresher().store.delete_api_token(token_id)
    if not found:
        raise click.ClickException(f"no API token with id {token_id}")
    click.echo(f"revoked {token_id}")


@click.command("password", help="Print the generated shared password (none when AUTH_PASSWORD sets it).")
@with_appcontext
def password_cli():
    service = refresher()
    if service.settings.auth_password is not None:
        in_force = "AUTH_PASSWORD is set here"
    elif auth.password_source(service.store) == "AUTH_PASSWORD":
        in_force = "the service was last started with AUTH_PASSWORD set (in its environment, not this one)"
    else:
        click.echo(service.password)
        return
    # Not the generated password kept in the database: nobody can sign in with it.
    raise click.ClickException(f"{in_force}: that is the password in force; this command shows only a generated one")
