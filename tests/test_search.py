"""Finding a file across every backup of a source (catalog.search), against PostgreSQL:
each content a path had, with the completed jobs that saw it; case does not matter;
`%` and `_` are letters; a fragment too short is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import search
from backup_operator.errors import Invalid
from backup_operator.storage import ObjectStore

from .conftest import back_up, write


def test_a_path_is_found_with_each_content_it_had_and_the_jobs_that_saw_it(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "docs/Annual_Report.txt", b"v1")
    write(source, "docs/100%.txt", b"percent")
    write(source, "other.txt", b"other")
    one, _ = back_up(sessions, store, bucket_id, source)
    two, _ = back_up(sessions, store, bucket_id, source)  # unchanged
    write(source, "docs/Annual_Report.txt", b"v2, longer")
    three, _ = back_up(sessions, store, bucket_id, source)
    (source / "docs/Annual_Report.txt").unlink()
    back_up(sessions, store, bucket_id, source)  # gone from the fourth

    with sessions() as session:
        found, more = search.find(session, "annual_REPORT", bucket_id=bucket_id, limit=10)
        assert not more
        [entry] = found
        assert entry.path == "docs/Annual_Report.txt"
        assert [(seen.state.size, seen.job_ids) for seen in entry.contents] == [
            (2, [one, two]),
            (10, [three]),
        ]
        assert [f.path for f in search.find(session, "0%", limit=10)[0]] == ["docs/100%.txt"]
        assert search.find(session, "n_a", limit=10)[0] == []  # "_" is no wildcard: not "nua"
        paths, more = search.find(session, ".txt", limit=2)
        assert [f.path for f in paths] == ["docs/100%.txt", "docs/Annual_Report.txt"] and more
        with pytest.raises(Invalid, match="at least 2 characters") as refused:
            search.find(session, " a ", limit=10)
        assert refused.value.field == "q"
