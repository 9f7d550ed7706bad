"""A folder of a job's tree as a streamed ZIP (engine/archive.py), against PostgreSQL
and S3: the files under the folder and nothing else, byte for byte, with their modes;
a content that is not what was backed up ends the stream."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.models import File
from backup_operator.engine.archive import zip_of_folder
from backup_operator.storage import ObjectStore

from .conftest import back_up, write


def test_a_folder_streams_as_a_zip_of_exactly_its_files(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    large = os.urandom(200_000)
    write(source, "docs/a.txt", b"alpha")
    write(source, "docs/sub/b.bin", large)
    write(source, "docs2/not-in-docs.txt", b"elsewhere")
    (source / "docs/run.sh").write_bytes(b"#!/bin/sh\n")
    (source / "docs/run.sh").chmod(0o755)
    job_id, _ = back_up(sessions, store, bucket_id, source, pack_threshold=65_536)

    pieces = list(zip_of_folder(sessions, store, job_id, "docs/"))
    assert len(pieces) > 3  # written as it goes, not as one buffer at the end
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert sorted(archive.namelist()) == ["a.txt", "run.sh", "sub/b.bin"]
        assert archive.read("a.txt") == b"alpha" and archive.read("sub/b.bin") == large
        assert (archive.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755
        assert archive.testzip() is None

    with sessions() as session:  # the catalog now says another content was backed up
        session.execute(update(File).where(File.path == "docs/a.txt").values(sha256="0" * 64))
        session.commit()
    with pytest.raises(ValueError, match=r"docs/a\.txt: its stored content is not what"):
        list(zip_of_folder(sessions, store, job_id, "docs"))
