"""A data set's archive as data.source (fercore.data.archives): the Kaggle release's .tar.gz or a .zip of the same
tree reads to the faces of the unpacked folder; it is unpacked once into the converted-data cache; members that would
land outside it are refused, and a damaged archive is a DataError naming the file."""
from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest

from fercore.data import describe_source, load
from fercore.errors import DataError


def same_faces(a, b) -> bool:
    return all((np.sort(a.split(s)[0].reshape(len(a.split(s)[0]), -1), axis=0) ==
                np.sort(b.split(s)[0].reshape(len(b.split(s)[0]), -1), axis=0)).all()
               and sorted(a.split(s)[1]) == sorted(b.split(s)[1]) for s in ("train", "val", "test"))


@pytest.mark.real_data
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_an_archive_of_the_real_subset_reads_as_its_folder_once_unpacked(real_faces, tmp_path, kind):
    tree = real_faces.tree  # <root>/fer2013/{train,validation,test}/<class>/*.jpg, as the Kaggle release
    archive = tmp_path / f"fer2013.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for path in sorted(tree.rglob("*.jpg")):
                z.write(path, path.relative_to(tree.parent))
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(tree, arcname="fer2013")
    assert describe_source(str(archive)) == "archive"
    cache = tmp_path / "cache"
    from_archive = load(str(archive), cache_dir=cache)
    folder = load(str(tree), use_cache=False)
    assert from_archive.counts() == folder.counts() and same_faces(from_archive, folder)
    assert from_archive.fingerprint == folder.fingerprint and from_archive.source == str(archive)
    unpacked = list((cache / "archives").iterdir())
    assert len(unpacked) == 1 and not any(p.name.startswith(".tmp") for p in (cache / "archives").iterdir())
    assert load(str(archive), cache_dir=cache).fingerprint == folder.fingerprint  # the converted set, no unpacking
    assert list((cache / "archives").iterdir()) == unpacked


def test_an_archive_member_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        data = b"x"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="evil.tar.gz: a member would land outside"):
        load(str(archive), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as z:
        z.writestr("../escaped.txt", "x")
    with pytest.raises(DataError, match="would land outside"):
        load(str(evil_zip), cache_dir=tmp_path / "cache")


def test_a_damaged_archive_is_a_data_error_naming_it(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="broken.zip: not a readable archive"):
        load(str(archive), cache_dir=tmp_path / "cache")
