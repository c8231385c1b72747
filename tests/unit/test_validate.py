"""validate_source: every rejection names the problem; good uploads come back usable."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import pytest

from allinone.builder.validate import (
    TooLarge,
    ValidatedSource,
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
    assert check("f.zip", data, "pkg.handle").files


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
], ids=["async", "assign", "import-as", "annassign", "class", "try", "if", "unpack", "star"])
def test_handler_bindings_accepted(source: bytes) -> None:
    check("func.py", source)


def test_zip_dot_slash_prefix_and_dirs_normalised() -> None:
    data = make_zip({"./": b"", "./func.py": b"def run(): return 1\n", "lib/": b""})
    assert set(check("f.zip", data).files) == {"func.py"}


def test_macos_resource_forks_are_ignored() -> None:
    data = make_zip({"func.py": b"def run(): return 1\n", "__MACOSX/._func.py": b"\x00\x05\xff"})
    assert set(check("f.zip", data).files) == {"func.py"}


def test_utf8_bom_is_fine() -> None:
    check("func.py", b"\xef\xbb\xbfdef run(): return 'caf\xc3\xa9'\n")


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


def test_zip_bomb_lying_about_sizes() -> None:
    # A real deflated 4 MiB entry whose local and central headers both claim 10 bytes:
    # the declared total passes, the counted bytes must stop it.
    payload = b"\0" * (4 * MIB)
    data = bytearray(make_zip({"func.py": b"def run(): pass\n", "bomb.bin": payload}))
    real = len(payload).to_bytes(4, "little")
    fake = (10).to_bytes(4, "little")
    count = 0
    start = 0
    while (at := data.find(real, start)) != -1:
        data[at:at + 4] = fake
        count += 1
        start = at + 4
    assert count == 2  # local header and central directory
    # zipfile stops inflating at the declared size, so the lie surfaces as a CRC
    # mismatch; either way the upload is refused without inflating 4 MiB.
    message = rejected("more than its directory declares|is corrupt", "f.zip", bytes(data),
                       max_unzipped=MIB)
    assert "bomb.bin" in message or "f.zip" in message


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
