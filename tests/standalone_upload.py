"""A transfer journal of its own for an image set, as release 1's ``upload`` command kept one
(``<data_dir>/transfers/<project>.json``): what the transfer tests drive :class:`Transfer` with,
and how a test makes an unfinished upload of that release. (``upload`` is a job now.)"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from openscan_pi.cloud.archive import Source, open_source
from openscan_pi.cloud.journal import Journal, default_project_name
from openscan_pi.config import Config
from openscan_pi.errors import InputError
from openscan_pi.names import check_project

log = logging.getLogger(__name__)


def prepare_upload(cfg: Config, path: Path, project: str | None = None, *,
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[Journal, Source | None]:
    """The journal and source for uploading ``path``.

    Without ``project``, an unfinished journal of the same source is continued (so that running
    the same command again never creates a second project); otherwise a new one is begun under
    the default name ``<set name>-<epoch ms>.zip``. With ``project``, that project's journal is
    continued when it belongs to the same source. The source is ``None`` when the set was uploaded
    completely already and has changed since (nothing more needs to be read from it).
    """
    path = path.expanduser().resolve()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    data_dir = cfg.data_dir
    if project:
        name = check_project(project)  # as given, or refused: never changed behind the user's back
        journal = Journal.find(data_dir, name)
        if journal and journal.data.get("source") != str(path):
            raise InputError(f"project {name} was begun with {journal.data.get('source')}: "
                             "choose another --project")
        if journal and journal.closed:
            raise InputError(f"project {name} is finished ({journal.phase}): choose another "
                             "--project to upload again")
    else:
        journal = Journal.find_open_for_source(data_dir, path)
        name = journal.project if journal else default_project_name(path)

    # CRCs known from an earlier run are trusted (same size and mtime); the others are computed
    # while the parts are sent, and kept in the journal as each part is confirmed.
    cache: dict[str, dict] = dict(journal.data.get("crc_cache") or {}) if journal else {}
    source: Source | None = open_source(path, crc_cache=cache, progress=progress, lazy=True)
    assert source is not None
    if journal is None:
        journal = Journal.create(data_dir, name, source=str(path), digest=source.digest,
                                 size=source.size, photos=source.photos,
                                 part_size=cfg.cloud.max_part_bytes, crc_cache={})
    elif journal.data.get("digest") != source.digest:
        if not journal.reached("uploaded"):
            raise InputError(f"{path} changed since project {name} began uploading: restore it, "
                             "or upload it as a new project with --project NEW")
        log.warning("%s changed since project %s was uploaded; going on with the uploaded set",
                    path, name)
        source = None
    return journal, source
