"""Alembic's entry point. The store runs migrations itself (Store.migrate), on
a connection it has already locked, and hands that connection in here."""

from alembic import context

from refresher.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, transaction_per_migration=False
)
with context.begin_transaction():
    context.run_migrations()
