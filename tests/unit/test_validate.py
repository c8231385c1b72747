"""validate_source: every rejection names the problem; good uploads come back usable."""

from __future__ import annotations

import copy
import hashlib
import io
import stat
import zipfile
from pathlib import Path
from typing import IO

import pytest

from allinone.builder.validate import (
    TooLarge,
    ValidatedSource,
    _mib,
    parse_requirements,
    requirement_problem,
    validate_source,
)
from allinone.objects import ValidationError
from allinone.testing import make_zip

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MIB = 1024 * 1024


def check(filename: str, data: bytes, handler: str = "run", *, max_upload: int = 10 * MIB,
          max_unzipped: int = 50 * MIB, **kw: int) -> ValidatedSource:
    return validate_source(filename, data, handler, max_upload=max_upload,
                           max_unzipped=max_unzipped, **kw)



def rejected(match: str, filename: str, data: bytes, handler: str = "run",
             exc: type[Exception] = ValidationError, **kw: int) -> str:
    with pytest.raises(exc, match=match) as info:
        check(filename, data, handler, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------
# acceptance


def test_single_py_becomes_func_py() -> None:
    data = (FIXTURES / "add.py").read_bytes()
    src = check("add.py", data)
    assert src.kind == "py"
    assert src.files == {"func.py": data}
    assert src.sha256 == hashlib.sha256(data).hexdigest()
    assert src.size == len(data)
    assert src.filename == "add.py"
    assert src.requirements is None


def test_client_side_path_is_reduced_to_base_name() -> None:
    src = check("C:\\Users\\me\\add.py", b"def run(): return 1\n")
    assert src.filename == "add.py"


def test_withdeps_zip_with_requirements() -> None:
    src = check("withdeps.zip", (FIXTURES / "withdeps.zip").read_bytes())
    assert src.kind == "zip"
    assert set(src.files) == {"func.py", "helpers.py", "requirements.txt"}
    assert src.requirements is not None and b"humanize" in src.requirements


def test_realistic_zip_with_package_handler() -> None:
    src = check("realistic.zip", (FIXTURES / "realistic.zip").read_bytes(), "app.main.handle")
    assert "app/main.py" in src.files and "app/stopwords.txt" in src.files


def test_fixture_zips_match_their_folders() -> None:
    for name in ("withdeps", "realistic"):
        with zipfile.ZipFile(FIXTURES / f"{name}.zip") as zf:
            for info in zf.infolist():
                assert zf.read(info) == (FIXTURES / name / info.filename).read_bytes(), (
                    f"fixtures/{name}.zip is stale: run python fixtures/make_zips.py")


def test_handler_in_package_init() -> None:
    data = make_zip({"pkg/__init__.py": b"def handle(): return 1\n"})
    assert check("f.zip", data, "pkg.handle").files == {"pkg/__init__.py":
                                                         b"def handle(): return 1\n"}


@pytest.mark.parametrize("source", [
    b"async def run(): return 1\n",
    b"run = lambda: 1\n",
    b"from json import dumps as run\n",
    b"import os\nrun: object = os.getcwd\n",
    b"class run:\n    pass\n",
    b"try:\n    from fastlib import run\nexcept ImportError:\n    def run(): return 1\n",
    b"if True:\n    def run(): return 1\n",
    b"a, (b, run) = 1, (2, 3)\n",
    b"from helpers import *\n",
    b"import run.sub.mod\n",
    b"import os as run\n",
    b"a, *run = 1, 2, 3\n",
    b"for run in [print]:\n    pass\n",
    b"for _ in []:\n    pass\nelse:\n    def run(): return 1\n",
    b"for _ in [1]:\n    def run(): return 1\n",
    b"while False:\n    pass\nelse:\n    def run(): return 1\n",
    b"if False:\n    pass\nelse:\n    def run(): return 1\n",
    b"import io\nwith io.StringIO() as run:\n    pass\n",
    b"import io\nwith io.StringIO():\n    def run(): return 1\n",
    b"match 1:\n    case _:\n        def run(): return 1\n",
], ids=["async", "assign", "import-as", "annassign", "class", "try", "if", "unpack", "star",
        "import-dotted", "import-module-as", "starred", "for-target", "for-else", "for-body",
        "while-else", "if-else", "with-as", "with-body", "match"])
def test_handler_bindings_accepted(source: bytes) -> None:
    # Accepted, and accepted as the file uploaded: nothing rewritten or dropped.
    assert check("func.py", source).files == {"func.py": source}


@pytest.mark.parametrize("source", [
    b"run: object\n",
    b"import runner\n",
    b"import os.run\n",
    b"from x import run as other\n",
    b"def f():\n    run = 1\n",
    b"for x in []:\n    other = 1\n",
], ids=["annotation-only", "other-module", "dotted-binds-first", "renamed", "local", "for"])
def test_handler_bindings_refused(source: bytes) -> None:
    message = rejected("does not define 'run' at top level", "func.py", source)
    assert message.startswith("handler 'run': func.py does not define 'run'")


def test_zip_dot_slash_prefix_and_dirs_normalised() -> None:
    data = make_zip({"./": b"", "./func.py": b"def run(): return 1\n", "lib/": b""})
    assert set(check("f.zip", data).files) == {"func.py"}


def test_macos_resource_forks_are_ignored() -> None:
    data = make_zip({"func.py": b"def run(): return 1\n", "__MACOSX/._func.py": b"\x00\x05\xff"})
    assert set(check("f.zip", data).files) == {"func.py"}


def test_utf8_bom_is_fine() -> None:
    data = b"\xef\xbb\xbfdef run(): return 'caf\xc3\xa9'\n"
    assert check("func.py", data).files == {"func.py": data}  # stored as uploaded


# ---------------------------------------------------------------------------
# the file itself


def test_empty_file() -> None:
    rejected("is empty", "add.py", b"")


def test_missing_file_name() -> None:
    rejected("no file name", "", b"def run(): pass\n")


@pytest.mark.parametrize("name", ["add.txt", "add", "add.tar.gz", "add.pyc"])
def test_wrong_extension(name: str) -> None:
    message = rejected("neither a .py file nor a .zip", name, b"def run(): pass\n")
    assert repr(name) in message


def test_too_large_upload_is_413_kind() -> None:
    message = rejected("limit is", "add.py", b"#" * 2048 + b"\ndef run(): pass\n",
                       exc=TooLarge, max_upload=1024)
    assert "add.py" in message
    assert issubclass(TooLarge, ValidationError)


@pytest.mark.parametrize("handler", ["", "1run", "run()", "a..b", "run-it", "a.b."])
def test_bad_handler_name(handler: str) -> None:
    rejected("is not a Python name", "add.py", b"def run(): pass\n", handler)


def test_dotted_handler_for_single_py() -> None:
    message = rejected("'module.function' is for zips", "add.py", b"def run(): pass\n",
                       "add.run")
    assert "use handler 'run'" in message


# ---------------------------------------------------------------------------
# Python sources


def test_syntax_error_names_file_and_line() -> None:
    message = rejected(r"add\.py line 3: ", "add.py", b"def run(x, y):\n    return x\nx = = 1\n")
    assert "x = = 1" in message


def test_syntax_error_in_zip_module_names_path() -> None:
    data = make_zip({"func.py": b"import helpers\ndef run(): pass\n",
                     "lib/helpers.py": b"def f(:\n"})
    rejected(r"lib/helpers\.py line 1: ", "f.zip", data)


def test_not_utf8() -> None:
    message = rejected("is not UTF-8", "add.py", b"def run():\n    return '\xe9t\xe9'\n")
    assert "line 2" in message and "add.py" in message


def test_null_bytes() -> None:
    rejected("add.py", "add.py", b"def run(): pass\n\x00\n")


def test_handler_not_defined() -> None:
    message = rejected("does not define 'run' at top level", "add.py",
                       b"def main(): pass\ndef helper(): pass\n")
    assert "main, helper" in message or "helper, main" in message
    assert "add.py" in message


def test_handler_nested_is_not_top_level() -> None:
    rejected("does not define 'run' at top level", "add.py",
             b"def outer():\n    def run(): pass\n    return run\n")


def test_handler_only_in_class_body_is_not_top_level() -> None:
    rejected("does not define 'run'", "add.py", b"class C:\n    def run(self): pass\n")


# ---------------------------------------------------------------------------
# zips


def test_not_a_zip() -> None:
    rejected("is not a valid zip archive", "f.zip", b"PK\x03\x04 definitely not a zip")


def test_truncated_zip() -> None:
    data = make_zip({"func.py": b"def run(): pass\n" * 100})
    rejected("not a valid zip|corrupt", "f.zip", data[: len(data) // 2])


@pytest.mark.parametrize("name,problem", [
    ("/etc/func.py", "absolute path"),
    ("\\evil.py", "absolute path"),
    ("C:/func.py", "drive letter"),
    ("c:func.py", "drive letter"),
    ("../func.py", r"contains '\.\.'"),
    ("lib/../../func.py", r"contains '\.\.'"),
    ("lib\\..\\..\\x.py", r"contains '\.\.'"),
])
def test_unsafe_zip_paths(name: str, problem: str) -> None:
    data = make_zip({"func.py": b"def run(): pass\n", name: b"x = 1\n"})
    message = rejected(problem, "f.zip", data)
    assert repr(name) in message


def test_symlink_entry() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("func.py", "def run(): pass\n")
        info = zipfile.ZipInfo("link.py")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    rejected("symbolic link", "f.zip", buf.getvalue())


def test_device_entry() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("func.py", "def run(): pass\n")
        info = zipfile.ZipInfo("fifo")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, "")
    rejected("not a regular file", "f.zip", buf.getvalue())


def test_duplicate_entry() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("func.py", "def run(): pass\n")
        zf.writestr("func.py", "def run(): return 2\n")
    rejected("appears twice", "f.zip", buf.getvalue())


def test_too_many_entries() -> None:
    data = make_zip({"func.py": b"def run(): pass\n", **{f"d/{i}.txt": b"" for i in range(20)}})
    message = rejected("entries", "f.zip", data, max_entries=10)
    assert "21" in message and "10" in message


def test_declared_size_over_limit() -> None:
    data = make_zip({"func.py": b"def run(): pass\n", "big.bin": b"\0" * (2 * MIB)})
    message = rejected("inflates to", "f.zip", data, exc=TooLarge, max_unzipped=MIB)
    assert "limit is 1.0 MiB" in message


def lying_zip(payload: bytes, claimed: int) -> bytes:
    """A zip whose bomb.bin is *payload* deflated, its headers claiming *claimed* bytes."""
    data = bytearray(make_zip({"func.py": b"def run(): pass\n", "bomb.bin": payload}))
    real = len(payload).to_bytes(4, "little")
    fake = claimed.to_bytes(4, "little")
    count = 0
    start = 0
    while (at := data.find(real, start)) != -1:
        data[at:at + 4] = fake
        count += 1
        start = at + 4
    assert count == 2  # local header and central directory
    return bytes(data)


def test_zip_bomb_lying_about_sizes_is_refused_as_corrupt() -> None:
    # A real deflated 4 MiB entry whose headers both claim 10 bytes. The declared total
    # passes; CPython's zipfile stops inflating at the declared size, so the lie shows as
    # a CRC mismatch: refused, naming the entry, without inflating 4 MiB.
    message = rejected("is corrupt", "f.zip", lying_zip(b"\0" * (4 * MIB), 10),
                       max_unzipped=MIB)
    assert message.startswith("zip entry 'bomb.bin' is corrupt (")
    assert message.endswith("): re-create the zip")


def test_zip_bomb_guard_counts_the_inflated_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hand-made bug "the zip-bomb guard disabled": a zip reader that trusts the deflate
    # stream rather than the directory (older or other zip code) would inflate all 4 MiB
    # of a zip declaring 10 bytes; only the counting guard stops it. Model that reader by
    # opening each entry with its true size.
    real_open = zipfile.ZipFile.open

    def open_trusting_the_stream(self: zipfile.ZipFile, name: zipfile.ZipInfo,
                                 *args: object, **kw: object) -> IO[bytes]:
        info = copy.copy(name)
        if info.filename == "bomb.bin":
            info.file_size = 4 * MIB
        return real_open(self, info, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", open_trusting_the_stream)
    message = rejected("more than its directory declares", "f.zip",
                       lying_zip(b"\0" * (4 * MIB), 10), exc=TooLarge, max_unzipped=MIB)
    assert message == ("'f.zip' inflates to more than 1.0 MiB (more than its directory "
                       "declares); the limit is 1.0 MiB")


def test_zip_exactly_at_the_inflated_limit_is_accepted() -> None:
    # Declared and counted totals equal to the limit pass (the limit is inclusive).
    func = b"def run(): pass\n"
    data = make_zip({"func.py": func, "data.bin": b"\0" * (4096 - len(func))})
    assert len(check("f.zip", data, max_unzipped=4096).files) == 2
    message = rejected("inflates to", "f.zip", data, exc=TooLarge, max_unzipped=4095)
    assert "limit is 0.0 MiB" in message


def test_encrypted_entry() -> None:
    data = bytearray(make_zip({"func.py": b"def run(): pass\n"}))
    # Set the "encrypted" general-purpose flag in the local and central headers.
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        data[at + offset] |= 0x1
    rejected("encrypted", "f.zip", bytes(data))


def test_empty_zip() -> None:
    rejected("contains no files", "f.zip", make_zip({}))


def test_missing_handler_module() -> None:
    message = rejected("needs func.py at the root", "f.zip",
                       make_zip({"main.py": b"def run(): pass\n"}))
    assert "main.py" in message


def test_missing_dotted_module() -> None:
    rejected("needs app/main.py", "f.zip", make_zip({"app/other.py": b"def handle(): pass\n"}),
             "app.main.handle")


def test_zipped_folder_instead_of_contents_gets_a_hint() -> None:
    message = rejected("needs func.py", "f.zip",
                       make_zip({"myfunc/func.py": b"def run(): pass\n"}))
    assert "found myfunc/func.py" in message and "contents, not the folder" in message


def test_handler_missing_in_zip_module() -> None:
    data = make_zip({"app/main.py": b"def main(): pass\n"})
    message = rejected("app/main.py does not define 'handle'", "f.zip", data, "app.main.handle")
    assert "main" in message


# ---------------------------------------------------------------------------
# what each message tells the user: the thing named, and the fix (how it ends)


def _zip_with(info: zipfile.ZipInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("func.py", "def run(): pass\n")
        zf.writestr(info, data)
    return buf.getvalue()


def _symlink() -> bytes:
    info = zipfile.ZipInfo("link.py")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _zip_with(info, b"/etc/passwd")


def _fifo() -> bytes:
    info = zipfile.ZipInfo("fifo")
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return _zip_with(info)


def _method_99() -> bytes:
    data = bytearray(make_zip({"func.py": b"def run(): pass\n"}, method=zipfile.ZIP_STORED))
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(sig)
        data[at + offset] = 99  # compression method 99: not one zipfile knows
    return bytes(data)


MESSAGES = [
    # id, filename, data, handler, kwargs, start of the message, end of the message
    ("no name", "", b"x", "run", {}, "the upload has no file name",
     "the upload has no file name: send a .py file or a .zip"),
    ("empty", "add.py", b"", "run", {}, "the uploaded file 'add.py' is empty",
     "the uploaded file 'add.py' is empty"),
    ("too large", "add.py", b"#" * 2048, "run", {"max_upload": 1024},
     "the uploaded file 'add.py' is 0.0 MiB; the limit is 0.0 MiB: remove data files",
     "(list packages in requirements.txt instead of vendoring them)"),
    ("handler name", "add.py", b"def run(): pass\n", "run-it", {},
     "handler 'run-it' is not a Python name: use 'run' (function run in the ",
     "uploaded .py file) or 'module.function' (in a zip)"),
    ("dotted handler for .py", "add.py", b"def run(): pass\n", "pkg.mod.run", {},
     "handler 'pkg.mod.run' names a module, but a single .py file is stored as func.py: "
     "use handler 'run', or upload a ",
     "zip whose files include that module ('module.function' is for zips)"),
    ("kind", "add.txt", b"def run(): pass\n", "run", {},
     "'add.txt' is neither a .py file nor a .zip: upload one Python file (handler 'run' ",
     "in it) or a zip with func.py or your modules at its root"),
    ("not a zip", "f.zip", b"PK\x03\x04 not a zip", "run", {},
     "'f.zip' is not a valid zip archive (", "): re-create it, e.g. `zip -r func.zip func.py`"),
    ("entries", "f.zip", make_zip({"func.py": b"def run(): pass\n", "a": b"", "b": b""}), "run",
     {"max_entries": 2}, "'f.zip' has 3 entries; at most 2 are allowed: ",
     "leave out data files, caches and virtualenvs"),
    ("absolute", "f.zip", make_zip({"/func.py": b"def run(): pass\n"}), "run", {},
     "zip entry '/func.py' has an absolute path: zip the function's files with ",
     "relative paths (e.g. `cd myfunc && zip -r ../myfunc.zip .`)"),
    ("drive", "f.zip", make_zip({"C:/func.py": b"def run(): pass\n"}), "run", {},
     "zip entry 'C:/func.py' starts with a drive letter: zip the function's files with ",
     "relative paths"),
    ("dotdot", "f.zip", make_zip({"../func.py": b"def run(): pass\n"}), "run", {},
     "zip entry '../func.py' contains '..' and would be written outside the function ",
     "directory: remove it from the zip"),
    ("symlink", "f.zip", _symlink(), "run", {},
     "zip entry 'link.py' is a symbolic link; links are not allowed: ",
     "zip the file it points to instead (`zip -r` without -y)"),
    ("device", "f.zip", _fifo(), "run", {},
     "zip entry 'fifo' is not a regular file (a device, pipe or ",
     "socket): remove it from the zip"),
    ("declared", "f.zip", make_zip({"func.py": b"def run(): pass\n", "b": b"\0" * 3 * MIB}),
     "run", {"max_unzipped": 2 * MIB}, "'f.zip' inflates to 3.0 MiB; the limit is 2.0 MiB: ",
     "leave out data files, or list packages in requirements.txt"),
    ("method", "f.zip", _method_99(), "run", {},
     "zip entry 'func.py' uses an unsupported compression method (",
     "): re-create the zip with the standard deflate method"),
    ("no files", "f.zip", make_zip({"lib/": b""}), "run", {},
     "'f.zip' contains no files", "put func.py (or your modules) in it"),
    ("not utf-8", "add.py", b"# one\n# two\nx = '\xe9'\n# four\n# five\n", "run", {},
     "add.py is not UTF-8 text (byte 0xe9 on line 3): save ", "it with UTF-8 encoding"),
    ("not utf-8 after blank first line", "add.py", b"\nx = '\xe9'\n", "run", {},
     "add.py is not UTF-8 text (byte 0xe9 on line 2)", "it with UTF-8 encoding"),
    ("null bytes", "add.py", b"def run(): pass\n\x00\n", "run", {},
     "add.py: source code string cannot contain null bytes", "cannot contain null bytes"),
    ("syntax", "add.py", b"def run(:\n", "run", {}, "add.py line 1: ", ": def run(:"),
    ("no module", "f.zip", make_zip({**{f"m{i:02}.py": b"" for i in range(12)}}), "run", {},
     "handler 'run' needs func.py at the root of the zip, but it is not there; Python files "
     "in the zip: m00.py, m01.py, m02.py, m03.py, m04.py, m05.py, m06.py, m07.py, m08.py, "
     "m09.py; ",
     "name the module 'module.function' in spec.handler if it is not func.py"),
    ("no dotted module", "f.zip", make_zip({"app/other.py": b""}), "app.main.handle", {},
     "handler 'app.main.handle' needs app/main.py at the root of the zip, but it is not "
     "there; Python files in the zip: app/other.py", "Python files in the zip: app/other.py"),
    ("zipped folder", "f.zip", make_zip({"myfunc/func.py": b"def run(): pass\n"}), "run", {},
     "handler 'run' needs func.py at the root of the zip, but it is not there; found "
     "myfunc/func.py: zip the folder's contents, not the folder ",
     "(`cd myfunc && zip -r ../myfunc.zip .`)"),
    ("handler missing, no functions", "add.py", b"x = 1\n", "run", {},
     "handler 'run': add.py does not define 'run' at top level: ",
     "add `def run(...):` to add.py or set spec.handler to the function to call"),
    ("handler missing, functions listed", "add.py", b"def b(): pass\ndef a(): pass\n", "run",
     {}, "handler 'run': add.py does not define 'run' at top level (top-level functions in "
     "it: a, b): ", "or set spec.handler to the function to call"),
]


@pytest.mark.parametrize(("filename", "data", "handler", "kw", "start", "end"),
                         [pytest.param(*m[1:], id=m[0]) for m in MESSAGES])
def test_message_names_the_problem_and_the_fix(filename: str, data: bytes, handler: str,
                                               kw: dict[str, int], start: str,
                                               end: str) -> None:
    with pytest.raises(ValidationError) as info:
        check(filename, data, handler, **kw)
    message = str(info.value)
    assert message.startswith(start), message
    assert message.endswith(end), message


# ---------------------------------------------------------------------------
# edges of the zip reader


def test_mib_has_one_decimal_of_mebibytes() -> None:
    assert _mib(64 * MIB) == "64.0 MiB"
    assert _mib(MIB + MIB // 2) == "1.5 MiB"


def test_upload_exactly_at_the_limit_is_accepted() -> None:
    data = b"def run(): pass\n"
    assert check("add.py", data, max_upload=len(data)).size == len(data)


def test_entries_exactly_at_the_limit_are_accepted() -> None:
    data = make_zip({"func.py": b"def run(): pass\n", "a.txt": b"a"})
    assert set(check("f.zip", data, max_entries=2).files) == {"func.py", "a.txt"}


def test_declared_sizes_are_summed_over_entries() -> None:
    data = make_zip({"func.py": b"def run(): pass\n", "a": b"\0" * 600, "b": b"\0" * 600})
    rejected("inflates to", "f.zip", data, exc=TooLarge, max_unzipped=1024)


def test_zip_source_fields() -> None:
    data = make_zip({"func.py": b"def run(): pass\n"})
    src = check("dir/f.zip", data)
    assert (src.kind, src.sha256, src.size, src.filename) == (
        "zip", hashlib.sha256(data).hexdigest(), len(data), "f.zip")


def test_large_entry_is_read_whole() -> None:
    # More than one 64 KiB read: the pieces are joined as they were.
    source = b"def run(): pass\n" + b"# padding\n" * 20_000
    assert check("f.zip", make_zip({"func.py": source})).files["func.py"] == source


@pytest.mark.parametrize("name", ["py", "zip"])
def test_a_name_without_a_dot_has_no_kind(name: str) -> None:
    rejected("neither a .py file nor a .zip", name, make_zip({"func.py": b"def run(): 1\n"}))


def test_only_the_last_dot_makes_the_kind() -> None:
    assert check("my.func.py", b"def run(): pass\n").kind == "py"


def test_skipped_entries_do_not_end_the_walk() -> None:
    # Each skipped entry comes first: the walk must go on to func.py after it.
    func = b"def run(): pass\n"
    for first in ("__MACOSX/._func.py", "__MACOSX", "."):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(first, b"\x00\x05")
            zf.writestr("func.py", func)
        assert check("f.zip", buf.getvalue()).files == {"func.py": func}, first


def test_directory_entry_without_mode_bits_is_a_directory() -> None:
    info = zipfile.ZipInfo("lib/")
    info.external_attr = 0  # no Unix mode at all, as some zip tools write
    assert set(check("f.zip", _zip_with(info)).files) == {"func.py"}


def test_data_files_before_a_broken_module_do_not_hide_it() -> None:
    data = make_zip({"data.txt": b"x", "func.py": b"def run(:\n"})
    rejected(r"func\.py line 1: ", "f.zip", data)


def test_hint_for_default_module_only() -> None:
    message = rejected("needs app/main.py", "f.zip", make_zip({"x.py": b""}), "app.main.handle")
    assert "spec.handler if it is not func.py" not in message


# ---------------------------------------------------------------------------
# requirements.txt


REFUSED_REQUIREMENTS = [
    # (line, words the message must contain) -- every form pip could take code from
    # other than a package index's wheels, and every option line.
    ("-r /etc/passwd", ["pip option '-r'"]),
    ("--requirement=other.txt", ["pip option '--requirement'"]),
    ("-c constraints.txt", ["pip option '-c'"]),
    ("--constraint c.txt", ["pip option '--constraint'"]),
    ("-i http://127.0.0.1:9/simple", ["pip option '-i'", "PIP_INDEX_URL"]),
    ("--index-url http://127.0.0.1:9/simple", ["pip option '--index-url'"]),
    ("--extra-index-url=http://127.0.0.1:9/simple", ["pip option '--extra-index-url'"]),
    ("-f ./wheels", ["pip option '-f'"]),
    ("--find-links http://127.0.0.1:9/", ["pip option '--find-links'"]),
    ("--trusted-host 127.0.0.1", ["pip option '--trusted-host'"]),
    ("--no-index", ["pip option '--no-index'"]),
    ("--pre", ["pip option '--pre'"]),
    ("--no-binary :all:", ["pip option '--no-binary'"]),
    ("--only-binary=:none:", ["pip option '--only-binary'"]),
    ("-e .", ["editable install '-e'"]),
    ("--editable git+https://127.0.0.1:9/x.git#egg=x", ["editable install '--editable'"]),
    ("evilpkg @ http://127.0.0.1:9/evilpkg-1.0.tar.gz", ["direct reference", "evilpkg @"]),
    ("pkg @ file:///etc/x", ["direct reference"]),
    ("pkg@https://127.0.0.1:9/pkg-1.0-py3-none-any.whl", ["direct reference"]),
    ("pkg[extra] @ https://127.0.0.1:9/p.zip ; python_version > '3'", ["direct reference"]),
    ("http://127.0.0.1:9/evilpkg-1.0.tar.gz", ["URLs are not supported"]),
    ("https://127.0.0.1:9/six-1.0-py3-none-any.whl", ["URLs are not supported"]),
    ("file:///tmp/evilpkg-1.0.tar.gz", ["URLs are not supported"]),
    ("git+https://127.0.0.1:9/x/y.git", ["VCS links"]),
    ("git+ssh://git@127.0.0.1/x/y.git#egg=y", ["VCS links"]),
    ("hg+https://127.0.0.1:9/y", ["VCS links"]),
    ("svn+svn://127.0.0.1/y", ["VCS links"]),
    ("bzr+lp:y", ["VCS links"]),
    ("./localpkg", ["local paths"]),
    ("../up", ["local paths"]),
    ("/abs/path.whl", ["local paths"]),
    ("~/pkg", ["local paths"]),
    ("pkgs/evil", ["local paths"]),
    ("C:\\pkgs\\evil", ["local paths"]),
    ("evilpkg-1.0.tar.gz", ["archive file"]),
    ("evil.whl", ["archive file"]),
    ("Evil.ZIP", ["archive file"]),
    ("six==${VERSION}", ["'${...}'", "environment"]),
    ("six ==", ["not a requirement specifier"]),
    ("six; os_name = 'posix'", ["not a requirement specifier"]),
    ("six --hash=sha256:00", ["not a requirement specifier"]),
    ("six#egg=six", ["not a requirement specifier"]),
    ("six \\", ["line continuation"]),
]


@pytest.mark.parametrize(("line", "words"), REFUSED_REQUIREMENTS,
                         ids=[c[0] for c in REFUSED_REQUIREMENTS])
def test_requirement_forms_refused_naming_the_line(line: str, words: list[str]) -> None:
    data = make_zip({"func.py": b"def run(): pass\n",
                     "requirements.txt": f"# deps\n\nsix  # pinned below\n{line}\nsix\n"
                     .encode()})
    message = rejected("requirements.txt line 4: ", "f.zip", data)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(("line", "expected"), [
    ("six", "six"),
    ("six==1.17.0", "six==1.17.0"),
    ("A_b.c[x]", "A_b.c[x]"),
    ("humanize>=4,<5; python_version >= '3.8'", 'humanize<5,>=4; python_version >= "3.8"'),
    ("requests[socks,security] ~= 2.31", "requests[security,socks]~=2.31"),
    ("six===1.0", "six===1.0"),
    ("numpy ; platform_machine == 'x86_64'", 'numpy; platform_machine == "x86_64"'),
])
def test_plain_specifiers_accepted_as_packaging_reads_them(line: str, expected: str) -> None:
    result = requirement_problem(line)
    assert not isinstance(result, str), result
    assert str(result) == expected


def test_parse_requirements_skips_comments_and_blanks() -> None:
    text = b"# top\n\n  \nsix==1.17.0  # pinned\n\t# indented comment\nhumanize\n"
    assert [str(r) for r in parse_requirements(text)] == ["six==1.17.0", "humanize"]


def test_long_line_is_shortened_in_the_message() -> None:
    line = "x" * 300 + " @ http://127.0.0.1:9/x.whl"
    with pytest.raises(ValidationError) as info:
        parse_requirements(line.encode())
    assert "requirements.txt line 1" in str(info.value)
    assert len(str(info.value)) < 700


def test_requirements_not_utf8() -> None:
    data = make_zip({"func.py": b"def run(): pass\n", "requirements.txt": b"caf\xe9\n"})
    rejected("requirements.txt is not UTF-8", "f.zip", data)


def test_requirements_plain_lines_accepted() -> None:
    text = b"# comment\n\nsix==1.17.0  # pinned\nhumanize>=4; python_version >= '3.8'\nA_b.c[x]\n"
    data = make_zip({"func.py": b"def run(): pass\n", "requirements.txt": text})
    assert check("f.zip", data).requirements == text


def test_source_files_reads_data_files_from_the_zip_and_counts_each_file_once() -> None:
    """Code files are kept in memory, data files stay in the zip and inflate on demand;
    both kinds are listed, sized and opened the same way, and a path kept in memory
    and also in the archive counts once."""
    data = make_zip({"func.py": b"def run():\n    return 1\n", "helpers.py": b"X = 1\n",
                     "table.csv": b"a,b\n1,2\n"})
    files = check("f.zip", data).files
    assert len(files) == 3 and sorted(files) == ["func.py", "helpers.py", "table.csv"]
    assert files.size("func.py") == len(b"def run():\n    return 1\n")
    assert files.size("table.csv") == len(b"a,b\n1,2\n")
    with files.open("func.py") as f:
        assert f.read() == b"def run():\n    return 1\n"
    with files.open("table.csv") as f:
        assert f.read() == b"a,b\n1,2\n"
    assert files["table.csv"] == b"a,b\n1,2\n"
    single = check("func.py", b"def run():\n    return 1\n").files  # no archive behind it
    assert single.size("func.py") == len(b"def run():\n    return 1\n")
