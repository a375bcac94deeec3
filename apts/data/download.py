"""md5-verified downloads from a list of mirrors, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from apts.data import registry

DOWNLOAD_TIMEOUT = 30.0  # seconds per connection attempt / read
_USER_AGENT = "apts-data/0.1 (+python urllib)"


def mirror_list(key: str, mirrors: Sequence[str] | None) -> list[str]:
    """Base URLs to try for dataset ``key``, each ending in ``/``, without repeats:
    ``mirrors``, then ``$APTS_DATA_MIRROR`` (comma-separated), then the registry's."""
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    env = [m.strip() for m in os.environ.get("APTS_DATA_MIRROR", "").split(",") if m.strip()]
    out: list[str] = []
    for base in [*(mirrors or []), *env, *registry.MIRRORS[key]]:
        base = base if base.endswith("/") else base + "/"
        if base not in out:
            out.append(base)
    return out


def fetch(fname: str, dest_dir: Path, urls: list[str], md5: str | None) -> str | None:
    """Fetch ``fname`` from the first mirror that serves it with the right md5.

    Writes to a temp file in ``dest_dir`` and renames it into place only once verified,
    so an interrupted or corrupt download leaves nothing behind. Returns None on
    success, else a one-line summary of why each mirror failed.
    """
    from tqdm.auto import tqdm

    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {dest_dir}: {exc.strerror or exc}"
    errors = []
    for base in urls:
        url = base + fname
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=dest_dir)
        except OSError as exc:
            return f"cannot write in {dest_dir}: {exc.strerror or exc}"
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5()
            req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with (
                open(fd, "wb") as out,  # owns (and closes) fd from here on
                urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp,
            ):
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"download {fname}",
                    disable=None,  # only on a terminal
                    leave=False,
                ) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            got = digest.hexdigest()
            if md5 is not None and got != md5:
                errors.append(f"{url}: md5 {got} != expected {md5}")
                continue
            os.replace(tmp, dest_dir / fname)
            return None
        except Exception as exc:  # network errors come in many types; report, try next
            errors.append(f"{url}: {' '.join(str(exc).split()) or type(exc).__name__}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return "; ".join(errors) or "no mirror configured"
