"""Catalog: SQLAlchemy models and repository functions over PostgreSQL. They read and
write the session's transaction and never commit it: the caller (a service, a request,
a handler) owns the unit of work. Nothing here touches the object store."""
