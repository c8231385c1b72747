"""Validate an uploaded function source before any image work.

Pure: bytes in, a :class:`ValidatedSource` or a :class:`~allinone.objects.ValidationError`
out. Nothing here touches the disk, Docker or the network, so the apiserver can reject a
bad upload with a 400 (or 413, :class:`TooLarge`) in the request that made it, and the
builder only ever sees sources that can be built.

What is checked, in order, so the first message a user sees is the most basic problem:

1. the file: not empty, a ``.py`` or ``.zip`` name, at most ``max_upload`` bytes;
2. for a zip: a readable archive, at most ``MAX_ENTRIES`` entries, every entry a plain
   file or directory with a relative path that stays inside the function directory (no
   absolute paths, drive letters, ``..``, symlinks, devices), no encrypted entries, and
   at most ``max_unzipped`` bytes once inflated. The declared sizes are checked first
   (cheap) and the bytes actually inflated are counted again while reading, because a
   zip bomb's central directory may lie about them (CPython's zipfile also stops at
   the declared size and then fails the CRC check: a lie is "corrupt" either way);
3. every ``.py`` file is UTF-8 and parses as Python (the image runs CPython 3.11, the
   same minor version as this process, so ``ast.parse`` here agrees with the import
   there);
4. the handler: ``run`` means ``run`` in ``func.py`` (the single uploaded file is stored
   under that name), ``pkg.mod.fn`` means ``fn`` in ``pkg/mod.py`` (or
   ``pkg/mod/__init__.py``) of a zip; its module exists and binds the name at top level;
5. ``requirements.txt`` at the zip root, when present, is UTF-8 and lists plain
   requirement specifiers only (a name, extras, version specifiers, an environment
   marker), each parsed by ``packaging``'s PEP 508 parser. Refused, with the line number
   and what to do instead: pip options (``-r``, ``-i``, ``--index-url``, ``-f``, ``-e``
   ...), direct references (``name @ URL``), URLs, VCS links, local paths and archive
   names, and ``${VAR}`` (pip expands it from its environment). pip runs on the host, so
   every way of pointing it at code other than a package index's wheels is closed here.

Invariant: a returned ``ValidatedSource.files`` maps normalised relative POSIX paths
(no ``.``/``..`` parts, no leading ``/``) to their bytes; the builder writes them under
``/function`` without further checks.

Memory: a zip is validated by streaming each entry in 64 KiB steps. Only the files
that must be read whole are kept (``.py`` sources, to parse them, and
``requirements.txt``), each at most ``MAX_CODE_FILE`` bytes; every other entry is only
counted (and CRC-checked) as it streams by, and ``files`` reads it again from the
archive when asked (:meth:`SourceFiles.open` streams it). So validating an upload that
inflates to 199 MiB holds the upload plus a few chunks, not the 199 MiB.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Literal

from packaging.requirements import InvalidRequirement, Requirement

from allinone.objects import HANDLER_RE, ValidationError

# A zip with more entries than this is almost surely not a function (or is hostile: a
# million empty entries cost memory and time in the central directory walk).
MAX_ENTRIES = 10_000
# Read zip entries in 64 KiB steps so the inflated-bytes count stops a bomb early.
_CHUNK = 64 * 1024
# A Python module (or requirements.txt) is read whole to parse it: past this size it is
# data, not code, and parsing it would cost many times its size in memory.
MAX_CODE_FILE = 8 * 1024 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# pip's own comment rule (req_file.py COMMENT_RE): '#' at the start or after blanks.
_COMMENT_RE = re.compile(r"(^|\s+)#.*$")
# pip treats a "name" ending like this as a local archive file, not a project name.
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz",
                     ".tar.xz", ".txz", ".tar.lz", ".tlz", ".tar.lzma")
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
# Single-file uploads are stored under this name; handler "run" looks here.
DEFAULT_MODULE = "func"


class TooLarge(ValidationError):
    """The upload, or what it inflates to, is over a size limit (HTTP 413)."""


class SourceFiles(Mapping[str, bytes]):
    """The function's files: path -> bytes, with data files read from the zip on demand."""

    def __init__(self, kept: dict[str, bytes], archive: bytes | None = None,
                 members: dict[str, zipfile.ZipInfo] | None = None) -> None:
        self._kept = kept
        self._archive = archive
        self._members = members or {}

    def __getitem__(self, path: str) -> bytes:
        if path in self._kept:
            return self._kept[path]
        with self.open(path) as f:
            return f.read()

    def __iter__(self) -> Iterator[str]:
        yield from self._kept
        yield from (p for p in self._members if p not in self._kept)

    def __len__(self) -> int:
        return len(self._kept) + sum(1 for p in self._members if p not in self._kept)

    def size(self, path: str) -> int:
        if path in self._kept:
            return len(self._kept[path])
        return self._members[path].file_size

    def open(self, path: str) -> IO[bytes]:
        """A stream of the file's bytes (the zip entry inflating as it is read)."""
        if path in self._kept:
            return io.BytesIO(self._kept[path])
        assert self._archive is not None
        archive = zipfile.ZipFile(io.BytesIO(self._archive))
        return archive.open(self._members[path])


@dataclass(frozen=True)
class ValidatedSource:
    """An upload that passed validation, ready for the builder."""

    kind: Literal["py", "zip"]
    sha256: str  # of the uploaded bytes, as stored in the SourceStore
    size: int  # of the uploaded bytes
    filename: str  # the upload's base name, e.g. "add.py"
    files: SourceFiles  # relative path -> content, what goes into /function
    requirements: bytes | None  # requirements.txt at the zip root, if any


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def validate_source(
    filename: str,
    data: bytes,
    handler: str,
    *,
    max_upload: int,
    max_unzipped: int,
    max_entries: int = MAX_ENTRIES,
) -> ValidatedSource:
    """Check an upload; return what the builder needs or raise ValidationError/TooLarge."""
    # Browsers and some clients send a full client-side path; only the base name matters.
    base = re.split(r"[\\/]", filename or "")[-1]
    if not base:
        raise ValidationError("the upload has no file name: send a .py file or a .zip")
    if not data:
        raise ValidationError(f"the uploaded file {base!r} is empty")
    if len(data) > max_upload:
        raise TooLarge(
            f"the uploaded file {base!r} is {_mib(len(data))}; the limit is "
            f"{_mib(max_upload)}: remove data files or large dependencies from it "
            "(list packages in requirements.txt instead of vendoring them)"
        )
    if not isinstance(handler, str) or not HANDLER_RE.fullmatch(handler):
        raise ValidationError(
            f"handler {handler!r} is not a Python name: use 'run' (function run in the "
            "uploaded .py file) or 'module.function' (in a zip)"
        )
    sha = hashlib.sha256(data).hexdigest()
    suffix = base.lower().rpartition(".")[2] if "." in base else ""
    if suffix == "py":
        if "." in handler:
            raise ValidationError(
                f"handler {handler!r} names a module, but a single .py file is stored as "
                f"{DEFAULT_MODULE}.py: use handler {handler.rpartition('.')[2]!r}, or upload a "
                "zip whose files include that module ('module.function' is for zips)"
            )
        files = SourceFiles({f"{DEFAULT_MODULE}.py": data})
        # Messages name the file as the user knows it, not as it is stored.
        trees = _check_python_files(files, {f"{DEFAULT_MODULE}.py": base})
        _check_handler(files, trees, handler, {f"{DEFAULT_MODULE}.py": base})
        return ValidatedSource("py", sha, len(data), base, files, None)
    if suffix == "zip":
        files = _read_zip(base, data, max_unzipped=max_unzipped, max_entries=max_entries)
        trees = _check_python_files(files, {})
        _check_handler(files, trees, handler, {})
        requirements = files.get("requirements.txt")
        if requirements is not None:
            parse_requirements(requirements)
        return ValidatedSource("zip", sha, len(data), base, files, requirements)
    raise ValidationError(
        f"{base!r} is neither a .py file nor a .zip: upload one Python file (handler 'run' "
        "in it) or a zip with func.py or your modules at its root"
    )


# ---------------------------------------------------------------------------
# zip


def _safe_path(name: str) -> str:
    """The normalised relative path of a zip entry, or ValidationError if it escapes."""
    # Zips made on Windows may use backslashes; treat them as separators so "..\\x"
    # cannot slip past the ".." check.
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        raise ValidationError(
            f"zip entry {name!r} has an absolute path: zip the function's files with "
            "relative paths (e.g. `cd myfunc && zip -r ../myfunc.zip .`)"
        )
    if _DRIVE_RE.match(unified):
        raise ValidationError(
            f"zip entry {name!r} starts with a drive letter: zip the function's files with "
            "relative paths"
        )
    # PurePosixPath already drops "" and "." parts; the filter states it, so no mutant.
    parts = [p for p in PurePosixPath(unified).parts if p not in ("", ".")]  # pragma: no mutate
    if ".." in parts:
        raise ValidationError(
            f"zip entry {name!r} contains '..' and would be written outside the function "
            "directory: remove it from the zip"
        )
    return "/".join(parts)


def _kept(path: str) -> bool:
    """Whether validation needs the whole file (to parse it)."""
    return path.endswith(".py") or path == "requirements.txt"


def _read_zip(base: str, data: bytes, *, max_unzipped: int, max_entries: int) -> SourceFiles:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ValidationError(f"{base!r} is not a valid zip archive ({exc}): re-create it, "
                              "e.g. `zip -r func.zip func.py`") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise ValidationError(
                f"{base!r} has {len(infos)} entries; at most {max_entries} are allowed: "
                "leave out data files, caches and virtualenvs"
            )
        selected: list[tuple[str, zipfile.ZipInfo]] = []
        seen: set[str] = set()
        declared = 0
        for info in infos:
            path = _safe_path(info.filename)
            # macOS Finder adds resource forks ("__MACOSX/._func.py"): binary files with
            # a .py name that would fail the syntax check; they are never meant to ship.
            if path == "__MACOSX" or path.startswith("__MACOSX/"):
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValidationError(
                    f"zip entry {info.filename!r} is a symbolic link; links are not allowed: "
                    "zip the file it points to instead (`zip -r` without -y)"
                )
            if info.is_dir() or (mode and stat.S_ISDIR(mode)):
                continue
            if mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise ValidationError(
                    f"zip entry {info.filename!r} is not a regular file (a device, pipe or "
                    "socket): remove it from the zip"
                )
            if info.flag_bits & 0x1:
                raise ValidationError(
                    f"zip entry {info.filename!r} is encrypted; upload a zip without a password"
                )
            if not path:
                continue
            if path in seen:
                raise ValidationError(f"zip entry {path!r} appears twice; keep one copy")
            seen.add(path)
            declared += info.file_size
            selected.append((path, info))
        if declared > max_unzipped:
            raise TooLarge(
                f"{base!r} inflates to {_mib(declared)}; the limit is {_mib(max_unzipped)}: "
                "leave out data files, or list packages in requirements.txt"
            )
        kept: dict[str, bytes] = {}
        inflated = 0
        for path, info in selected:
            keep = _kept(path)
            if keep and info.file_size > MAX_CODE_FILE:
                raise TooLarge(
                    f"zip entry {info.filename!r} is {_mib(info.file_size)}; a Python module "
                    f"(or requirements.txt) may be at most {_mib(MAX_CODE_FILE)}: move data "
                    "out of code into a data file")
            chunks: list[bytes] = []
            size = 0
            try:
                with archive.open(info) as entry:
                    # The chunk size bounds memory per read, not the result.
                    while chunk := entry.read(_CHUNK):  # pragma: no mutate
                        inflated += len(chunk)
                        if inflated > max_unzipped:
                            # The declared sizes said otherwise: a lying (bomb) archive.
                            raise TooLarge(
                                f"{base!r} inflates to more than {_mib(max_unzipped)} (more "
                                "than its directory declares); the limit is "
                                f"{_mib(max_unzipped)}"
                            )
                        size += len(chunk)
                        if keep:
                            if size > MAX_CODE_FILE:
                                raise TooLarge(
                                    f"zip entry {info.filename!r} inflates to more than "
                                    f"{_mib(MAX_CODE_FILE)}, more than it declares")
                            chunks.append(chunk)
            except NotImplementedError as exc:
                raise ValidationError(
                    f"zip entry {info.filename!r} uses an unsupported compression method "
                    f"({exc}): re-create the zip with the standard deflate method"
                ) from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ValidationError(
                    f"zip entry {info.filename!r} is corrupt ({exc}): re-create the zip"
                ) from None
            if keep:
                kept[path] = b"".join(chunks)
    if not selected:
        raise ValidationError(f"{base!r} contains no files: put func.py (or your modules) in it")
    return SourceFiles(kept, data, {path: info for path, info in selected})


# ---------------------------------------------------------------------------
# Python sources and the handler


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # pragma: no mutate (codec names ignore case)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}): save "
            "it with UTF-8 encoding"
        ) from None


def _check_python_files(files: Mapping[str, bytes],
                        labels: dict[str, str]) -> dict[str, ast.Module]:
    """Parse every .py file; ``labels`` renames files in messages (func.py -> add.py)."""
    trees: dict[str, ast.Module] = {}
    for path in files:
        if not path.endswith(".py"):
            continue  # data files are never read here (they may be large)
        label = labels.get(path, path)
        text = _decode(label, files[path])
        try:
            # The filename only labels the SyntaxError; the message below uses label.
            trees[path] = ast.parse(text, filename=label)  # pragma: no mutate
        except SyntaxError as exc:
            where = f"{label} line {exc.lineno}" if exc.lineno else label
            snippet = (exc.text or "").strip()
            detail = f": {snippet}" if snippet else ""
            raise ValidationError(f"{where}: {exc.msg}{detail}") from None
        # Older CPythons raise ValueError for null bytes (3.11.7: SyntaxError, no line).
        except ValueError as exc:
            raise ValidationError(f"{label}: {exc}") from None  # pragma: no mutate
    return trees


def _module_candidates(module: str) -> list[str]:
    rel = module.replace(".", "/")
    return [f"{rel}.py", f"{rel}/__init__.py"]


def _check_handler(files: Mapping[str, bytes], trees: dict[str, ast.Module], handler: str,
                   labels: dict[str, str]) -> None:
    module, _, func = handler.rpartition(".")
    module = module or DEFAULT_MODULE
    candidates = _module_candidates(module)
    path = next((c for c in candidates if c in files), None)
    if path is None:
        raise ValidationError(_missing_module_message(files, handler, module, candidates[0]))
    tree = trees[path]
    names, star = _top_level_bindings(tree.body)
    if func in names or star:
        return
    defined = sorted(
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    )
    hint = f" (top-level functions in it: {', '.join(defined)})" if defined else ""
    label = labels.get(path, path)
    raise ValidationError(
        f"handler {handler!r}: {label} does not define {func!r} at top level{hint}: "
        f"add `def {func}(...):` to {label} or set spec.handler to the function to call"
    )


def _missing_module_message(files: Mapping[str, bytes], handler: str, module: str,
                            wanted: str) -> str:
    msg = f"handler {handler!r} needs {wanted} at the root of the zip, but it is not there"
    # The usual mistake: zipping the folder rather than its contents.
    nested = sorted(p for p in files if p.endswith("/" + wanted))
    if nested:
        msg += (f"; found {nested[0]}: zip the folder's contents, not the folder "
                "(`cd myfunc && zip -r ../myfunc.zip .`)")
    else:
        modules = sorted(p for p in files if p.endswith(".py"))[:10]
        if modules:
            msg += f"; Python files in the zip: {', '.join(modules)}"
        if module == DEFAULT_MODULE:
            msg += "; name the module 'module.function' in spec.handler if it is not func.py"
    return msg


def _top_level_bindings(body: list[ast.stmt]) -> tuple[set[str], bool]:
    """Names a module body binds at import time, and whether it has ``import *``.

    Compound statements (if/try/with/for/while/match) are entered, since
    ``try: from fast import run`` / ``except ImportError: def run(...)`` binds ``run`` at
    top level; function and class bodies are not.
    """
    names: set[str] = set()
    star = False  # pragma: no mutate (None would be as false)

    def targets(node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Tuple | ast.List):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def walk(stmts: list[ast.stmt]) -> None:
        nonlocal star
        for node in stmts:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                if not isinstance(node, ast.AnnAssign) or node.value is not None:
                    targets(node.target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    names.add(alias.asname or alias.name.partition(".")[0])
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        star = True
                    else:
                        names.add(alias.asname or alias.name)
            elif isinstance(node, ast.If | ast.While):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.For | ast.AsyncFor):
                targets(node.target)
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
                walk(node.body)
            elif isinstance(node, ast.Try | ast.TryStar):
                walk(node.body)
                for h in node.handlers:
                    walk(h.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, ast.Match):
                for case in node.cases:
                    walk(case.body)

    walk(body)
    return names, star


# ---------------------------------------------------------------------------
# requirements.txt


_INSTEAD_PUBLISH = ("list the package by name and version from the package index instead "
                    "(e.g. 'humanize==4.9.0'), or put its modules into the zip next to your "
                    "code")


def requirement_problem(line: str) -> str | Requirement:
    """Why one requirements.txt line (comment removed) is refused, or its Requirement.

    Pure, for the table tests. The order matters only for the message: the most
    specific description of what the line is comes first.
    """
    if line.startswith("-"):
        option = line.split()[0].split("=", 1)[0]
        if option in ("-e", "--editable"):
            return (f"editable install {option!r} is not supported (it installs from a "
                    f"local path or a VCS checkout): {_INSTEAD_PUBLISH}")
        return (f"pip option {option!r} is not supported: list package requirements only, "
                "one per line (e.g. 'humanize==4.9.0'); the package index is set by the "
                "server's administrator (PIP_INDEX_URL), not by a function")
    if "${" in line:
        return ("'${...}' is not supported: pip would expand it from its environment; "
                "write the value out")
    if line.lower().startswith(_VCS_PREFIXES):
        return f"VCS links are not supported: {_INSTEAD_PUBLISH}"
    if "://" in line.split(";", 1)[0] and "@" not in line.split("://", 1)[0]:
        return f"URLs are not supported: {_INSTEAD_PUBLISH}"
    if (line.startswith((".", "/", "~")) or "\\" in line or _DRIVE_RE.match(line)
            or ("/" in line.split(";", 1)[0] and "@" not in line)):
        return f"local paths are not supported: {_INSTEAD_PUBLISH}"
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0]
        return (f"not a requirement specifier ({detail}): write one requirement per line as "
                "NAME[extras] VERSION-SPECIFIERS ; MARKER, e.g. "
                "\"humanize>=4,<5; python_version >= '3.8'\"")
    if req.url is not None:
        return (f"direct reference '{req.name} @ {req.url}' is not supported: "
                f"{_INSTEAD_PUBLISH}")
    if req.name.lower().endswith(_ARCHIVE_SUFFIXES):
        return (f"{req.name!r} names an archive file, which pip would install from a local "
                f"path: {_INSTEAD_PUBLISH}")
    return req


def requirement_lines(data: bytes) -> list[tuple[int, str, Requirement]]:
    """``(line number, line, Requirement)`` of each requirement in a requirements.txt,
    or ValidationError naming the first bad line."""
    text = _decode("requirements.txt", data)
    out: list[tuple[int, str, Requirement]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT_RE.sub("", raw).strip()
        if not line:
            continue
        if raw.rstrip().endswith("\\"):
            # pip joins a line ending in a backslash with the next one.
            raise ValidationError(
                f"requirements.txt line {number}: a line continuation ('\\' at the end) is "
                "not supported; put each requirement on one line")
        result = requirement_problem(line)
        if isinstance(result, str):
            shown = line if len(line) <= 120 else line[:117] + "..."
            raise ValidationError(f"requirements.txt line {number}: {shown!r}: {result}")
        out.append((number, line, result))
    return out


def parse_requirements(data: bytes) -> list[Requirement]:
    """The requirements of a requirements.txt, or ValidationError naming the bad line.

    The builder hands pip ``str(req)`` of these, one per line, never the uploaded bytes:
    pip then reads exactly what was checked here, whatever its own decoding, comment
    and continuation rules would have made of the original file.
    """
    return [req for _, _, req in requirement_lines(data)]
