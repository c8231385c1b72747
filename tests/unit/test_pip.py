"""The build's pip: its failure messages (from real pip 23 output) and its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from allinone.builder.builder import pip_environment, pip_failure_message

NOT_FOUND = """Looking in links: /tmp/links
ERROR: Could not find a version that satisfies the requirement {name} (from versions: none)
ERROR: No matching distribution found for {name}
"""
LOG_SDIST_ONLY = (
    "2026-11-30T09:16:04,456 0 location(s) to search for versions of {name}:\n"
    "2026-11-30T09:16:04,507 Skipping link: No sources permitted for {name}: "
    "file:///tmp/links/{name}-1.0.tar.gz\n"
    "2026-11-30T09:16:04,557 ERROR: No matching distribution found for {name}\n"
)
LOG_OTHER_PLATFORM = (
    "2026-11-30T09:16:04,507 Skipping link: none of the wheel's tags (cp312-cp312-win_amd64) "
    "are compatible (run pip debug --verbose to show compatible tags): "
    "https://files.example/packages/ab/{name}-2.0-cp312-cp312-win_amd64.whl#sha256=00 "
    "(from https://pypi.org/simple/{name}/) (requires-python:>=3.8)\n"
)

CASES = [
    # (id, requirements, pip console output, pip debug log, words, words that must be absent)
    ("sdist only, named with its line",
     b"six\nevilpkg==1.0  # pinned\n", NOT_FOUND.format(name="evilpkg==1.0"),
     LOG_SDIST_ONLY.format(name="evilpkg"),
     ["'evilpkg==1.0' (requirements.txt line 2)", "no wheel", "only a source distribution",
      "A wheel is needed", "no package code runs on the server"], ["Check the package name"]),
    ("sdist only, name spelled differently",
     b"Evil_Pkg\n", NOT_FOUND.format(name="Evil_Pkg"), LOG_SDIST_ONLY.format(name="evil-pkg"),
     ["'Evil_Pkg' (requirements.txt line 1)", "A wheel is needed"], []),
    ("wheels for other platforms only",
     b"winonly\n", NOT_FOUND.format(name="winonly"), LOG_OTHER_PLATFORM.format(name="winonly"),
     ["'winonly' (requirements.txt line 1)", "wheels for other platforms only",
      "cp312-cp312-win_amd64", "A wheel is needed"], []),
    ("a dependency without a wheel",
     b"goodpkg\n",
     "ERROR: Could not find a version that satisfies the requirement evildep (from goodpkg) "
     "(from versions: none)\nERROR: No matching distribution found for evildep\n",
     LOG_SDIST_ONLY.format(name="evildep"),
     ["package 'evildep' (needed by 'goodpkg', requirements.txt line 1)",
      "A wheel is needed"], []),
    ("a dependency without a wheel, no line named",
     b"goodpkg\n", "ERROR: No matching distribution found for evildep\n",
     LOG_SDIST_ONLY.format(name="evildep"),
     ["package 'evildep' (needed by your requirements)", "A wheel is needed"], []),
    ("no such package: no wheel talk",
     b"six\nno-such-pkg-xyz==1.0\n", NOT_FOUND.format(name="no-such-pkg-xyz==1.0"),
     "2026-11-30 Skipping link: No sources permitted for six: file:///x/six-1.0.tar.gz\n",
     ["'no-such-pkg-xyz==1.0' (requirements.txt line 2)", "No matching distribution",
      "Check the package name"], ["wheel"]),
    ("no log at all",
     b"nopkg\n", NOT_FOUND.format(name="nopkg"), "",
     ["'nopkg' (requirements.txt line 1)", "Check the package name"], ["wheel"]),
    ("some other failure",
     b"six\n", "ERROR: Could not install packages due to an OSError: [Errno 28] No space left",
     "", ["installing requirements.txt failed", "No space left"], []),
    ("nothing matches a line",
     b"six\n", "Traceback...\nKeyError: 'x'\n", "",
     ["installing requirements.txt failed", "KeyError"], []),
]


@pytest.mark.parametrize(("requirements", "output", "log", "words", "absent"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_pip_failure_message(requirements: bytes, output: str, log: str, words: list[str],
                             absent: list[str]) -> None:
    message = pip_failure_message(output, requirements, log)
    for word in words:
        assert word in message, message
    for word in absent:
        assert word not in message, message


SERVER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "LANG": "de_DE.ISO-8859-1",
    "ALLINONE_TOKEN": "secret-token",
    "ETCD_PASSWORD": "secret",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "PYTHONPATH": "/evil",
    "LD_PRELOAD": "/evil.so",
    "PIP_INDEX_URL": "https://mirror.example/simple",
    "PIP_FIND_LINKS": "/opt/wheels",
    "PIP_CERT": "/etc/ssl/ca.pem",
    "PIP_NO_BINARY": ":all:",
    "PIP_USER": "1",
    "PIP_TARGET": "/elsewhere",
    "PIP_REQUIREMENT": "/etc/other.txt",
    "https_proxy": "http://proxy:3128",
    "NO_PROXY": "localhost",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca.crt",
    "SSL_CERT_DIR": "/etc/ssl/certs",
    "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca.crt",
}


def test_pip_environment_is_minimal(tmp_path: Path) -> None:
    env = pip_environment(SERVER_ENV, home=tmp_path / "home", cache_dir=tmp_path / "cache")
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "PIP_CACHE_DIR": str(tmp_path / "cache"),
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "PIP_FIND_LINKS": "/opt/wheels",
        "PIP_CERT": "/etc/ssl/ca.pem",
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca.crt",
        "SSL_CERT_DIR": "/etc/ssl/certs",
        "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca.crt",
    }


def test_pip_environment_passes_the_users_pip_config(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    env = pip_environment({"PATH": "/bin"}, home=tmp_path, cache_dir=tmp_path,
                          user_config=conf)
    assert env["PIP_CONFIG_FILE"] == str(conf)
    env = pip_environment({"PATH": "/bin", "PIP_CONFIG_FILE": "/etc/mine.conf"},
                          home=tmp_path, cache_dir=tmp_path, user_config=conf)
    assert env["PIP_CONFIG_FILE"] == "/etc/mine.conf"
    env = pip_environment({"PATH": "/bin", "PIP_CACHE_DIR": "/var/cache/pip"},
                          home=tmp_path, cache_dir=tmp_path)
    assert env["PIP_CACHE_DIR"] == "/var/cache/pip"
